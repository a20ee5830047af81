"""Procedural math problems with exact answers, by difficulty level.

  1  a±b, a, b in 0..9                 "7-9="          → "-2"
  2  a±b, a, b in 0..99                "42+17="        → "59"
  3  a±b, a, b in 0..999               "123-456="      → "-333"
  4  a*b, a in 0..99, b in 0..9        "37*6="         → "222"
  5  ax+b=c with integer x             "3x+5=20;x="    → "5"
  6  p/q ± r/s, q, s in 2..9           "1/2+1/3="      → "5/6" (lowest terms)
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

LEVELS = (1, 2, 3, 4, 5, 6)


def format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def make_problem(level: int, rng: np.random.Generator) -> tuple[str, Fraction]:
    """One problem of `level`: (prompt, exact answer)."""
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    if level in (1, 2, 3):
        top = 10**level - 1
        a, b = r(0, top), r(0, top)
        if rng.random() < 0.5:
            return f"{a}+{b}=", Fraction(a + b)
        return f"{a}-{b}=", Fraction(a - b)
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
