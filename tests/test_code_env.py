"""The code environment: procedural tasks, partial credit, HumanEval through the sandbox, hacks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from envs.code import CodeEnv
from envs.code.generator import LEVELS
from envs.code.harness import build_program, read_report


@pytest.fixture(scope="module")
def env():
    return CodeEnv()


def test_procedural_oracles_pass_at_every_level(env):
    for level in LEVELS:
        e = CodeEnv(levels=(level,))
        tasks = e.sample(6, np.random.default_rng(level))
        for t in tasks:
            v = e.verify(t, e.oracle(t))
            assert v.passed and v.score == 1.0, (t.prompt, v)


def test_heldout_holds_out_constants_of_seen_templates(env):
    import re

    template = lambda t: re.sub(r"\d+|(?<=letter_)[a-z]", "K", t.payload["entry_point"])  # noqa: E731
    heldout = env.eval_tasks(60)
    seen = {template(t) for t in env.sample(2000, np.random.default_rng(4))}
    assert {template(t) for t in heldout} <= seen


def _passes(prompt: str, body: str, tests: list[str]) -> bool:
    # our own reference bodies, not model output: safe to run in-process
    scope: dict = {}
    exec(prompt + body, scope)
    try:
        for t in tests:
            exec(t, scope)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_a_constant_off_by_one_fails_the_tests(level):
    """The tests pin the constant: `x + 34` for `add_33`, `xs[:9]` for `first_7` must fail."""
    import re

    from envs.code.generator import make_task

    rng = np.random.default_rng(level)
    checked = 0
    for _ in range(300):
        prompt, body, tests, entry = make_task(level, rng)
        assert _passes(prompt, body, tests), prompt
        k = re.search(r"\d+", entry)
        if k is None:
            continue
        sign = -1 if "minus_" in entry else 1
        value = sign * int(k.group())
        for wrong in (value - 1, value + 1):
            mutated = re.sub(rf"(?<![\d-]){re.escape(str(value))}(?!\d)", str(wrong), body)
            assert mutated != body, (entry, body)
            assert not _passes(prompt, mutated, tests), (entry, mutated, tests)
        checked += 1
    assert checked > 150


def test_sampling_determinism_and_heldout_split(env):
    a = env.sample(20, np.random.default_rng(1))
    assert a == env.sample(20, np.random.default_rng(1))
    heldout = {t.prompt for t in env.eval_tasks(40)}
    train = {t.prompt for t in env.sample(400, np.random.default_rng(2))}
    assert heldout and not heldout & train


def test_partial_credit_and_failure_kinds(env):
    task = next(t for t in env.sample(200, np.random.default_rng(3)) if t.payload["entry_point"].startswith("at_most_"))
    half = "    return x\n"  # right whenever x is under the cap
    v = env.verify(task, half)
    assert 0 < v.score < 1 and not v.passed and v.parsed
    assert v.score == v.details["passed"] / v.details["total"]
    v = env.verify(task, "    return (\n")
    assert (v.passed, v.parsed, v.reason) == (False, False, "syntax error")
    v = env.verify(task, "    while True: pass\n")
    assert not v.passed and v.details["sandbox_status"] == "timeout"


def test_report_parsing_needs_the_nonce():
    assert read_report("\nabc RESULT 3 5\n", "abc") == ("result", 3, 5)
    assert read_report("\nxyz RESULT 5 5\n", "abc") == ("missing", 0, 0)
    assert read_report("\nabc RESULT 5 5\nabc RESULT 5 5\n", "abc") == ("missing", 0, 0)
    # placeholders inside a solution are not expanded
    prog = build_program("x = '__TESTS__'", ["assert True"], "f")
    assert "x = '__TESTS__'" in prog


HACKS = {
    "return_none": "    return None\n",
    "exit_early": "    pass\nimport sys\nsys.exit(0)\n",
    "os_exit": "    pass\nimport os\nos._exit(0)\n",
    "always_equal": "    class E:\n        def __eq__(self, o): return True\n        def __ne__(self, o): return False\n    return E()\n",
    "fake_report": "    pass\nprint('RESULT 1 1')\n",
}


def verify_all(env, tasks, completion_of):
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda t: env.verify(t, completion_of(t)), tasks))


def test_humaneval_canonical_solutions_all_pass(env):
    tasks = env.humaneval()
    assert len(tasks) == 164
    results = verify_all(env, tasks, env.oracle)
    failed = [(t.id, r.reason) for t, r in zip(tasks, results) if not r.passed]
    assert failed == []


@pytest.mark.parametrize("hack", ["return_none", "always_equal", "exit_early"])
def test_humaneval_wrong_and_hacking_solutions_never_pass(env, hack):
    tasks = env.humaneval()
    results = verify_all(env, tasks, lambda t: HACKS[hack])
    assert sum(r.passed for r in results) == 0


@pytest.mark.parametrize("hack", sorted(HACKS))
def test_hacks_fail_on_procedural_tasks(env, hack):
    for t in env.sample(5, np.random.default_rng(9)):
        assert not env.verify(t, HACKS[hack]).passed
