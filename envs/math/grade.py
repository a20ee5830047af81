"""Grading free-form chain-of-thought answers to math word problems (GSM8K-like).

What is read, in order of precedence (the first kind present decides):

1. `\\boxed{...}` / `\\fbox{...}` (nested braces handled): the last box is the answer.
2. A GSM8K `#### x` line: the last one.
3. A closing "the answer is x" / "answer: x" / "final answer: x": the last occurrence, which must start
   within the last `TAIL_CHARS` characters; its value runs to the end of the sentence (or line).

What is accepted as a value: one number and nothing else. Integers (optionally with well-formed
thousands commas, `1,234`), decimals, `a/b`, `\\frac{a}{b}` (`\\dfrac`, `\\tfrac`), a single leading
sign, leading zeros, with ASCII digits only. Wrappers are peeled: `$...$`, `\\(...\\)`, `\\[...\\]`,
`\\boxed{}`, `\\text{}`/`\\mathrm{}` (their content is kept), `\\,` `\\!`, a leading `$` currency sign,
a leading `x =` (one letter, then `=`: "x = 12" reads as 12). Values compare exactly as `Fraction`s,
so a decimal truth is exact (0.333 != 1/3) and 0.50 == 0.5 == 1/2.

Percent: a trailing `%` is dropped on both sides and the number is NOT divided by 100, so `25%`
matches a truth of `25` (or `25%`) and never a truth of `0.25`.

Units: one trailing alphabetic word after a single number (`12 apples`, `12\\text{ cm}`, `3/4 cup`)
is dropped, unless that word is a connective or hedge (`or`, `and`, `maybe`, ...). Two or more words
make the value unreadable.

A truth that is not a number is compared as text (wrappers peeled, whitespace collapsed, case folded).

Never paid:
- no final answer; an empty box; any unclosed `\\boxed{` (even if a `####` line appears elsewhere);
- a hedge: several answers of the deciding kind that do not all have the same value
  (`\\boxed{12}\\boxed{13}`, a stuffed list of `####` lines, closing "answer is" phrases in the tail
  that disagree), and alternatives inside one answer (`12 or 13`, `12, 13`, `12,13` are unreadable).
  Markers of a lower kind are not read at all (`\\boxed{12}` with `#### 13` reads 12);
- an expression (`3*4`, `3 \\times 4`, `12+0`, `--12`): nothing is evaluated, beyond reading one
  number or one fraction, so a copy of the prompt is unreadable rather than computed;
- malformed numbers (`12.0.0`, `1/0`, `\\frac{1}{0}`, `1e1`), non-ASCII digits (`١٢`), and answers
  longer than `MAX_ANSWER_CHARS`.
"""

from __future__ import annotations

import re
from fractions import Fraction

from envs.math.answer import MAX_ANSWER_CHARS

TAIL_CHARS = 200  # a closing "the answer is" must start this close to the end of the completion

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASH_LINE = re.compile(r"(?<!#)####(?!#)[ \t]*([^\n]*)")
_PHRASE = re.compile(r"\banswer(?:\s+is\b\s*:?|\s*:)[\s*]*([^\n]*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|[!?;]")

# ASCII digits only: Python's `\d` (and `Fraction`) would read `١٢` as 12.
_INT = r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)"  # a comma is only read as a thousands separator
_DECIMAL = re.compile(rf"([+-]?)\s*({_INT}(?:\.[0-9]+)?|\.[0-9]+)")
_SLASH = re.compile(r"([+-]?)\s*([0-9]+)\s*/\s*([0-9]+)")
_LATEX_FRAC = re.compile(r"([+-]?)\s*\\frac\s*\{\s*([0-9]+)\s*\}\s*\{\s*([0-9]+)\s*\}")

