"""Procedural Python function tasks with reference solutions and unit tests, by difficulty.

  1  one-line arithmetic on an int          add_7(x) -> x + 7
  2  a loop or comprehension over a list    count_above(xs, t) -> how many items exceed t
  3  strings and accumulation               running_max(xs), count_vowels(s), ...

Each task: the prompt is the function's signature and docstring; the oracle is its body; the
tests are `assert` lines comparing the candidate's outputs to the reference's on random inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Spec:
    name: str
    params: str
    doc: str
    body: str
    reference: Callable[..., Any]
    inputs: Callable[[np.random.Generator], tuple]


def _ints(rng, n=None, lo=-20, hi=20):
    n = int(rng.integers(0, 8)) if n is None else n
    return [int(v) for v in rng.integers(lo, hi + 1, size=n)]


def _word(rng):
    letters = "abcdeioustxyz"
    return "".join(letters[int(i)] for i in rng.integers(0, len(letters), size=int(rng.integers(0, 9))))


def _level1(rng) -> Spec:
    k = int(rng.integers(2, 10))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return Spec(f"add_{k}", "x", f"Return x plus {k}.", f"    return x + {k}\n", lambda x: x + k, lambda r: (int(r.integers(-99, 100)),))
    if kind == 1:
        return Spec(f"times_{k}", "x", f"Return x times {k}.", f"    return x * {k}\n", lambda x: x * k, lambda r: (int(r.integers(-99, 100)),))
    if kind == 2:
        return Spec(
            f"is_multiple_of_{k}", "x", f"Return True if x is a multiple of {k}.", f"    return x % {k} == 0\n",
            lambda x: x % k == 0, lambda r: (int(r.integers(-50, 51)),),
        )
    return Spec(
        "larger", "a, b", "Return the larger of a and b.", "    return a if a > b else b\n",
        lambda a, b: max(a, b), lambda r: (int(r.integers(-50, 51)), int(r.integers(-50, 51))),
    )


def _level2(rng) -> Spec:
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return Spec(
            "count_above", "xs, t", "Return how many items of xs are greater than t.",
            "    return sum(1 for x in xs if x > t)\n", lambda xs, t: sum(1 for x in xs if x > t),
            lambda r: (_ints(r), int(r.integers(-10, 11))),
        )
    if kind == 1:
        return Spec(
            "evens", "xs", "Return the even items of xs, in order.", "    return [x for x in xs if x % 2 == 0]\n",
            lambda xs: [x for x in xs if x % 2 == 0], lambda r: (_ints(r),),
        )
    if kind == 2:
        return Spec(
            "sum_squares", "xs", "Return the sum of the squares of the items of xs.", "    return sum(x * x for x in xs)\n",
            lambda xs: sum(x * x for x in xs), lambda r: (_ints(r),),
        )
    return Spec(
        "reverse", "xs", "Return xs in reverse order, as a new list.", "    return xs[::-1]\n",
        lambda xs: xs[::-1], lambda r: (_ints(r),),
    )


def _level3(rng) -> Spec:
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return Spec(
            "running_max", "xs", "Return a list whose i-th item is the largest of xs[0..i].",
            "    out = []\n    for x in xs:\n        out.append(x if not out or x > out[-1] else out[-1])\n    return out\n",
            lambda xs: [max(xs[: i + 1]) for i in range(len(xs))], lambda r: (_ints(r),),
        )
    if kind == 1:
        return Spec(
            "count_vowels", "s", "Return the number of vowels (a, e, i, o, u) in s.",
            "    return sum(1 for c in s if c in 'aeiou')\n", lambda s: sum(1 for c in s if c in "aeiou"), lambda r: (_word(r),),
        )
    return Spec(
        "dedupe", "xs", "Return xs without repeated items, keeping first occurrences in order.",
        "    seen = set()\n    out = []\n    for x in xs:\n        if x not in seen:\n            seen.add(x)\n            out.append(x)\n    return out\n",
        lambda xs: list(dict.fromkeys(xs)), lambda r: (_ints(r, lo=0, hi=5),),
    )


LEVELS = {1: _level1, 2: _level2, 3: _level3}


def make_task(level: int, rng: np.random.Generator, n_tests: int = 5) -> tuple[str, str, list[str], str]:
    """(prompt, oracle body, test sources, entry point) for one task of `level`."""
    if level not in LEVELS:
        raise ValueError(f"unknown code level {level}; levels are {sorted(LEVELS)}")
    spec = LEVELS[level](rng)
    prompt = f'def {spec.name}({spec.params}):\n    """{spec.doc}"""\n'
    tests = []
    for _ in range(n_tests):
        args = spec.inputs(rng)
        call = f"{spec.name}({', '.join(repr(a) for a in args)})"
        tests.append(f"assert {call} == {spec.reference(*args)!r}")
    return prompt, spec.body, tests, spec.name
