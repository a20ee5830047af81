"""Arithmetic a tiny policy cannot do in its head, by level.

  1  a*b,    a, b in 10..99                  "37*86="        → "3182"
  2  a*b,    a in 100..999, b in 10..99      "437*86="       → "37582"
  3  a*b,    a, b in 100..999                "437*861="      → "376257"
  4  a*b+c,  a, b in 100..999, c in 0..999   "437*861+52="   → "376309"

A policy without a tool has to carry digits across the whole product; with the `python` tool it
only has to copy the expression into a call and the result into its answer.
"""

from __future__ import annotations

import numpy as np

LEVELS = (1, 2, 3, 4)


def draw(level: int, rng: np.random.Generator) -> tuple[str, int]:
    """(expression, value) of one problem of `level`."""
    if level == 1:
        a, b = rng.integers(10, 100, size=2)
    elif level == 2:
        a, b = rng.integers(100, 1000), rng.integers(10, 100)
    elif level in (3, 4):
        a, b = rng.integers(100, 1000, size=2)
    else:
        raise ValueError(f"tool_math levels are {LEVELS}, got {level}")
    a, b = int(a), int(b)
    if level == 4:
        c = int(rng.integers(0, 1000))
        return f"{a}*{b}+{c}", a * b + c
    return f"{a}*{b}", a * b
