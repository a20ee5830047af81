"""Input checks shared by the reward helpers.

Counts (tokens, steps) come from episodes and configs; a NaN or a negative count is a bug
upstream, and silently folding it into a reward would hide it, so these checks raise.
"""

from __future__ import annotations

import math
import numbers


def finite_count(x: object, what: str) -> float:
    """`x` as a float if it is a finite real number >= 0, else ValueError naming `what`."""
    # bool is an int subclass; True as a length is a bug, not 1
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{what} must be a finite number >= 0, got {x!r} ({type(x).__name__})")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number >= 0, got {x!r}")
    if v < 0:
        raise ValueError(f"{what} must be >= 0, got {x!r}")
    return v
