"""Reward registry and the batched scorer: lookup, signatures, totals, grouping, contained faults."""

from __future__ import annotations

import math
import random

import pytest

from envs.base import Task, Verdict
from rewards import RewardsConfig, get_reward, register_reward, reward_names, score_batch
from rollout.episode import Episode, Turn

BUILTINS = {"outcome", "format", "self_verification", "instantiation", "finish", "anti_serial_collapse", "length", "overlong"}


def ep(text: str = "2", group: int = 0, n_tokens: int = 1) -> Episode:
    turn = Turn("assistant", text, list(range(n_tokens)), [-0.1] * n_tokens, True)
    return Episode(task_id="t", env="math", prompt="1+1=", prompt_ids=[1], turns=[turn], group=group)


TASK = Task(id="t", env="math", prompt="1+1=", payload={"answer": "2"})
PASS = Verdict(passed=True, score=1.0, parsed=True)
WRONG = Verdict(passed=False, score=0.0, parsed=True)
GARBAGE = Verdict(passed=False, score=0.0, parsed=False)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Rewards registered by a test disappear after it."""
    from rewards import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


# ------------------------------------------------------------------------- registry


def test_builtins_are_registered_with_their_kinds_and_params():
    assert BUILTINS <= set(reward_names())
    assert reward_names() == sorted(reward_names())
    assert get_reward("length").kind == "group"
    assert {n for n in BUILTINS if get_reward(n).kind == "sample"} == BUILTINS - {"length"}
    assert get_reward("outcome").params == ("partial_credit",)
    assert get_reward("overlong").params == ("max_len", "cache_len")
    assert get_reward("instantiation").params == ("cap", "usable_only")
    assert get_reward("anti_serial_collapse").params == ("gate_on_outcome", "usable_only")
    assert get_reward("format").params == ()


def test_unknown_reward_names_the_known_ones_with_a_guess():
    with pytest.raises(ValueError, match="unknown reward 'outcom'. Did you mean 'outcome'") as e:
        get_reward("outcom")
    assert all(n in str(e.value) for n in BUILTINS)
    with pytest.raises(ValueError, match=r"unknown reward 'zzz'\. Known: anti_serial_collapse") as e:
        get_reward("zzz")
    assert "Did you mean" not in str(e.value)


def test_register_reads_params_from_the_signature(scratch_registry):
    @register_reward("_test_params")
    def fn(episode, task, verdict, alpha: float = 0.5, *, beta: int = 2):
        return alpha * beta

    spec = get_reward("_test_params")
    assert (spec.name, spec.kind, spec.params, spec.fn) == ("_test_params", "sample", ("alpha", "beta"), fn)
    assert spec.check_params({"alpha": "0.25", "beta": 3}) == {"alpha": 0.25, "beta": 3}
    with pytest.raises(ValueError, match="parameter 'beta': Input should be a valid integer"):
        spec.check_params({"beta": "many"})
    with pytest.raises(ValueError, match="no parameter 'gamma'"):
        spec.check_params({"gamma": 1})

    @register_reward("_test_kwargs", kind="group")
    def anything(episodes, tasks, verdicts, **params):
        return [0.0] * len(episodes)

    assert get_reward("_test_kwargs").check_params({"whatever": 1}) == {"whatever": 1}


def test_register_rejects_bad_definitions(scratch_registry):
    with pytest.raises(ValueError, match="kind must be one of sample, group"):
        register_reward("_test_kind", kind="batch")
    with pytest.raises(ValueError, match=r"must take \(episode, task, verdict, \*\*params\)"):
        register_reward("_test_sig")(lambda episode, task: 1.0)
    with pytest.raises(ValueError, match=r"must take \(episodes, tasks, verdicts, \*\*params\)"):
        register_reward("_test_sig", kind="group")(lambda episodes: [1.0])
    with pytest.raises(ValueError, match=r"parameters \['scale'\] need defaults"):

        @register_reward("_test_required")
        def needs(episode, task, verdict, scale):
            return scale

    assert "_test_kind" not in reward_names() and "_test_required" not in reward_names()


def test_a_name_cannot_be_taken_twice(scratch_registry):
    with pytest.raises(ValueError, match="'outcome' is already registered by rewards.outcome.outcome"):

        @register_reward("outcome")
        def my_outcome(episode, task, verdict):
            return 1.0

    from rewards.outcome import outcome

    register_reward("outcome")(outcome)  # re-registering the same function (a reload) is fine
    assert get_reward("outcome").fn is outcome


# ------------------------------------------------------------------------- scorer


def test_totals_weights_and_metrics():
    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "format": {"weight": {"kind": "linear", "start": 0.5, "end": 0.0, "end_step": 10}}})
    scored = score_batch([ep("2"), ep("3"), ep("?")], [TASK] * 3, [PASS, WRONG, GARBAGE], cfg, step=5)
    assert [b.total for b in scored.breakdowns] == [1.25, 0.25, 0.0]
    assert [b.components for b in scored.breakdowns] == [{"outcome": 1.0, "format": 1.0}, {"outcome": 0.0, "format": 1.0}, {"outcome": 0.0, "format": 0.0}]
    assert all(b.weights == {"outcome": 1.0, "format": 0.25} and b.errors == [] for b in scored.breakdowns)
    assert scored.metrics["reward/outcome"] == pytest.approx(1 / 3)
    assert scored.metrics["reward/format"] == pytest.approx(2 / 3)
    assert scored.metrics["weight/format"] == 0.25
    assert scored.metrics["reward_errors/outcome"] == scored.metrics["reward_errors/total"] == 0.0
    assert scored.errors == {"outcome": 0, "format": 0} and scored.error_messages == {}
    # at the end of the anneal only the outcome counts, but format is still computed and logged
    late = score_batch([ep("2"), ep("?")], [TASK] * 2, [PASS, GARBAGE], cfg, step=10)
    assert [b.total for b in late.breakdowns] == [1.0, 0.0]
    assert late.breakdowns[0].components["format"] == 1.0 and late.metrics["weight/format"] == 0.0


def test_params_reach_the_reward_function():
    cfg = RewardsConfig.model_validate({"outcome": {"weight": 2.0, "params": {"partial_credit": True}}})
    scored = score_batch([ep()], [TASK], [Verdict(False, 0.25, True)], cfg, 0)
    assert scored.breakdowns[0].total == 0.5


def test_empty_batch():
    scored = score_batch([], [], [], RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "length": {"weight": 1.0}}), 0)
    assert scored.breakdowns == [] and scored.errors == {"outcome": 0, "length": 0}
    assert "reward/outcome" not in scored.metrics and scored.metrics["weight/outcome"] == 1.0


def test_mismatched_inputs_are_a_caller_bug():
    with pytest.raises(ValueError, match=r"episodes \(2\), tasks \(1\) and verdicts \(2\)"):
        score_batch([ep(), ep()], [TASK], [PASS, PASS], RewardsConfig(), 0)


def test_group_rewards_see_their_group_only(scratch_registry):
    seen = []

    @register_reward("_test_group", kind="group")
    def group_size(episodes, tasks, verdicts):
        seen.append([e.completion_text for e in episodes])
        return [float(len(episodes))] * len(episodes)

    cfg = RewardsConfig.model_validate({"_test_group": {"weight": 1.0}})
    episodes = [ep("a", 0), ep("b", 1), ep("c", 0), ep("d", 1), ep("e", 1)]
    scored = score_batch(episodes, [TASK] * 5, [PASS] * 5, cfg, step=0)
    assert sorted(seen) == [["a", "c"], ["b", "d", "e"]]
    assert [b.total for b in scored.breakdowns] == [2.0, 3.0, 2.0, 3.0, 3.0]


def test_length_reward_in_the_scorer_is_invariant_to_batch_order():
    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "length": {"weight": 0.5}})
    rng = random.Random(0)
    rows = [(g, rng.randint(1, 40), rng.random() < 0.5) for g in range(4) for _ in range(5)]
    episodes = [ep(f"{i}", g, n) for i, (g, n, _) in enumerate(rows)]
    verdicts = [PASS if ok else WRONG for _, _, ok in rows]
    base = {e.completion_text: b.total for e, b in zip(episodes, score_batch(episodes, [TASK] * 20, verdicts, cfg, 0).breakdowns)}
    perm = rng.sample(range(20), 20)
    shuffled = score_batch([episodes[i] for i in perm], [TASK] * 20, [verdicts[i] for i in perm], cfg, 0)
    assert {episodes[i].completion_text: b.total for i, b in zip(perm, shuffled.breakdowns)} == base
    # and the length term is within each group, not across the batch
    one_group = [i for i, (g, _, _) in enumerate(rows) if g == 0]
    alone = score_batch([episodes[i] for i in one_group], [TASK] * 5, [verdicts[i] for i in one_group], cfg, 0)
    assert [b.total for b in alone.breakdowns] == [base[episodes[i].completion_text] for i in one_group]


def test_a_crashing_sample_reward_is_contained_and_counted(scratch_registry):
    calls = []

    @register_reward("_test_crashy")
    def crashy(episode, task, verdict):
        calls.append(episode.completion_text)
        if episode.completion_text == "boom":
            raise RuntimeError("reward bug")
        if episode.completion_text == "nan":
            return float("nan")
        if episode.completion_text == "inf":
            return -math.inf
        if episode.completion_text == "text":
            return "not a number"
        return 1.0

    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "_test_crashy": {"weight": 2.0}})
    texts = ["2", "boom", "nan", "inf", "text", "2"]
    scored = score_batch([ep(t) for t in texts], [TASK] * 6, [PASS] * 6, cfg, step=0)
    assert calls == texts  # one failure does not skip the rest of the batch
    assert [b.total for b in scored.breakdowns] == [3.0, 1.0, 1.0, 1.0, 1.0, 3.0]
    assert [b.components["_test_crashy"] for b in scored.breakdowns] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert [b.errors for b in scored.breakdowns] == [[], ["_test_crashy"], ["_test_crashy"], ["_test_crashy"], ["_test_crashy"], []]
    assert scored.errors == {"outcome": 0, "_test_crashy": 4}
    assert scored.metrics["reward_errors/_test_crashy"] == scored.metrics["reward_errors/total"] == 4.0
    assert scored.error_messages == {"_test_crashy": "RuntimeError: reward bug"}
    assert all(b.components["outcome"] == 1.0 for b in scored.breakdowns)  # other components unaffected


def test_a_crashing_group_reward_zeroes_its_group_only(scratch_registry):
    @register_reward("_test_group_crash", kind="group")
    def fragile(episodes, tasks, verdicts):
        if any(e.completion_text == "boom" for e in episodes):
            raise KeyError("missing")
        if len(episodes) == 3:
            return [1.0, 1.0]  # wrong length
        return [0.5] * len(episodes)

    cfg = RewardsConfig.model_validate({"_test_group_crash": {"weight": 1.0}})
    episodes = [ep("a", 0), ep("boom", 1), ep("b", 0), ep("c", 1), ep("d", 2), ep("e", 2), ep("f", 2)]
    scored = score_batch(episodes, [TASK] * 7, [PASS] * 7, cfg, 0)
    assert [b.total for b in scored.breakdowns] == [0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert [bool(b.errors) for b in scored.breakdowns] == [False, True, False, True, True, True, True]
    assert scored.errors["_test_group_crash"] == 5
    assert scored.error_messages["_test_group_crash"] == "KeyError: 'missing'"


def test_a_raising_builtin_is_contained_too():
    # partial credit with a NaN verifier score raises inside `outcome`
    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0, "params": {"partial_credit": True}}, "format": {"weight": 0.1}})
    scored = score_batch([ep(), ep()], [TASK] * 2, [Verdict(False, math.nan, True), Verdict(False, 0.5, True)], cfg, 0)
    assert [b.total for b in scored.breakdowns] == pytest.approx([0.1, 0.6])
    assert scored.breakdowns[0].errors == ["outcome"] and scored.errors["outcome"] == 1
    assert "finite" in scored.error_messages["outcome"]


def test_calibration_is_logged_when_self_verification_is_on():
    cfg = RewardsConfig.model_validate({"outcome": {"weight": 1.0}, "self_verification": {"weight": 0.5}})
    eps = [ep("1 <verify>p=0.9</verify>"), ep("2 <verify>p=0.2</verify>"), ep("3")]
    scored = score_batch(eps, [TASK] * 3, [PASS, WRONG, WRONG], cfg, 0)
    assert [b.total for b in scored.breakdowns] == pytest.approx([1.0 + 0.5 * (1 - 0.1**2), 0.5 * (1 - 0.2**2), 0.0])  # Brier
    assert scored.metrics["self_verify/auroc"] == 1.0
    assert scored.metrics["self_verify/parsed"] == pytest.approx(2 / 3)
    assert scored.metrics["self_verify/accuracy"] == pytest.approx(2 / 3)
    assert "self_verify/auroc" not in score_batch(eps, [TASK] * 3, [PASS] * 3, RewardsConfig(), 0).metrics
