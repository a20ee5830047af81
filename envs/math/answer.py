"""Reading and comparing answers.

The fast path reads integers, decimals and fractions with a regular expression and compares
exact `Fraction`s: it handles thousands of completions per second. Only the first line of a
completion counts, `x=` may precede an equation's answer, and whitespace, a leading `+` and
leading zeros are ignored. Besides plain numbers, a single LaTeX fraction is read
(`\\frac{5}{6}`, optionally in `$...$` or `\\boxed{...}`). Nothing is ever evaluated: an
answer that is an expression (a copy of the prompt, say) is unreadable, not computed.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_ANSWER_CHARS = 64
_NUMBER = re.compile(r"^\s*(?:[a-z]\s*=\s*)?([+-]?)\s*(\d+(?:\.\d+)?)\s*(?:/\s*([+-]?\d+))?\s*$", re.ASCII)  # ASCII digits only: int("١٢") is 12
_WRAPPER = re.compile(r"^(?:\$(.*)\$|\\boxed\{(.*)\})$")
_LATEX_FRACTION = re.compile(r"^([+-]?)\s*\\[dt]?frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}$", re.ASCII)


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
    """A single LaTeX number: `\\frac{5}{6}`, `-\\dfrac{1}{2}`, optionally in `$...$` or `\\boxed{...}`.

    Nothing that contains arithmetic is evaluated: a policy that copies the prompt (`12+345`)
    or writes `(12)(3)` must not be paid for the value an algebra system computes from it.
    """
    text = line.strip()
    for _ in range(3):  # peel wrappers, a bounded number of times
        unwrapped = _WRAPPER.match(text)
        if not unwrapped:
            break
        text = next(g for g in unwrapped.groups() if g is not None).strip()
    m = _NUMBER.match(text)
    if m:
        return parse_answer(text)
    m = _LATEX_FRACTION.match(text)
    if not m:
        return None
    sign, num, den = m.groups()
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if sign == "-" else value


def answers_equal(text: str, expected: Fraction) -> tuple[bool, bool]:
    """(passed, parsed) for a completion against the exact answer."""
    value = parse_answer(text)
    if value is None:
        return False, False
    return value == expected, True


def aligned_digit_credit(text: str, target: str) -> float:
    """Share of `target`'s characters that the first line of `text` has at the same positions.

    Partial credit for the fixed-width layout, where position i means the same digit in every
    answer. The share is over the longer of the two, so extra characters cost credit (a right
    answer with a digit appended is not worth a right answer), and a line of another length is not
    shifted into alignment: every digit must be in its place. 1.0 only for the target itself.
    """
    line = text.split("\n", 1)[0].strip()
    if not target:
        return 0.0
    return sum(a == b for a, b in zip(line, target)) / max(len(line), len(target))
