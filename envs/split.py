"""The held-out split: a problem is held out iff a stable hash of its key falls in a fixed bucket range.

blake2b, not hash(): Python salts str hashes per process, and the split must be the same in
every process and every run, so that training never samples an evaluation problem.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Generic, TypeVar

import numpy as np

T = TypeVar("T")

BUCKETS = 10_000


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HeldoutSplit:
    def __init__(self, fraction: float):
        if not 0 < fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {fraction}")
        self.threshold = int(fraction * BUCKETS)

    def contains(self, key: str) -> bool:
        return stable_hash(key) % BUCKETS < self.threshold


class HeldoutStream(Generic[T]):
    """The first `n` items of a fixed-seed stream of held-out tasks, the same on every call.

    `draw(rng, i)` draws the i-th item from the shared generator. Asking for more items than
    cached redraws the stream from its seed, so the first `n` never depend on earlier calls.
    """

    def __init__(self, draw: Callable[[np.random.Generator, int], T], seed: int):
        self.draw = draw
        self.seed = seed
        self._items: list[T] = []

    def first(self, n: int) -> list[T]:
        if len(self._items) < n:
            rng = np.random.default_rng(self.seed)
            self._items = [self.draw(rng, i) for i in range(n)]
        return list(self._items[:n])
