"""Procedural Python function tasks with reference solutions and unit tests, by difficulty.

  1  one-line arithmetic on an int          add_17(x) -> x + 17
  2  a loop or comprehension over a list    count_above_12(xs) -> how many items exceed 12
  3  accumulation and strings               running_max_from_5(xs), count_letter_e(s), ...

Every template carries a constant (in the name and the docstring), so the held-out split (by
prompt) holds out unseen constants of templates that training does see: the held-out score
measures whether the policy reads the specification, not whether it memorised a prompt.
Each task: the prompt is the signature and docstring, the oracle is the body, the tests are
`assert` lines comparing the candidate's outputs with the reference's: first on edge inputs that
set a constant off by one apart (`min(x, 40)` and `min(x, 41)` differ only above 40), then on
random inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

LETTERS = "abcdeioustxyz"


@dataclass(frozen=True)
class Spec:
    name: str
    params: str
    doc: str
    body: str
    reference: Callable[..., Any]
    inputs: Callable[[np.random.Generator], tuple]
    # Arguments of the first tests, chosen so that a constant off by one fails one of them: random
    # inputs alone often cannot tell `min(x, 40)` from `min(x, 41)`.
    edges: tuple[tuple, ...] = ()


def _ints(rng, lo=-30, hi=30, most=7):
    return [int(v) for v in rng.integers(lo, hi + 1, size=int(rng.integers(0, most + 1)))]


def _word(rng):
    return "".join(LETTERS[int(i)] for i in rng.integers(0, len(LETTERS), size=int(rng.integers(0, 10))))


def _nonzero(rng, lo=-99, hi=99):
    """An int in [lo, hi] other than 0 (0 is drawn as hi): `x * 41` and `x * 40` agree at 0."""
    v = int(rng.integers(lo, hi))
    return v if v != 0 else hi


def _near_multiple(rng, k):
    """A nonzero multiple of k, or one plus a remainder: half the answers are True."""
    return k * _nonzero(rng, -9, 9) + int(rng.integers(0, 2)) * int(rng.integers(1, k))


def _signed(name: str, k: int) -> str:
    return f"{name}{k}" if k >= 0 else f"{name}minus_{-k}"


def _level1(rng) -> Spec:
    # ~4000 distinct prompts: far more than an SFT run repeats, so the policy learns to copy the
    # constant instead of recalling prompts (with k < 51, held-out 19-29% against 50-75% trained)
    k = int(rng.integers(2, 1000))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return Spec(f"add_{k}", "x", f"Return x plus {k}.", f"    return x + {k}\n", lambda x: x + k, lambda r: (_nonzero(r),))
    if kind == 1:
        return Spec(f"times_{k}", "x", f"Return x times {k}.", f"    return x * {k}\n", lambda x: x * k, lambda r: (_nonzero(r),))
    if kind == 2:
        return Spec(
            f"is_multiple_of_{k}", "x", f"Return True if x is a multiple of {k}.", f"    return x % {k} == 0\n",
            lambda x: x % k == 0, lambda r: (_near_multiple(r, k),), edges=((k,), (k + 1,)),
        )
    return Spec(
        f"at_most_{k}", "x", f"Return x, but never more than {k}.", f"    return min(x, {k})\n",
        lambda x: min(x, k), lambda r: (k + int(r.integers(-20, 21)),), edges=((k + 1,),),
    )


def _level2(rng) -> Spec:
    kind = int(rng.integers(0, 4))
    if kind == 0:
        t = int(rng.integers(-99, 100))
        return Spec(
            _signed("count_above_", t), "xs", f"Return how many items of xs are greater than {t}.",
            f"    return sum(1 for x in xs if x > {t})\n", lambda xs: sum(1 for x in xs if x > t),
            lambda r: (_ints(r, t - 20, t + 20),), edges=(([t, t + 1, t - 5],),),
        )
    k = int(rng.integers(2, {1: 100, 2: 1000, 3: 10}[kind]))
    if kind == 1:
        return Spec(
            f"multiples_of_{k}", "xs", f"Return the items of xs that are multiples of {k}, in order.",
            f"    return [x for x in xs if x % {k} == 0]\n", lambda xs: [x for x in xs if x % k == 0],
            lambda r: ([k * int(m) for m in r.integers(-5, 6, size=3)] + _ints(r, -5 * k, 5 * k, most=4),), edges=(([k, k + 1, 2 * k],),),
        )
    if kind == 2:
        return Spec(
            f"sum_plus_{k}", "xs", f"Return the sum of the items of xs plus {k}.",
            f"    return sum(xs) + {k}\n", lambda xs: sum(xs) + k, lambda r: (_ints(r),),
        )
    return Spec(
        f"first_{k}", "xs", f"Return the first {k} items of xs (all of them if there are fewer).",
        f"    return xs[:{k}]\n", lambda xs: xs[:k], lambda r: (_ints(r, most=12),), edges=((list(range(1, k + 3)),),),
    )


def _level3(rng) -> Spec:
    kind = int(rng.integers(0, 3))
    if kind == 0:
        k = int(rng.integers(-99, 100))
        return Spec(
            _signed("running_max_from_", k), "xs", f"Return a list whose i-th item is the largest of {k} and xs[0..i].",
            f"    out = []\n    m = {k}\n    for x in xs:\n        m = max(m, x)\n        out.append(m)\n    return out\n",
            lambda xs: [max([k, *xs[: i + 1]]) for i in range(len(xs))], lambda r: (_ints(r, k - 20, k + 20),),
            edges=(([k - 1, k + 2],),),
        )
    if kind == 1:
        c = LETTERS[int(rng.integers(0, len(LETTERS)))]
        return Spec(
            f"count_letter_{c}", "s", f"Return how many times the letter '{c}' occurs in s.",
            f"    return s.count('{c}')\n", lambda s: s.count(c), lambda r: (_word(r),), edges=((c + "xy" + c,),),
        )
    k = int(rng.integers(1, 6))
    return Spec(
        f"first_{k}_distinct", "xs", f"Return the first {k} distinct items of xs, in order of first occurrence.",
        f"    out = []\n    for x in xs:\n        if x not in out:\n            out.append(x)\n    return out[:{k}]\n",
        lambda xs: list(dict.fromkeys(xs))[:k], lambda r: (_ints(r, 0, 5),), edges=(([0, 0, *range(1, k + 1)],),),
    )


LEVELS = {1: _level1, 2: _level2, 3: _level3}


def make_task(level: int, rng: np.random.Generator, n_tests: int = 5) -> tuple[str, str, list[str], str]:
    """(prompt, oracle body, test sources, entry point) for one task of `level`."""
    if level not in LEVELS:
        raise ValueError(f"unknown code level {level}; levels are {sorted(LEVELS)}")
    spec = LEVELS[level](rng)
    prompt = f'def {spec.name}({spec.params}):\n    """{spec.doc}"""\n'
    tests = []
    for i in range(n_tests):
        args = spec.edges[i] if i < len(spec.edges) else spec.inputs(rng)
        call = f"{spec.name}({', '.join(repr(a) for a in args)})"
        tests.append(f"assert {call} == {spec.reference(*args)!r}")
    return prompt, spec.body, tests, spec.name
