"""Reward components of the reward issue: hand-computed cases, boundaries, properties, attacks."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.base import Task, Verdict
from rewards import RewardsConfig, calibration_metrics, critical_steps, kimi_length_reward, overlong_penalty, parse_self_verdict, score_batch
from rewards.length import length
from rewards.parl import anti_serial_collapse, finish, instantiation, stages_of
from rewards.self_verification import self_verification
from rollout.episode import Episode, Turn

TASK = Task(id="t", env="swarm", prompt="p")
OK = Verdict(passed=True, score=1.0, parsed=True)
BAD = Verdict(passed=False, score=0.0, parsed=True)


def turn(text="x", stage=0, n_tokens=1):
    return Turn("assistant", text, list(range(n_tokens)), [-0.1] * n_tokens, True, stage)


def sub(stage, steps=1, finish_reason="stop", text="result", verdict=None):
    return Episode(task_id="s", env="swarm", prompt="", prompt_ids=[], turns=[turn(text, stage) for _ in range(steps)], finish_reason=finish_reason, stage=stage, verdict=verdict or {})


def orchestrator(stage_turns: dict[int, int], subs: list[Episode], text="answer"):
    turns = [turn(text, s) for s, n in sorted(stage_turns.items()) for _ in range(n)]
    return Episode(task_id="t", env="swarm", prompt="p", prompt_ids=[], turns=turns, sub_episodes=subs, finish_reason="stop")


# ----------------------------------------------------------------- critical steps / PARL


def test_critical_steps_by_hand():
    assert critical_steps([]) == 0
    assert critical_steps([(1, [])]) == 1
    assert critical_steps([(1, [3, 5, 2]), (2, [4]), (1, [])]) == (1 + 5) + (2 + 4) + 1
    with pytest.raises(ValueError):
        critical_steps([(1, [float("nan")])])
    with pytest.raises(ValueError):
        critical_steps([(-1, [])])
    with pytest.raises(ValueError):
        critical_steps([(1, [math.inf])])


def test_stages_read_from_episode():
    e = orchestrator({0: 1, 1: 2}, [sub(0, 3), sub(0, 5), sub(1, 4)])
    assert stages_of(e) == [(1, [3, 5]), (2, [4])]


def test_instantiation_capped():
    for n, expect in [(0, 0.0), (1, 0.25), (4, 1.0), (9, 1.0)]:
        e = orchestrator({0: 1}, [sub(0) for _ in range(n)])
        assert instantiation(e, TASK, OK, cap=4) == expect
    with pytest.raises(ValueError):
        instantiation(orchestrator({0: 1}, []), TASK, OK, cap=0)


def test_finish_counts_only_usable_results():
    subs = [
        sub(0),
        sub(0, finish_reason="length"),
        sub(0, text="   "),
        sub(0, verdict={"usable": False}),
        sub(0, verdict={"error": "timeout"}),
        sub(0, finish_reason="error"),
        sub(0),
    ]
    assert finish(orchestrator({0: 1}, subs), TASK, OK) == pytest.approx(2 / 7)
    assert finish(orchestrator({0: 1}, []), TASK, OK) == 0.0
    assert finish(orchestrator({0: 1}, [sub(0, finish_reason="length")] * 3), TASK, OK) == 0.0


def test_anti_serial_collapse():
    serial = orchestrator({0: 6}, [])
    assert anti_serial_collapse(serial, TASK, OK) == 0.0
    # 1 orchestrator step spawning 4 sub-agents of 3 steps each, then 1 step to answer:
    # critical = (1 + 3) + 1 = 5, total = 1 + 12 + 1 = 14
    wide = orchestrator({0: 1, 1: 1}, [sub(0, 3) for _ in range(4)])
    assert anti_serial_collapse(wide, TASK, OK) == pytest.approx(1 - 5 / 14)
    assert anti_serial_collapse(wide, TASK, BAD) == 0.0
    assert anti_serial_collapse(wide, TASK, BAD, gate_on_outcome=False) == pytest.approx(1 - 5 / 14)
    assert anti_serial_collapse(orchestrator({}, []), TASK, OK) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 9), max_size=6)), max_size=6))
def test_critical_steps_bounds(stages):
    total = sum(o + sum(s) for o, s in stages)
    crit = critical_steps(stages)
    assert crit <= total
    assert crit >= sum(o for o, _ in stages)
    assert critical_steps(list(reversed(stages))) == crit


def parl_total(e, step=0):
    cfg = RewardsConfig.model_validate(
        {
            "outcome": {"weight": 1.0},
            "instantiation": {"weight": {"kind": "linear", "start": 0.3, "end": 0.0, "end_step": 100}},
            "finish": {"weight": {"kind": "linear", "start": 0.3, "end": 0.0, "end_step": 100}},
        }
    )
    return score_batch([e], [TASK], [BAD], cfg, step).breakdowns[0].total


def test_spawning_empty_subagents_does_not_pay_once_finish_is_on():
    honest = orchestrator({0: 1}, [sub(0), sub(0)])  # two useful sub-agents
    farming = orchestrator({0: 1}, [sub(0), sub(0)] + [sub(0, text="") for _ in range(20)])
    assert parl_total(farming) < parl_total(honest)
    # and the PARL terms anneal away: at the end only the outcome counts
    assert parl_total(farming, step=100) == parl_total(honest, step=100) == 0.0


# ----------------------------------------------------------------- length / overlong


def test_kimi_length_by_hand():
    # lengths 10, 20, 30: λ = 0.5, 0, -0.5
    assert kimi_length_reward([10, 20, 30], [True, True, True]) == [0.5, 0.0, -0.5]
    assert kimi_length_reward([10, 20, 30], [False, False, False]) == [0.0, 0.0, -0.5]
    assert kimi_length_reward([5, 5, 5], [True, False, True]) == [0.0, 0.0, 0.0]
    assert kimi_length_reward([], []) == []
    with pytest.raises(ValueError):
        kimi_length_reward([1, float("nan")], [True, True])
    with pytest.raises(ValueError):
        kimi_length_reward([1, -2], [True, True])
    with pytest.raises(ValueError):
        kimi_length_reward([1], [True, False])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.booleans()), min_size=1, max_size=16), st.randoms())
def test_kimi_length_properties(rows, rnd):
    lens, ok = [r[0] for r in rows], [r[1] for r in rows]
    out = kimi_length_reward(lens, ok)
    assert all(-0.5 <= v <= 0.5 for v in out)
    assert all(v <= 0 for v, c in zip(out, ok) if not c)
    # shorter correct answers never score below longer correct ones
    correct = sorted((n, v) for n, v, c in zip(lens, out, ok) if c)
    assert all(a[1] >= b[1] - 1e-12 for a, b in zip(correct, correct[1:]))
    perm = list(range(len(rows)))
    rnd.shuffle(perm)
    shuffled = kimi_length_reward([lens[i] for i in perm], [ok[i] for i in perm])
    assert shuffled == [out[i] for i in perm]


def test_overlong_by_hand():
    assert overlong_penalty(100, max_len=512, cache_len=128) == 0.0
    assert overlong_penalty(384, 512, 128) == 0.0
    assert overlong_penalty(448, 512, 128) == -0.5
    assert overlong_penalty(512, 512, 128) == -1.0
    assert overlong_penalty(10_000, 512, 128) == -1.0
    with pytest.raises(ValueError):
        overlong_penalty(float("inf"), 512, 128)
    with pytest.raises(ValueError):
        overlong_penalty(10, 100, 200)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 1000))
def test_overlong_monotone_and_bounded(a, b, max_len):
    cache = max(1, max_len // 4)
    pa, pb = overlong_penalty(a, max_len, cache), overlong_penalty(b, max_len, cache)
    assert -1 <= pa <= 0
    if a <= b:
        assert pa >= pb


def test_length_reward_is_a_group_reward():
    eps = [Episode("t", "m", "", [], [turn(n_tokens=n)]) for n in (2, 4, 6)]
    assert length(eps, [TASK] * 3, [OK, OK, BAD]) == [0.5, 0.0, -0.5]


# ----------------------------------------------------------------- self-verification


@pytest.mark.parametrize(
    "text, p",
    [
        ("42 <verify>correct</verify>", 1.0),
        ("42 <verify> Incorrect </verify>\n", 0.0),
        ("42 <verify>p=0.8</verify>", 0.8),
        ("42 <verify>p = .25</verify>", 0.25),
        ("42", None),
        ("42 <verify>maybe</verify>", None),
        ("42 <verify>p=1.5</verify>", None),
        ("42 <verify>p=-0.1</verify>", None),
        ("42 <verify>p=nan</verify>", None),
        ("<verify>correct</verify> 42", None),  # the verdict must come last
        ("42 <verify>correct</verify><verify>incorrect</verify>", None),  # hedging
        ("42 <verify>correct", None),
    ],
)
def test_parse_self_verdict(text, p):
    assert parse_self_verdict(text) == p


def sv(text, passed):
    e = Episode("t", "m", "", [], [Turn("assistant", text, [1], [-0.1], True)])
    return self_verification(e, TASK, OK if passed else BAD)


def test_self_verification_by_hand():
    assert sv("1 <verify>p=0.8</verify>", True) == pytest.approx(0.8)
    assert sv("1 <verify>p=0.8</verify>", False) == pytest.approx(0.2)
    assert sv("1 <verify>incorrect</verify>", False) == 1.0
    assert sv("1", True) == 0.0


def test_always_correct_claim_does_not_beat_honest_calibration():
    rng = random.Random(0)
    # a policy that is right 30% of the time and knows which answers are shaky
    outcomes = [rng.random() < 0.3 for _ in range(4000)]
    honest = [sv("a <verify>p=0.9</verify>" if ok else "a <verify>p=0.1</verify>", ok) for ok in outcomes]
    boaster = [sv("a <verify>correct</verify>", ok) for ok in outcomes]
    constant = [sv("a <verify>p=0.3</verify>", ok) for ok in outcomes]
    assert sum(boaster) / len(boaster) < sum(honest) / len(honest)
    assert sum(boaster) / len(boaster) < sum(constant) / len(constant)


def test_calibration_metrics():
    m = calibration_metrics([0.9, 0.8, 0.2, None], [True, False, False, True])
    assert m["self_verify/accuracy"] == 0.5  # 0.9✓ 0.8✗ 0.2✓ None✗
    assert m["self_verify/brier"] == pytest.approx((0.01 + 0.64 + 0.04) / 3)
    assert m["self_verify/auroc"] == pytest.approx(1.0)  # 0.9 ranks above both negatives
    assert math.isnan(calibration_metrics([0.5, 0.6], [True, True])["self_verify/auroc"])
    with pytest.raises(ValueError):
        calibration_metrics([1.5], [True])


def test_scorer_logs_calibration_when_self_verification_is_on():
    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "self_verification": {"weight": 0.5}})
    eps = [Episode("t", "m", "", [], [Turn("assistant", t, [1], [-0.1], True)]) for t in ("1 <verify>p=0.9</verify>", "2 <verify>p=0.2</verify>")]
    scored = score_batch(eps, [TASK] * 2, [OK, BAD], cfg, 0)
    assert scored.metrics["self_verify/auroc"] == 1.0
    assert [b.total for b in scored.breakdowns] == pytest.approx([1.0 + 0.5 * 0.9, 0.5 * 0.8])
