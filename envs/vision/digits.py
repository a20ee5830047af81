"""scikit-learn's bundled 8x8 handwritten digits (1797 images, read from a file in the package).

The images themselves are split: a digit image whose index hashes into the held-out range is
only ever drawn for held-out tasks, so held-out numbers are written with glyphs training never
saw, not just unseen combinations of seen glyphs.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from envs.split import HeldoutSplit


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target  # [1797, 8, 8] in 0..16, [1797]


def glyph(index: int) -> np.ndarray:
    return _digits()[0][index]


@lru_cache(maxsize=8)
def pools(fraction: float) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """(train, held-out): for each digit value, the indices of its images on that side."""
    images, target = _digits()
    split = HeldoutSplit(fraction)
    held = np.array([split.contains(f"sklearn-digit/{i}") for i in range(len(target))])
    train = {d: np.flatnonzero((target == d) & ~held) for d in range(10)}
    heldout = {d: np.flatnonzero((target == d) & held) for d in range(10)}
    return train, heldout
