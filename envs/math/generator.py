"""Procedural math problems with exact answers, by difficulty level.

  1  a±b, a, b in 0..9                 "7-9="          → "-2"
  2  a±b, a, b in 0..99                "42+17="        → "59"
  3  a±b, a, b in 0..999               "123-456="      → "-333"
  4  a*b, a in 0..99, b in 0..9        "37*6="         → "222"
  5  ax+b=c with integer x             "3x+5=20;x="    → "5"
  6  p/q ± r/s, q, s in 2..9           "1/2+1/3="      → "5/6" (lowest terms)

Fixed width (levels 1-3): operands are zero-padded to one width W (the env uses its highest
level's) and the oracle writes the answer signed and padded to W+1 digits, "042+017=" → "+0059",
"007-009=" → "-0002". The values and the verifier are the same (leading zeros and `+` are
ignored when reading an answer), only the layout changes: every digit sits at a fixed offset from
the digits it depends on, which a small transformer finds in hundreds of steps instead of
thousands (measured on a 4-layer, 128-wide Llama: 2-digit greedy accuracy 0.97 after 2000 SFT
steps padded, 0.10-0.14 unpadded; with a width per level instead of one width the padded layout
stays on the unpadded plateau).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

LEVELS = (1, 2, 3, 4, 5, 6)


def format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def format_fixed_width(value: Fraction, width: int) -> str:
    """An answer to operands of `width` digits, signed and zero-padded to `width + 1`: 59 → "+0059" at width 3."""
    n = int(value)
    return f"{'-' if n < 0 else '+'}{abs(n):0{width + 1}d}"


FIXED_WIDTH_LEVELS = (1, 2, 3)


def make_problem(level: int, rng: np.random.Generator, width: int | None = None) -> tuple[str, Fraction]:
    """One problem of `level`: (prompt, exact answer). `width`: levels 1-3 only, zero-pad operands to it."""
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    if level in (1, 2, 3):
        top = 10**level - 1
        a, b = r(0, top), r(0, top)
        op = "+" if rng.random() < 0.5 else "-"
        if width is not None:
            if width < level:
                raise ValueError(f"width {width} is narrower than level {level}'s operands")
            a_s, b_s = f"{a:0{width}d}", f"{b:0{width}d}"
        else:
            a_s, b_s = str(a), str(b)
        return f"{a_s}{op}{b_s}=", Fraction(a + b if op == "+" else a - b)
    if level == 4:
        a, b = r(0, 99), r(0, 9)
        return f"{a}*{b}=", Fraction(a * b)
    if level == 5:
        a, x, b = r(2, 9), r(-9, 9), r(-20, 20)
        c = a * x + b
        sign = "+" if b >= 0 else "-"
        return f"{a}x{sign}{abs(b)}={c};x=", Fraction(x)
    if level == 6:
        p, q, s = r(1, 8), r(2, 9), r(2, 9)
        u = r(1, s - 1)
        op = "+" if rng.random() < 0.5 else "-"
        value = Fraction(p, q) + Fraction(u, s) if op == "+" else Fraction(p, q) - Fraction(u, s)
        return f"{p}/{q}{op}{u}/{s}=", value
    raise ValueError(f"unknown math level {level}; levels are {LEVELS}")
