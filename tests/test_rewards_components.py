"""Reward components: hand-computed cases, boundaries, bad inputs and properties."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.base import Task, Verdict
from rewards import calibration_metrics, critical_steps, get_reward, kimi_length_reward, overlong_penalty, parse_self_verdict
from rewards.anti_serial_collapse import anti_serial_collapse
from rewards.critical_path import stages_of, total_steps
from rewards.finish import finish, is_usable
from rewards.instantiation import instantiation
from rewards.length import length
from rewards.overlong import overlong
from rewards.self_verification import self_verification
from rollout.episode import Episode, Turn

TASK = Task(id="t", env="swarm", prompt="p")
OK = Verdict(passed=True, score=1.0, parsed=True)
BAD = Verdict(passed=False, score=0.0, parsed=True)
UNPARSED = Verdict(passed=False, score=0.0, parsed=False)
PARTIAL = Verdict(passed=False, score=0.4, parsed=True)

BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1, True, "3", None]


def turn(text="x", stage=0, n_tokens=1, role="assistant"):
    return Turn(role, text, list(range(n_tokens)), [-0.1] * n_tokens, role == "assistant", stage)


def answer(text="42", n_tokens=1):
    return Episode("t", "math", "", [], [turn(text, n_tokens=n_tokens)], finish_reason="stop")


def sub(stage=0, steps=1, finish_reason="stop", text="result", verdict=None):
    return Episode("s", "swarm", "", [], [turn(text, stage) for _ in range(steps)], finish_reason=finish_reason, stage=stage, verdict=verdict or {})


def orchestrator(stage_turns: dict[int, int], subs=(), text="answer"):
    turns = [turn(text, s) for s, n in sorted(stage_turns.items()) for _ in range(n)]
    return Episode("t", "swarm", "p", [], turns, finish_reason="stop", sub_episodes=list(subs))


# ------------------------------------------------------------------------- outcome, format


def test_outcome_pass_fail():
    outcome = get_reward("outcome").fn
    assert [outcome(answer(), TASK, v) for v in (OK, BAD, UNPARSED, PARTIAL)] == [1.0, 0.0, 0.0, 0.0]


def test_outcome_partial_credit_is_the_score_clipped():
    outcome = get_reward("outcome").fn
    assert outcome(answer(), TASK, PARTIAL, partial_credit=True) == 0.4
    assert outcome(answer(), TASK, OK, partial_credit=True) == 1.0
    assert outcome(answer(), TASK, Verdict(False, 1.7, True), partial_credit=True) == 1.0
    assert outcome(answer(), TASK, Verdict(False, -0.2, True), partial_credit=True) == 0.0


@pytest.mark.parametrize("score", [math.nan, math.inf])
def test_outcome_partial_credit_rejects_non_finite_scores(score):
    with pytest.raises(ValueError, match="finite"):
        get_reward("outcome").fn(answer(), TASK, Verdict(False, score, True), partial_credit=True)


def test_format_looks_at_parsed_only():
    fmt = get_reward("format").fn
    assert [fmt(answer(), TASK, v) for v in (OK, BAD, UNPARSED)] == [1.0, 1.0, 0.0]


# ------------------------------------------------------------------------- critical steps


def test_critical_steps_by_hand():
    assert critical_steps([]) == 0
    assert critical_steps([(1, [])]) == 1
    assert critical_steps([(0, [4])]) == 4
    assert critical_steps([(1, [3, 5, 2]), (2, [4]), (1, [])]) == (1 + 5) + (2 + 4) + 1
    assert critical_steps([(np.int64(2), np.array([1, 3]))]) == 5
    assert total_steps([(1, [3, 5, 2]), (2, [4]), (1, [])]) == 18


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_critical_steps_rejects_bad_step_counts(bad):
    with pytest.raises(ValueError, match="orchestrator_steps"):
        critical_steps([(1, [2]), (bad, [1])])
    with pytest.raises(ValueError, match=r"stage 1: subagent_steps\[1\]"):
        critical_steps([(1, [2]), (1, [1, bad])])


def test_critical_steps_rejects_malformed_stages():
    with pytest.raises(ValueError, match="stage 0 must be"):
        critical_steps([3])
    with pytest.raises(ValueError, match="stage 0 must be"):
        critical_steps([(1, 2)])


stage_lists = st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 9), max_size=6)), max_size=6)


@settings(max_examples=150, deadline=None)
@given(stage_lists, st.randoms())
def test_critical_steps_properties(stages, rnd):
    crit = critical_steps(stages)
    assert sum(o for o, _ in stages) <= crit <= total_steps(stages)
    # stages in any order, sub-agents of a stage in any order: the same critical path
    shuffled = [(o, rnd.sample(s, len(s))) for o, s in stages]
    rnd.shuffle(shuffled)
    assert critical_steps(shuffled) == crit
    # one more step for the longest sub-agent of a stage lengthens the path by exactly one
    if stages and stages[0][1]:
        o, s = stages[0]
        longer = [(o, sorted(s)[:-1] + [max(s) + 1])] + stages[1:]
        assert critical_steps(longer) == crit + 1


def test_stages_read_from_an_episode():
    e = orchestrator({0: 1, 1: 2}, [sub(0, 3), sub(0, 5), sub(1, 4), sub(3, 2)])
    # tool and user turns are not orchestrator steps
    e.turns.insert(1, turn("tool output", 0, role="tool"))
    e.turns.insert(0, turn("task", 0, role="user"))
    assert stages_of(e) == [(1, [3, 5]), (2, [4]), (0, [2])]
    assert stages_of(e, include=lambda s: s.stage != 0) == [(1, []), (2, [4]), (0, [2])]
    assert stages_of(orchestrator({})) == []


# ------------------------------------------------------------------------- instantiation


@pytest.mark.parametrize("n, cap, expect", [(0, 4, 0.0), (1, 4, 0.25), (3, 4, 0.75), (4, 4, 1.0), (9, 4, 1.0), (2, 1, 1.0), (5, 10, 0.5)])
def test_instantiation_is_capped(n, cap, expect):
    assert instantiation(orchestrator({0: 1}, [sub() for _ in range(n)]), TASK, OK, cap=cap) == expect


def test_instantiation_default_cap_and_bad_caps():
    assert instantiation(orchestrator({0: 1}, [sub()]), TASK, OK) == 0.25
    assert instantiation(orchestrator({0: 1}, [sub()]), TASK, OK, cap=np.int64(2)) == 0.5
    for cap in (0, -3, 2.5, True, "4"):
        with pytest.raises(ValueError, match="cap"):
            instantiation(orchestrator({0: 1}, [sub()]), TASK, OK, cap=cap)


def test_instantiation_usable_only_counts_usable_subagents():
    e = orchestrator({0: 1}, [sub(), sub(text=""), sub(finish_reason="error"), sub()])
    assert instantiation(e, TASK, OK) == 1.0
    assert instantiation(e, TASK, OK, usable_only=True) == 0.5


# ------------------------------------------------------------------------- finish


@pytest.mark.parametrize(
    "s, usable",
    [
        (sub(), True),
        (sub(verdict={"usable": True, "error": ""}), True),
        (sub(finish_reason="length"), False),
        (sub(finish_reason="error"), False),
        (sub(finish_reason="timeout"), False),
        (sub(finish_reason=""), False),
        (sub(text=""), False),
        (sub(text=" \n\t"), False),
        (sub(steps=0), False),
        (sub(verdict={"usable": False}), False),
        (sub(verdict={"error": "tool crashed"}), False),
        (sub(verdict={"timeout": True}), False),
        (sub(verdict={"off_task": True}), False),
    ],
)
def test_usable_subagent_criteria(s, usable):
    assert is_usable(s) is usable


def test_finish_by_hand():
    subs = [sub(), sub(finish_reason="length"), sub(text="   "), sub(verdict={"usable": False}), sub(verdict={"timeout": True}), sub(finish_reason="error"), sub()]
    assert finish(orchestrator({0: 1}, subs), TASK, OK) == pytest.approx(2 / 7)
    assert finish(orchestrator({0: 1}, [sub(), sub(1)]), TASK, OK) == 1.0


def test_finish_with_no_subagents_or_all_failing_is_zero():
    assert finish(orchestrator({0: 1}), TASK, OK) == 0.0
    failing = [sub(finish_reason="length"), sub(text=""), sub(verdict={"error": "x"})]
    assert finish(orchestrator({0: 1}, failing), TASK, OK) == 0.0


# ------------------------------------------------------------------------- anti-serial collapse


def test_anti_serial_collapse_by_hand():
    # 1 orchestrator step spawning 4 sub-agents of 3 steps each, then 1 step to answer:
    # critical = (1 + 3) + 1 = 5, total = 1 + 12 + 1 = 14
    wide = orchestrator({0: 1, 1: 1}, [sub(0, 3) for _ in range(4)])
    assert anti_serial_collapse(wide, TASK, OK) == pytest.approx(1 - 5 / 14)
    assert anti_serial_collapse(wide, TASK, BAD) == 0.0
    assert anti_serial_collapse(wide, TASK, BAD, gate_on_outcome=False) == pytest.approx(1 - 5 / 14)


def test_serial_work_scores_zero():
    assert anti_serial_collapse(orchestrator({0: 6}), TASK, OK) == 0.0
    # one sub-agent per stage is delegation, not parallelism
    chain = orchestrator({0: 1, 1: 1, 2: 1}, [sub(0, 4), sub(1, 2)])
    assert anti_serial_collapse(chain, TASK, OK) == 0.0
    # a second sub-agent that took no step adds no parallel work
    assert anti_serial_collapse(orchestrator({0: 1}, [sub(0, 4), sub(0, 0)]), TASK, OK) == 0.0


def test_anti_serial_collapse_with_nothing_done_is_zero():
    assert anti_serial_collapse(orchestrator({}), TASK, OK) == 0.0


def test_anti_serial_collapse_usable_only_ignores_failed_subagents():
    # two real sub-agents of 3 steps, three failed ones of 3 steps
    e = orchestrator({0: 1}, [sub(0, 3), sub(0, 3)] + [sub(0, 3, finish_reason="length") for _ in range(3)])
    assert anti_serial_collapse(e, TASK, OK) == pytest.approx(1 - 4 / 16)
    assert anti_serial_collapse(e, TASK, OK, usable_only=True) == pytest.approx(1 - 4 / 7)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(0, 4), st.integers(0, 3), max_size=4), st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6)), max_size=8))
def test_anti_serial_collapse_bounds(orch, subs):
    e = orchestrator(orch, [sub(s, n) for s, n in subs])
    r = anti_serial_collapse(e, TASK, OK)
    assert 0.0 <= r < 1.0
    assert anti_serial_collapse(e, TASK, BAD) == 0.0
    # a copy of the longest sub-agent, run beside it, adds work but no latency: r cannot drop
    if subs:
        s0, n0 = max(subs, key=lambda x: x[1])
        wider = orchestrator(orch, [sub(s, n) for s, n in subs] + [sub(s0, n0)])
        assert anti_serial_collapse(wider, TASK, OK) >= r - 1e-12


# ------------------------------------------------------------------------- length (Kimi k1.5)


def test_kimi_length_by_hand():
    # lengths 10, 20, 30: λ = 0.5, 0, -0.5
    assert kimi_length_reward([10, 20, 30], [True, True, True]) == [0.5, 0.0, -0.5]
    assert kimi_length_reward([10, 20, 30], [False, False, False]) == [0.0, 0.0, -0.5]
    assert kimi_length_reward([30, 10, 15], [True, False, True]) == pytest.approx([-0.5, 0.0, 0.25])
    assert kimi_length_reward(np.array([1, 3]), np.array([True, True])) == [0.5, -0.5]


def test_kimi_length_boundaries():
    assert kimi_length_reward([5, 5, 5], [True, False, True]) == [0.0, 0.0, 0.0]
    assert kimi_length_reward([7], [True]) == [0.0]
    assert kimi_length_reward([], []) == []
    assert kimi_length_reward([0, 4], [True, True]) == [0.5, -0.5]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_kimi_length_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match=r"lengths\[1\]"):
        kimi_length_reward([1, bad], [True, True])


def test_kimi_length_sizes_must_match():
    with pytest.raises(ValueError, match="differ in size"):
        kimi_length_reward([1], [True, False])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.booleans()), min_size=1, max_size=16), st.randoms())
def test_kimi_length_properties(rows, rnd):
    lens, ok = [r[0] for r in rows], [r[1] for r in rows]
    out = kimi_length_reward(lens, ok)
    assert all(-0.5 <= v <= 0.5 for v in out)
    assert all(v <= 0 for v, c in zip(out, ok) if not c)
    # at equal length, a correct answer never scores below a wrong one
    for n, v, c in zip(lens, out, ok):
        for n2, v2, c2 in zip(lens, out, ok):
            if n == n2 and c and not c2:
                assert v >= v2
    # non-increasing in length among correct answers, and among wrong ones
    for flag in (True, False):
        same = sorted((n, v) for n, v, c in zip(lens, out, ok) if c is flag)
        assert all(a[1] >= b[1] - 1e-12 for a, b in zip(same, same[1:]))
    # the group's order does not matter
    perm = rnd.sample(range(len(rows)), len(rows))
    assert kimi_length_reward([lens[i] for i in perm], [ok[i] for i in perm]) == [out[i] for i in perm]


def test_length_group_reward_counts_completion_tokens():
    eps = [answer(n_tokens=n) for n in (2, 4, 6)]
    assert length(eps, [TASK] * 3, [OK, OK, BAD]) == [0.5, 0.0, -0.5]
    # non-trainable (prompt/tool) tokens are not completion tokens
    eps[0].turns.append(turn("tool", role="tool", n_tokens=100))
    assert length(eps, [TASK] * 3, [OK, OK, BAD]) == [0.5, 0.0, -0.5]


# ------------------------------------------------------------------------- overlong (DAPO)


@pytest.mark.parametrize(
    "n, expect",
    [(0, 0.0), (100, 0.0), (384, 0.0), (385, -1 / 128), (448, -0.5), (511, -127 / 128), (512, -1.0), (10_000, -1.0)],
)
def test_overlong_by_hand(n, expect):
    assert overlong_penalty(n, max_len=512, cache_len=128) == pytest.approx(expect)


def test_overlong_boundaries():
    assert overlong_penalty(99, 100, 0) == 0.0  # no soft zone: a hard penalty at max_len
    assert overlong_penalty(100, 100, 0) == -1.0
    assert overlong_penalty(0, 100, 100) == 0.0  # soft zone covers everything
    assert overlong_penalty(50, 100, 100) == -0.5
    with pytest.raises(ValueError, match="must not exceed"):
        overlong_penalty(10, 100, 200)
    with pytest.raises(ValueError, match="max_len must be > 0"):
        overlong_penalty(0, 0, 0)


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_overlong_rejects_bad_inputs(bad):
    with pytest.raises(ValueError, match="length"):
        overlong_penalty(bad, 512, 128)
    with pytest.raises(ValueError, match="max_len"):
        overlong_penalty(10, bad, 128)
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(10, 512, bad)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(1, 1000), st.integers(0, 1000))
def test_overlong_monotone_and_bounded(a, b, max_len, cache):
    cache = min(cache, max_len)
    pa, pb = overlong_penalty(a, max_len, cache), overlong_penalty(b, max_len, cache)
    assert -1.0 <= pa <= 0.0
    if a <= b:
        assert pa >= pb
    if a <= max_len - cache and a < max_len:
        assert pa == 0.0
    if a >= max_len:
        assert pa == -1.0


def test_overlong_reward_uses_completion_tokens():
    assert overlong(answer(n_tokens=448), TASK, OK, max_len=512, cache_len=128) == -0.5
    assert overlong(answer(n_tokens=10), TASK, OK) == 0.0


# ------------------------------------------------------------------------- self-verification


@pytest.mark.parametrize(
    "text, p",
    [
        ("42 <verify>correct</verify>", 1.0),
        ("42 <verify> Incorrect </verify>\n", 0.0),
        ("42 <VERIFY>CORRECT</VERIFY>", 1.0),
        ("42 <verify>p=0.8</verify>", 0.8),
        ("42 <verify>P = .25</verify>", 0.25),
        ("42 <verify>p=1</verify>", 1.0),
        ("42 <verify>p=0</verify>", 0.0),
        ("42", None),
        ("", None),
        ("42 <verify></verify>", None),
        ("42 <verify>maybe</verify>", None),
        ("42 <verify>0.8</verify>", None),
        ("42 <verify>p=0.8 or so</verify>", None),
        ("42 <verify>p=1.5</verify>", None),
        ("42 <verify>p=1.0001</verify>", None),
        ("42 <verify>p=-0.1</verify>", None),
        ("42 <verify>p=nan</verify>", None),
        ("42 <verify>p=inf</verify>", None),
        ("42 <verify>p=1e-3</verify>", None),
        ("<verify>correct</verify> 42", None),  # the verdict must come last
        ("42 <verify>correct</verify><verify>incorrect</verify>", None),  # hedging
        ("42 <verify>correct", None),
    ],
)
def test_parse_self_verdict(text, p):
    assert parse_self_verdict(text) == p


def sv(text, passed, **params):
    return self_verification(answer(text), TASK, OK if passed else BAD, **params)


def test_self_verification_by_hand():
    assert sv("1 <verify>p=0.8</verify>", True) == pytest.approx(0.96)  # Brier by default
    assert sv("1 <verify>p=0.8</verify>", False) == pytest.approx(0.36)
    assert sv("1 <verify>incorrect</verify>", False) == 1.0
    assert sv("1 <verify>correct</verify>", False) == 0.0
    assert sv("1 <verify>p=0.8</verify>", True, rule="absolute") == pytest.approx(0.8)
    assert sv("1 <verify>p=0.8</verify>", False, rule="absolute") == pytest.approx(0.2)


def test_self_verification_missing_or_malformed_scores_zero():
    for text in ("1", "1 <verify>sure</verify>", "1 <verify>p=2</verify>", "<verify>correct</verify> 1"):
        assert sv(text, True) == 0.0
        assert sv(text, False) == 0.0
    with pytest.raises(ValueError, match="rule"):
        sv("1 <verify>p=0.5</verify>", True, rule="log")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 100), st.booleans())
def test_self_verification_bounds(k, passed):
    text = f"x <verify>p={k / 100}</verify>"
    for rule in ("absolute", "brier"):
        assert 0.0 <= sv(text, passed, rule=rule) <= 1.0
    # the closer the stated p to the outcome, the higher the reward
    closer = f"x <verify>p={(k + 1) / 100 if passed else (k - 1) / 100}</verify>"
    if 0 < k < 100:
        assert sv(closer, passed) > sv(text, passed)


def test_calibration_metrics_by_hand():
    m = calibration_metrics([0.9, 0.8, 0.2, None], [True, False, False, True])
    assert m["self_verify/accuracy"] == 0.5  # 0.9 right, 0.8 wrong, 0.2 right, None wrong
    assert m["self_verify/brier"] == pytest.approx((0.01 + 0.64 + 0.04) / 3)
    assert m["self_verify/auroc"] == pytest.approx(1.0)  # 0.9 ranks above both negatives
    assert m["self_verify/parsed"] == 0.75
    assert calibration_metrics([0.5, 0.5], [True, False])["self_verify/auroc"] == 0.5  # a tie counts 1/2
    assert calibration_metrics([0.2, 0.9], [True, False])["self_verify/auroc"] == 0.0


def test_calibration_metrics_boundaries():
    assert math.isnan(calibration_metrics([0.5, 0.6], [True, True])["self_verify/auroc"])
    assert math.isnan(calibration_metrics([0.5, 0.6], [False, False])["self_verify/auroc"])
    none = calibration_metrics([None, None], [True, False])
    assert none["self_verify/accuracy"] == 0.0 and none["self_verify/parsed"] == 0.0
    assert math.isnan(none["self_verify/brier"]) and math.isnan(none["self_verify/auroc"])
    assert all(math.isnan(v) for v in calibration_metrics([], []).values())
    for bad in (1.5, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            calibration_metrics([bad], [True])
    with pytest.raises(ValueError, match="differ in size"):
        calibration_metrics([0.5], [True, False])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.5, 0.7, 1.0]), st.booleans()), min_size=1, max_size=30))
def test_auroc_matches_pairwise_definition(rows):
    ps, ys = [p for p, _ in rows], [y for _, y in rows]
    pos = [p for p, y in rows if y]
    neg = [p for p, y in rows if not y]
    got = calibration_metrics(ps, ys)["self_verify/auroc"]
    if not pos or not neg:
        assert math.isnan(got)
    else:
        want = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))
        assert got == pytest.approx(want)


def test_brier_of_a_known_forecast():
    rng = random.Random(1)
    ys = [rng.random() < 0.3 for _ in range(5000)]
    m = calibration_metrics([0.3] * len(ys), ys)
    assert m["self_verify/brier"] == pytest.approx(0.3 * 0.7, abs=0.01)
    assert m["self_verify/auroc"] == 0.5
