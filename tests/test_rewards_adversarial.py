"""Policies that try to game the rewards: boasting self-verdicts, spurious sub-agents, serial swarms."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.base import Task, Verdict
from rewards import RewardsConfig, score_batch
from rewards.self_verification import self_verification
from rollout.episode import Episode, Turn

TASK = Task(id="t", env="swarm", prompt="p")
OK = Verdict(passed=True, score=1.0, parsed=True)
BAD = Verdict(passed=False, score=0.0, parsed=True)


def turn(text: str, stage: int = 0) -> Turn:
    return Turn("assistant", text, [1], [-0.1], True, stage)


def answer(text: str) -> Episode:
    return Episode("t", "math", "", [], [turn(text)], finish_reason="stop")


def sub(stage: int = 0, steps: int = 2, text: str = "found it") -> Episode:
    return Episode("s", "swarm", "", [], [turn(text, stage) for _ in range(steps)], finish_reason="stop", stage=stage)


def empty_sub(stage: int = 0) -> Episode:
    """A sub-agent spawned for the bonus: one step, returns nothing."""
    return sub(stage, steps=1, text="")


def orchestrator(stage_turns: dict[int, int], subs=()) -> Episode:
    turns = [turn("plan", s) for s, n in sorted(stage_turns.items()) for _ in range(n)]
    return Episode("t", "swarm", "p", [], turns, finish_reason="stop", sub_episodes=list(subs))


def totals(episodes, verdicts, rewards: dict, step: int = 0) -> list[float]:
    cfg = RewardsConfig.model_validate(rewards)
    return [b.total for b in score_batch(episodes, [TASK] * len(episodes), verdicts, cfg, step).breakdowns]


# ------------------------------------------------------------------------- self-verification


@pytest.mark.parametrize("rule", ["absolute", "brier"])
def test_always_claiming_correct_does_not_beat_an_honest_calibrated_verdict(rule):
    # a policy right 30% of the time whose confidence c is calibrated: each answer passes with
    # probability c, and the honest policy states p = c
    rng = random.Random(0)
    conf = [round(rng.uniform(0.0, 0.6), 2) for _ in range(4000)]
    passed = [rng.random() < c for c in conf]
    assert sum(passed) / len(passed) == pytest.approx(0.3, abs=0.02)
    verdicts = [OK if y else BAD for y in passed]
    rewards = {"outcome": {"weight": 1.0}, "self_verification": {"weight": 1.0, "params": {"rule": rule}}}
    honest = totals([answer(f"x <verify>p={c}</verify>") for c in conf], verdicts, rewards)
    boaster = totals([answer("x <verify>correct</verify>") for _ in conf], verdicts, rewards)
    hedger = totals([answer("x <verify>correct</verify> <verify>incorrect</verify>") for _ in conf], verdicts, rewards)
    silent = totals([answer("x") for _ in conf], verdicts, rewards)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # same answers, so the outcome part is equal; expected gaps here are 0.34 (absolute), 0.52 (brier)
    assert mean(boaster) < mean(honest) - 0.2
    # hedging with both tags is no verdict at all: outcome only, like saying nothing
    assert mean(hedger) == mean(silent) == sum(passed) / len(passed)


def expected(rule: str, text: str, q: float) -> float:
    """Expected self-verification reward of `text` when the answer passes with probability q."""
    return q * self_verification(answer(text), TASK, OK, rule=rule) + (1 - q) * self_verification(answer(text), TASK, BAD, rule=rule)


@settings(max_examples=101, deadline=None)
@given(st.integers(0, 100))
def test_brier_rule_pays_the_honest_probability_best_at_every_pass_rate(k):
    q = k / 100
    honest = expected("brier", f"a <verify>p={q}</verify>", q)
    assert honest >= expected("brier", "a <verify>correct</verify>", q) - 1e-12
    assert honest >= expected("brier", "a <verify>incorrect</verify>", q) - 1e-12
    for j in range(0, 101, 5):  # a proper scoring rule: no other stated p does better
        assert honest >= expected("brier", f"a <verify>p={j / 100}</verify>", q) - 1e-12


@pytest.mark.parametrize("q", [0.6, 0.8, 0.95])
def test_absolute_rule_pays_boasting_when_the_policy_is_usually_right(q):
    # 1 - |p - y| is not proper: above q = 1/2 the tag "correct" beats the honest p = q
    assert expected("absolute", "a <verify>correct</verify>", q) > expected("absolute", f"a <verify>p={q}</verify>", q)
    assert expected("brier", "a <verify>correct</verify>", q) < expected("brier", f"a <verify>p={q}</verify>", q)


@pytest.mark.parametrize("q", [0.1, 0.2, 0.3, 0.4])
def test_absolute_rule_pays_denial_when_the_policy_is_usually_wrong(q):
    # and below q = 1/2 it pays "incorrect" over the honest p = q: honest at no pass rate
    assert expected("absolute", "a <verify>incorrect</verify>", q) > expected("absolute", f"a <verify>p={q}</verify>", q)


def test_the_default_rule_is_maximised_by_the_honest_probability():
    """The reward as an experiment gets it (`self_verification` with no params): over a grid of pass
    rates q, the stated p with the highest expected reward is q itself."""
    grid = [j / 100 for j in range(101)]
    paid = {  # scheduled total of a stated p when the answer passes / fails
        p: totals([answer(f"a <verify>p={p}</verify>")] * 2, [OK, BAD], {"self_verification": {"weight": 1.0}}) for p in grid
    }
    for q in [k / 10 for k in range(1, 10)]:
        value = {p: q * ok + (1 - q) * bad for p, (ok, bad) in paid.items()}
        assert max(value, key=value.get) == pytest.approx(q), q


# ------------------------------------------------------------------------- PARL: spurious parallelism

PARL = {
    "outcome": {"weight": 1.0},
    "instantiation": {"weight": {"kind": "linear", "start": 0.3, "end": 0.0, "end_step": 100}},
    "finish": {"weight": {"kind": "linear", "start": 0.3, "end": 0.0, "end_step": 100}},
}


def test_spawning_empty_subagents_does_not_pay_once_finish_is_on():
    honest = orchestrator({0: 1, 1: 1}, [sub(), sub()])
    farming = orchestrator({0: 1, 1: 1}, [sub(), sub()] + [empty_sub() for _ in range(20)])
    for verdict in (OK, BAD):
        h, f = totals([honest, farming], [verdict, verdict], PARL)
        assert f < h
    # without r_finish the same farming does pay: the test above is about finish doing its job
    only_inst = {k: v for k, v in PARL.items() if k != "finish"}
    h, f = totals([honest, farming], [OK, OK], only_inst)
    assert f > h
    # the λs anneal away: at the end of the schedule only the outcome counts
    assert totals([honest, farming], [OK, OK], PARL, step=100) == [1.0, 1.0]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 30), st.integers(1, 8), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.booleans())
def test_no_number_of_empty_subagents_pays_when_lambda2_covers_lambda1(k, m, cap, a, b, passed):
    lam1, lam2 = min(a, b), max(a, b)
    rewards = {
        "outcome": {"weight": 1.0},
        "instantiation": {"weight": lam1, "params": {"cap": cap}},
        "finish": {"weight": lam2},
    }
    honest = orchestrator({0: 1}, [sub() for _ in range(k)])
    farming = orchestrator({0: 1}, [sub() for _ in range(k)] + [empty_sub() for _ in range(m)])
    v = OK if passed else BAD
    h, f = totals([honest, farming], [v, v], rewards)
    assert f <= h + 1e-12


def test_spawning_from_nothing_pays_unless_instantiation_counts_usable_subagents():
    serial = orchestrator({0: 3})
    farming = orchestrator({0: 1}, [empty_sub() for _ in range(8)])
    h, f = totals([serial, farming], [OK, OK], PARL)
    # r_finish is 0 for both (no sub-agents / none usable): it cannot tell them apart
    assert f == pytest.approx(h + 0.3)
    guarded = {**PARL, "instantiation": {**PARL["instantiation"], "params": {"usable_only": True}}}
    h, f = totals([serial, farming], [OK, OK], guarded)
    assert f == h == 1.0


def test_empty_subagents_inflate_anti_serial_collapse_unless_usable_only():
    honest = orchestrator({0: 1, 1: 1}, [sub(0, 3), sub(0, 3)])
    farming = orchestrator({0: 1, 1: 1}, [sub(0, 3), sub(0, 3)] + [empty_sub(0) for _ in range(20)])
    plain = {"outcome": {"weight": 1.0}, "anti_serial_collapse": {"weight": 0.5}}
    h, f = totals([honest, farming], [OK, OK], plain)
    assert f > h  # 20 one-step sub-agents: +20 total steps, +0 critical steps
    guarded = {"outcome": {"weight": 1.0}, "anti_serial_collapse": {"weight": 0.5, "params": {"usable_only": True}}}
    h, f = totals([honest, farming], [OK, OK], guarded)
    assert f == h
    # the full PARL reward with every term on and guarded: farming never pays
    full = {**guarded, "instantiation": {"weight": 0.3, "params": {"usable_only": True}}, "finish": {"weight": 0.3}}
    h, f = totals([honest, farming], [OK, OK], full)
    assert f < h


# ------------------------------------------------------------------------- PARL: serial collapse


def test_a_fully_serial_swarm_episode_scores_zero():
    rewards = {"outcome": {"weight": 1.0}, "anti_serial_collapse": {"weight": 1.0, "params": {"gate_on_outcome": False}}}
    alone = orchestrator({0: 5})  # no sub-agents: the orchestrator does everything itself
    chain = orchestrator({0: 1, 1: 1, 2: 1, 3: 1}, [sub(0, 4), sub(1, 2), sub(2, 6)])  # one sub-agent per stage
    wide = orchestrator({0: 1, 1: 1}, [sub(0, 4), sub(0, 4), sub(0, 4)])
    scored = totals([alone, chain, wide], [OK, OK, OK], rewards)
    assert scored[:2] == [1.0, 1.0]  # outcome only: serial work earns nothing for parallelism
    # wide: critical = (1 + 4) + 1 = 6, total = 1 + 12 + 1 = 14
    assert scored[2] == pytest.approx(1.0 + 1 - 6 / 14)


def test_parallel_nonsense_earns_nothing_when_gated():
    wide_but_wrong = orchestrator({0: 1, 1: 1}, [sub(0, 4) for _ in range(6)])
    rewards = {"outcome": {"weight": 1.0}, "anti_serial_collapse": {"weight": 1.0}}
    assert totals([wide_but_wrong], [BAD], rewards) == [0.0]


def test_breaking_the_answer_and_predicting_the_failure_earns_nothing():
    """A tag whose text makes the answer unreadable (`+0059<<verify>...`) fails the answer for sure:
    stating p = 0 then is no judgement, and pays nothing, under either rule."""
    from envs.math import MathEnv

    env = MathEnv(levels=(1, 2, 3), fixed_width=True)
    task = env.sample(1, __import__("numpy").random.default_rng(0))[0]
    right = env.oracle(task)
    for text in (right + "<<verify>p=0.0</verify>", right + "x<verify>incorrect</verify>", "<verify>p=0.0</verify>"):
        verdict = env.verify(task, text)
        assert not verdict.parsed
        for rule in ("brier", "absolute"):
            assert self_verification(answer(text), task, verdict, rule=rule) == 0.0
    # the honest verdict on a readable answer is still paid
    assert self_verification(answer(right + "<verify>p=1.0</verify>"), task, env.verify(task, right + "<verify>p=1.0</verify>")) == 1.0
