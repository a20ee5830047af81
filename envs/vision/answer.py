"""Reading a vision answer: one short token of a known vocabulary, compared exactly.

Only the first line counts, after removing a trailing self-verdict (`<verify>...</verify>`, which
the self_verification reward reads). Case, surrounding spaces and one final period are ignored;
numbers compare by value (`07` = `7`). Anything else is unreadable: words outside the task's
vocabulary, several candidates (`red or blue`, `3 4`), signs, decimals, or text longer than
`MAX_ANSWER_CHARS`. Hedging therefore never parses, and never passes.
"""

from __future__ import annotations

import re

from envs.base import strip_self_verdict
from envs.vision.render import COLORS, SHAPES

MAX_ANSWER_CHARS = 16
_INTEGER = re.compile(r"^\d{1,6}$")
VOCABULARY = {
    "count": "integer",
    "digits": "integer",
    "chart": "integer",
    "identify": frozenset(COLORS) | frozenset(SHAPES),
    "spatial": frozenset({"yes", "no"}),
}


def normalise(text: str) -> str | None:
    """The answer token of a completion, or None when there is no single readable token."""
    text = strip_self_verdict(text)
    line = text.split("\n", 1)[0].strip().lower()
    if line.endswith("."):
        line = line[:-1].rstrip()
    if not line or len(line) > MAX_ANSWER_CHARS or any(c.isspace() for c in line):
        return None
    return line


def read_answer(text: str, kind: str) -> str | None:
    """The canonical answer (an integer without leading zeros, or a vocabulary word), or None."""
    token = normalise(text)
    if token is None:
        return None
    vocab = VOCABULARY[kind]
    if vocab == "integer":
        return str(int(token)) if _INTEGER.match(token) else None
    return token if token in vocab else None


def check(text: str, kind: str, expected: str) -> tuple[bool, bool]:
    """(passed, parsed)."""
    got = read_answer(text, kind)
    return got is not None and got == expected, got is not None
