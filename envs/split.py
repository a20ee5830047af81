"""The held-out split: a problem is held out iff a stable hash of its key falls in a fixed bucket range.

blake2b, not hash(): Python salts str hashes per process, and the split must be the same in
every process and every run, so that training never samples an evaluation problem.
"""

from __future__ import annotations

import hashlib

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
