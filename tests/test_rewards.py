"""Reward components, schedules and the contained scorer."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from envs.base import Task, Verdict
from rewards import RewardsConfig, get_reward, register_reward, reward_names, score_batch
from rollout.episode import Episode, Turn


def ep(text: str, group: int = 0) -> Episode:
    return Episode(task_id="t", env="math", prompt="1+1=", prompt_ids=[1], turns=[Turn("assistant", text, [5], [-0.1], True)], group=group)


TASK = Task(id="t", env="math", prompt="1+1=", payload={"answer": "2"})
PASS = Verdict(passed=True, score=1.0, parsed=True)
WRONG = Verdict(passed=False, score=0.0, parsed=True)
GARBAGE = Verdict(passed=False, score=0.0, parsed=False)
PARTIAL = Verdict(passed=False, score=0.4, parsed=True)


def test_outcome_and_format():
    outcome, fmt = get_reward("outcome").fn, get_reward("format").fn
    assert [outcome(ep(""), TASK, v) for v in (PASS, WRONG, GARBAGE, PARTIAL)] == [1.0, 0.0, 0.0, 0.0]
    assert outcome(ep(""), TASK, PARTIAL, partial_credit=True) == 0.4
    assert [fmt(ep(""), TASK, v) for v in (PASS, WRONG, GARBAGE)] == [1.0, 1.0, 0.0]


def test_unknown_reward_did_you_mean():
    with pytest.raises(ValueError, match="Did you mean 'outcome'"):
        get_reward("outcom")
    assert {"outcome", "format"} <= set(reward_names())


@pytest.mark.parametrize(
    "spec, step, expect",
    [
        ({"kind": "constant", "value": 0.3}, 1000, 0.3),
        ({"kind": "linear", "start": 1.0, "end": 0.0, "start_step": 10, "end_step": 20}, 0, 1.0),
        ({"kind": "linear", "start": 1.0, "end": 0.0, "start_step": 10, "end_step": 20}, 15, 0.5),
        ({"kind": "linear", "start": 1.0, "end": 0.0, "start_step": 10, "end_step": 20}, 99, 0.0),
        ({"kind": "cosine", "start": 1.0, "end": 0.0, "end_step": 100}, 50, 0.5),
        ({"kind": "cosine", "start": 1.0, "end": 0.0, "end_step": 100}, 25, 0.5 * (1 + math.cos(math.pi / 4))),
        ({"kind": "step", "before": 1.0, "after": 0.2, "at": 5}, 4, 1.0),
        ({"kind": "step", "before": 1.0, "after": 0.2, "at": 5}, 5, 0.2),
        ({"kind": "piecewise", "points": [[0, 0.0], [10, 1.0], [20, 0.5]]}, 15, 0.75),
        ({"kind": "piecewise", "points": [[0, 0.0], [10, 1.0], [20, 0.5]]}, 50, 0.5),
    ],
)
def test_schedules(spec, step, expect):
    cfg = RewardsConfig.model_validate({"outcome": {"weight": spec}})
    assert math.isclose(cfg.weights_at(step)["outcome"], expect, abs_tol=1e-9)


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"outcme": {"weight": 1.0}}, "Did you mean 'outcome'"),
        ({"outcome": {}}, "weight"),
        ({"outcome": {"weight": 1.0, "params": {"partial": True}}}, "no parameter 'partial'"),
        ({"outcome": {"weight": {"kind": "linear", "start": 1, "end": 0, "start_step": 10, "end_step": 5}}}, "end_step"),
        ({"outcome": {"weight": {"kind": "piecewise", "points": [[5, 1.0], [5, 0.0]]}}}, "increase"),
        ({"outcome": {"weight": {"kind": "exp"}}}, "kind"),
        ({}, "at least one reward component"),
    ],
)
def test_bad_schedules_are_config_errors(data, needle):
    with pytest.raises(ValidationError, match=needle):
        RewardsConfig.model_validate(data)


def test_bad_schedule_through_config_names_the_key(tmp_path):
    from rl.config import ConfigError, load_config

    p = tmp_path / "e.yaml"
    p.write_text("policy: {}\nenv: {name: math}\nrewards: {outcome: {weight: 1.0}, formt: {weight: 0.1}}\n")
    with pytest.raises(ConfigError, match="rewards.*formt.*Did you mean 'format'"):
        load_config(p)


def test_score_batch_totals_and_metrics():
    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "format": {"weight": {"kind": "linear", "start": 0.5, "end": 0.0, "end_step": 10}}})
    episodes = [ep("2"), ep("3"), ep("?")]
    scored = score_batch(episodes, [TASK] * 3, [PASS, WRONG, GARBAGE], cfg, step=5)
    assert [b.total for b in scored.breakdowns] == [1.25, 0.25, 0.0]
    assert scored.breakdowns[0].components == {"outcome": 1.0, "format": 1.0}
    assert scored.breakdowns[0].weights == {"outcome": 1.0, "format": 0.25}
    assert scored.metrics["reward/outcome"] == pytest.approx(1 / 3)
    assert scored.metrics["weight/format"] == 0.25
    assert scored.metrics["reward_errors/outcome"] == 0.0


@pytest.fixture
def scratch_registry(monkeypatch):
    """Rewards registered by a test disappear after it."""
    from rewards import registry

    registry._load_builtins()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_crashing_and_non_finite_rewards_are_contained_and_counted(scratch_registry):
    calls = []

    @register_reward("_test_crashy")
    def crashy(episode, task, verdict):
        calls.append(1)
        if episode.completion_text == "boom":
            raise RuntimeError("reward bug")
        if episode.completion_text == "nan":
            return float("nan")
        return 1.0

    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "_test_crashy": {"weight": 2.0}})
    episodes = [ep("2"), ep("boom"), ep("nan")]
    scored = score_batch(episodes, [TASK] * 3, [PASS, PASS, PASS], cfg, step=0)
    assert [b.total for b in scored.breakdowns] == [3.0, 1.0, 1.0]
    assert [b.errors for b in scored.breakdowns] == [[], ["_test_crashy"], ["_test_crashy"]]
    assert scored.metrics["reward_errors/_test_crashy"] == 2.0
    assert len(calls) == 3


def test_group_rewards_see_their_group_only(scratch_registry):
    seen = []

    @register_reward("_test_group", kind="group")
    def group_len(episodes, tasks, verdicts):
        seen.append(len(episodes))
        return [float(len(episodes))] * len(episodes)

    cfg = RewardsConfig.model_validate({"_test_group": {"weight": 1.0}})
    episodes = [ep("a", 0), ep("b", 1), ep("c", 0), ep("d", 1), ep("e", 1)]
    scored = score_batch(episodes, [TASK] * 5, [PASS] * 5, cfg, step=0)
    assert sorted(seen) == [2, 3]
    assert [b.total for b in scored.breakdowns] == [2.0, 3.0, 2.0, 3.0, 3.0]


def test_parl_lambdas_anneal_to_zero_by_default(tmp_path):
    from rl.config import load_config

    p = tmp_path / "e.yaml"
    p.write_text(
        "policy: {}\nenv: {name: math}\ntrain: {steps: 200}\n"
        "rewards: {outcome: {weight: 1.0}, instantiation: {weight: 0.4, params: {cap: 3}}, finish: {weight: 0.2},"
        " format: {weight: 0.1}}\n"
    )
    cfg = load_config(p)
    w0, w100, w200 = (cfg.rewards.weights_at(s) for s in (0, 100, 200))
    assert (w0["instantiation"], w100["instantiation"], w200["instantiation"]) == (0.4, 0.2, 0.0)
    assert (w0["finish"], w200["finish"]) == (0.2, 0.0)
    assert w0["format"] == w200["format"] == 0.1  # only the PARL terms anneal by default
    fixed = RewardsConfig.model_validate({"instantiation": {"weight": {"kind": "constant", "value": 0.4}}})
    assert fixed.weights_at(10_000)["instantiation"] == 0.4