_TEXT_MACRO = re.compile(r"\\(?:text|textrm|textbf|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_VARIABLE = re.compile(r"[A-Za-z]\s*=\s*")
_UNIT = re.compile(r"(.*?\S)\s+([A-Za-z]+)")
# Trailing words that would turn "12 or" / "12 maybe" into a value: never a unit.
_NOT_UNITS = frozenset(
    "or and nor not no either neither maybe perhaps possibly probably approximately approx roughly "
    "about around nearly almost plus minus times over divided to than less more".split()
)


def parse_ground_truth(ground_truth: str) -> str:
    """The answer part of a truth: the text after GSM8K's last `####` (to its end of line), else the whole, stripped."""
    if "####" in ground_truth:
        return ground_truth.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
    return ground_truth.strip()


def final_answer(completion: str) -> str | None:
    """The text of the completion's final answer, or None when there is none, it is empty, or it is ambiguous.

    Ambiguous: several answers of the deciding kind with different values (a hedge). Alternatives
    inside one answer (`12 or 13`) are returned as they are: `grade_answer` finds them unreadable.
    """
    boxes = _boxed_contents(completion)
    if boxes is None:  # an unclosed box: the safe reading is "no answer"
        return None
    # Only the kind of marker that decides is checked for a hedge: with a box present, `####` lines
    # are never read (they may be markdown headings), so disagreeing with the box gains nothing.
    hashes = [] if boxes else [m.group(1).strip() for m in _HASH_LINE.finditer(completion)]
    if boxes or hashes:
        # Several different boxes (or `####` lines) are a hedge, even though only the last would be read.
        candidates = boxes or hashes
        answer = candidates[-1]
    else:
        tail_start = len(completion.rstrip()) - TAIL_CHARS
        candidates = [_phrase_value(m.group(1)) for m in _PHRASE.finditer(completion) if m.start() >= tail_start]
        if not candidates:
            return None
        answer = candidates[-1]
    if len({_read(c) for c in set(candidates)}) != 1 or not answer:
        return None
    return answer


def grade_answer(completion: str, ground_truth: str) -> bool:
    """Whether the completion's final answer equals the truth (exactly, as a number when the truth is one)."""
    answer = final_answer(completion)
    expected = _read(parse_ground_truth(ground_truth))
    if answer is None or expected is None:
        return False
    got = _read(answer)
    # A numeric truth is only matched by a number, a textual truth only by the same text.
    return type(got) is type(expected) and got == expected


# ------------------------------------------------------------------------------------ helpers


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` matching the `{` at `open_at` (escaped braces skipped), or None when unclosed."""
    depth, i = 0, open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _boxed_contents(text: str) -> list[str] | None:
    """Contents of the top-level boxes, in order; None if any box is unclosed. Linear: nested boxes are skipped."""
    contents: list[str] = []
    pos = 0
    while (m := _BOX_OPEN.search(text, pos)) is not None:
        close = _closing_brace(text, m.end() - 1)
        if close is None:
            return None
        contents.append(text[m.end() : close].strip())
        pos = close + 1
    return contents


def _phrase_value(rest: str) -> str:
    """The value after "the answer is": up to the end of the sentence, markdown emphasis stripped."""
    end = _SENTENCE_END.search(rest)
    return (rest[: end.start()] if end else rest).strip().strip("*").strip()


def _peel(text: str) -> str:
    """Remove wrappers around the whole text (`$..$`, `\\(..\\)`, `\\[..\\]`, `\\boxed{..}`), a bounded number of times."""
    for _ in range(4):
        text = text.strip()
        if len(text) >= 2 and text[0] == "$" and text[-1] == "$":
            text = text[1:-1]
        elif text[:2] in ("\\(", "\\[") and text[-2:] == {"\\(": "\\)", "\\[": "\\]"}[text[:2]]:
            text = text[2:-2]
        elif (m := _BOX_OPEN.match(text)) and _closing_brace(text, m.end() - 1) == len(text) - 1:
            text = text[m.end() : -1]
        else:
            break
    return text.strip()


def _clean(text: str) -> str | None:
    """The answer with LaTeX and typography normalised away, or None when empty or too long."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    text = _peel(text)
    text = _TEXT_MACRO.sub(r" \1 ", text)  # `12\text{ cm}` -> `12  cm `: the unit rule then applies
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\\[,!]", "", text).replace("{,}", ",")  # thousands separators: `1\,234`, `1{,}234`
    text = re.sub(r"\\[;: ]|~", " ", text)
    text = text.replace("\\%", "%").replace("\\$", "$")
    text = _peel(text).removesuffix(".").strip()  # a full stop ending the sentence: `#### 12.`
    text = text.removeprefix("$").strip()  # currency sign (a `$...$` pair was peeled above)
    text = text.removesuffix("%").strip()  # percent: dropped, not divided by 100 (see module docstring)
    return text or None


def _number(text: str) -> Fraction | None:
    """One number or one fraction, exactly; None for anything else (nothing is evaluated)."""
    if m := _DECIMAL.fullmatch(text):
        sign, digits = m.groups()
        value = Fraction(digits.replace(",", ""))
    elif m := (_SLASH.fullmatch(text) or _LATEX_FRAC.fullmatch(text)):
        sign, num, den = m.groups()
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
    else:
        return None
    return -value if sign == "-" else value


def _read(text: str) -> Fraction | str | None:
    """The value of an answer: a `Fraction` when it is one number (perhaps with a unit), else normalised text."""
    cleaned = _clean(text)
    if cleaned is None:
        return None
    body = cleaned[m.end() :] if (m := _VARIABLE.match(cleaned)) else cleaned  # "x = 12" reads as 12
    if (value := _number(body)) is not None:
        return value
    unit = _UNIT.fullmatch(body)
    if unit and unit.group(2).lower() not in _NOT_UNITS and (value := _number(unit.group(1))) is not None:
        return value
    return " ".join(cleaned.split()).casefold()
