"""The math environment: generation, the held-out split, the verifier's edge cases."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.math import MathEnv
from envs.math.answer import parse_answer
from envs.math.generator import LEVELS, make_problem


def test_sampling_is_deterministic_per_seed():
    env = MathEnv(levels=LEVELS)
    a = env.sample(50, np.random.default_rng([0, 3]))
    b = env.sample(50, np.random.default_rng([0, 3]))
    c = env.sample(50, np.random.default_rng([0, 4]))
    assert a == b and a != c
    assert {t.payload["level"] for t in env.sample(600, np.random.default_rng(1))} == set(LEVELS)


def test_training_never_samples_heldout_problems():
    env = MathEnv(levels=(1, 2, 3), eval_size=300)
    heldout = {t.prompt for t in env.eval_tasks()}
    train = env.sample(20_000, np.random.default_rng(0))
    assert not heldout & {t.prompt for t in train}
    assert all(env.is_heldout(p) for p in heldout)
    assert MathEnv(levels=(1, 2, 3), eval_size=300).eval_tasks() == env.eval_tasks()
    assert env.eval_tasks(10) == env.eval_tasks()[:10]
    # the held-out split keeps the training level mix
    levels = [t.payload["level"] for t in env.eval_tasks()]
    assert all(levels.count(lv) > 50 for lv in (1, 2, 3))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LEVELS), st.integers(0, 2**32 - 1))
def test_oracle_always_passes_and_answers_are_exact(level, seed):
    env = MathEnv(levels=(level,))
    task = env.sample(1, np.random.default_rng(seed))[0]
    v = env.verify(task, env.oracle(task))
    assert v.passed and v.parsed and v.score == 1.0
    prompt, answer = task.prompt, Fraction(task.payload["answer"])
    if level == 5:  # "ax+b=c;x=" : check the equation independently
        lhs, rhs = prompt[:-3].split("=")
        a, b = lhs.split("x")
        assert int(a) * answer + int(b) == int(rhs)
    elif level == 6:
        p, rest = prompt[:-1].split("/", 1)
        q, rest = rest[0], rest[1:]
        op, u, s = rest[0], *rest[1:].split("/")
        expect = Fraction(int(p), int(q)) + (1 if op == "+" else -1) * Fraction(int(u), int(s))
        assert answer == expect and env.oracle(task) == (f"{expect.numerator}/{expect.denominator}" if expect.denominator != 1 else str(expect.numerator))
    else:
        assert answer == Fraction(eval(prompt[:-1], {}, {}))  # generated prompts only: digits and + - *


def task_with(answer: str, level: int = 3):
    env = MathEnv(levels=(level,))
    t = env.sample(1, np.random.default_rng(0))[0]
    from dataclasses import replace

    return env, replace(t, payload={"answer": answer, "level": level})


@pytest.mark.parametrize("text", ["357", " 357 ", "+357", "0357", "357.0", "357\nbecause", "357.000", "x=357", "357 \n\n"])
def test_formatting_variants_pass(text):
    env, t = task_with("357")
    assert env.verify(t, text).passed


@pytest.mark.parametrize("answer,text", [("0", "-0"), ("5/6", "10/12"), ("5/6", " 5 / 6"), ("-1/2", "-2/4"), ("-3", "-3"), ("5/6", "\\frac{5}{6}")])
def test_equivalent_values_pass(answer, text):
    env, t = task_with(answer)
    assert env.verify(t, text).passed, text


@pytest.mark.parametrize("text", ["358", "356", "-357", "35", "3570", "357.5", "35 7", "0.357e3"])
def test_wrong_answers_fail(text):
    env, t = task_with("357")
    v = env.verify(t, text)
    assert not v.passed and v.score == 0.0


@pytest.mark.parametrize("text", ["", "   ", "abc", "=", "1/0", "\n357", "357=357", "9**9**9", "9^9^9^9", "nan", "inf", "٣٥٧", "３５７"])
def test_garbage_is_unparsed(text):
    env, t = task_with("357")
    v = env.verify(t, text)
    assert not v.passed and not v.parsed


def test_pathological_inputs_return_quickly():
    env, t = task_with("357")
    for text in ["9**9**9", "1" * 1_000_000, "(" * 10_000, "9" * 64 + "/" + "7" * 30, "\\frac{" * 500]:
        t0 = time.perf_counter()
        v = env.verify(t, text)
        assert time.perf_counter() - t0 < 2.0 and not v.passed


def test_first_line_only():
    assert parse_answer("12\n13") == 12
    assert parse_answer("abc\n12") is None


def test_bad_levels_rejected():
    with pytest.raises(ValueError):
        MathEnv(levels=(0,))
    with pytest.raises(ValueError):
        make_problem(9, np.random.default_rng(0))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(LEVELS), st.integers(0, 2**32 - 1))
def test_copying_the_prompt_is_never_paid(level, seed):
    """An expression is not an answer: the verifier must not compute `12+345` to 357."""
    env = MathEnv(levels=(level,))
    task = env.sample(1, np.random.default_rng(seed))[0]
    expression = task.prompt.split("=")[0] if level != 5 else task.prompt
    for attempt in (expression, f"({expression})", f"${expression}$", f"\\boxed{{{expression}}}"):
        assert not env.verify(task, attempt).passed, attempt


@pytest.mark.parametrize("text,value", [("\\frac{5}{6}", "5/6"), ("$\\frac{5}{6}$", "5/6"), ("\\boxed{357}", "357"), ("-\\dfrac{1}{2}", "-1/2")])
def test_latex_numbers_are_read(text, value):
    assert parse_answer(text) == Fraction(value)


@pytest.mark.parametrize("text", ["(12)(3)", "\\frac{1}{2}+\\frac{1}{3}", "\\frac{1}{0}", "\\sqrt{4}"])
def test_latex_expressions_are_not_evaluated(text):
    assert parse_answer(text) is None


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(((1,), (1, 2), (1, 2, 3), (2, 3))), st.integers(0, 2**32 - 1))
def test_fixed_width_pads_to_one_width_without_changing_values(levels, seed):
    width = max(levels)
    for level in levels:
        prompt, value = make_problem(level, np.random.default_rng(seed), width=width)
        plain_prompt, plain_value = make_problem(level, np.random.default_rng(seed))
        a, op, b = prompt[:width], prompt[width], prompt[width + 1 : -1]
        assert len(prompt) == 2 * width + 2 and len(b) == width and prompt.endswith("=") and op in "+-"
        assert f"{int(a)}{op}{int(b)}=" == plain_prompt and value == plain_value  # the same problem, padded
    env = MathEnv(levels=levels, fixed_width=True)
    for task in env.sample(20, np.random.default_rng(seed)):
        oracle = env.oracle(task)
        assert len(task.prompt) == 2 * width + 2
        assert len(oracle) == width + 2 and oracle[0] in "+-" and oracle[1:].isdigit()
        assert env.verify(task, oracle).passed
        assert env.verify(task, task.payload["answer"]).passed  # the verifier does not demand the padding
        assert not env.verify(task, str(int(task.payload["answer"]) + 1)).passed
        assert not env.verify(task, task.prompt[:-1]).passed  # the padded prompt itself is not an answer


def test_fixed_width_is_for_arithmetic_levels_only():
    with pytest.raises(ValueError, match="fixed_width"):
        MathEnv(levels=(1, 4), fixed_width=True)
    with pytest.raises(ValueError, match="narrower"):
        make_problem(3, np.random.default_rng(0), width=2)


@pytest.mark.parametrize(
    "completion, passed, score",
    [
        ("+0041", True, 1.0),
        ("41", True, 1.0),  # the value counts, not the padding
        ("+0042", False, 0.8),
        ("-0041", False, 0.8),  # the sign is a digit of the layout like any other
        ("+004", False, 0.8),
        ("+00411", False, 5 / 6),  # appending a digit to the right answer never earns full credit
        ("+0041+0041", False, 0.0),  # unreadable: no credit for a right prefix
        ("0041+", False, 0.0),
        ("+9999", False, 0.2),
        ("41 is it", False, 0.0),
        ("", False, 0.0),
    ],
)
def test_fixed_width_partial_credit_is_digits_in_place_and_below_one_unless_right(completion, passed, score):
    from dataclasses import replace

    env = MathEnv(levels=(2, 3), fixed_width=True)
    task = replace(env.sample(1, np.random.default_rng(0))[0], prompt="091-050=", payload={"answer": "41", "level": 2})
    v = env.verify(task, completion)
    assert (v.passed, v.score) == (passed, pytest.approx(score))
    assert MathEnv(levels=(2, 3)).verify(task, completion).score == float(passed)  # only the fixed-width layout has partial credit
