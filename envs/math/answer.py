"""Reading and comparing answers.

The fast path reads integers, decimals and fractions with a regular expression and compares
exact `Fraction`s: it handles thousands of completions per second. Only the first line of a
completion counts, `x=` may precede an equation's answer, and whitespace, a leading `+` and
leading zeros are ignored. Anything else goes to `math_verify` with a length cap and no
evaluation of exponent towers, so model output cannot hang or exhaust the verifier.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_ANSWER_CHARS = 64
_NUMBER = re.compile(r"^\s*(?:[a-z]\s*=\s*)?([+-]?)\s*(\d+(?:\.\d+)?)\s*(?:/\s*([+-]?\d+))?\s*$")
_SAFE_FALLBACK = re.compile(r"^[0-9a-z+\-*/().\\{} ^]+$")


def parse_answer(text: str) -> Fraction | None:
    """The exact value of the answer in `text`, or None when it is not a readable number."""
    line = text.split("\n", 1)[0]
    if len(line) > MAX_ANSWER_CHARS:
        return None
    m = _NUMBER.match(line)
    if m:
        sign, num, den = m.groups()
        value = Fraction(num)
        if den is not None:
            if int(den) == 0:
                return None
            value /= Fraction(int(den))
        return -value if sign == "-" else value
    return _fallback(line.strip())


def _fallback(line: str) -> Fraction | None:
    # math_verify understands LaTeX fractions and simple expressions (\frac{5}{6}); exponents are
    # refused up front because sympy would try to evaluate 9**9**9.
    if not line or "**" in line or "^" in line or not _SAFE_FALLBACK.match(line):
        return None
    try:
        from math_verify import parse

        parsed = parse(f"${line}$", parsing_timeout=1)
    except Exception:
        return None
    for item in parsed:
        try:
            if getattr(item, "is_Rational", False):
                return Fraction(int(item.p), int(item.q))
        except Exception:
            continue
    return None


def answers_equal(text: str, expected: Fraction) -> tuple[bool, bool]:
    """(passed, parsed) for a completion against the exact answer."""
    value = parse_answer(text)
    if value is None:
        return False, False
    return value == expected, True
