"""Reward schedules and the `rewards` config section: values at boundaries, validation errors."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from rewards import RewardsConfig
from rewards.schedule import Schedule, apply_parl_defaults

schedule = TypeAdapter(Schedule)


def w(spec: dict, step: int) -> float:
    return schedule.validate_python(spec).weight_at(step)


LIN = {"kind": "linear", "start": 1.0, "end": 0.0, "start_step": 10, "end_step": 20}
COS = {"kind": "cosine", "start": 1.0, "end": 0.2, "start_step": 10, "end_step": 20}
STEP = {"kind": "step", "before": 1.0, "after": 0.2, "at": 5}
STEPS = {"kind": "step", "points": [[10, 1.0], [20, 0.5], [30, 0.0]]}
PIECE = {"kind": "piecewise", "points": [[10, 0.0], [20, 1.0], [40, 0.5]]}


@pytest.mark.parametrize(
    "spec, step, expect",
    [
        ({"kind": "constant", "value": 0.3}, 0, 0.3),
        ({"kind": "constant", "value": 0.3}, 10**9, 0.3),
        (LIN, 0, 1.0),
        (LIN, 10, 1.0),
        (LIN, 11, 0.9),
        (LIN, 15, 0.5),
        (LIN, 20, 0.0),
        (LIN, 10**6, 0.0),
        ({"kind": "linear", "start": 0.3, "end": 0.0, "end_step": 200}, 0, 0.3),  # start_step defaults to 0
        ({"kind": "linear", "start": 0.3, "end": 0.0, "end_step": 200}, 100, 0.15),
        ({"kind": "linear", "start": 0.0, "end": 2.0, "start_step": 0, "end_step": 4}, 1, 0.5),  # warm-up
        (COS, 9, 1.0),
        (COS, 10, 1.0),
        (COS, 15, 0.6),
        (COS, 12, 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.2))),
        (COS, 20, 0.2),
        (COS, 99, 0.2),
        (STEP, 0, 1.0),
        (STEP, 4, 1.0),
        (STEP, 5, 0.2),
        (STEP, 500, 0.2),
        (STEPS, 0, 1.0),
        (STEPS, 19, 1.0),
        (STEPS, 20, 0.5),
        (STEPS, 29, 0.5),
        (STEPS, 30, 0.0),
        (STEPS, 99, 0.0),
        (PIECE, 0, 0.0),
        (PIECE, 10, 0.0),
        (PIECE, 15, 0.5),
        (PIECE, 20, 1.0),
        (PIECE, 30, 0.75),
        (PIECE, 40, 0.5),
        (PIECE, 1000, 0.5),
        ({"kind": "piecewise", "points": [[5, 0.7]]}, 0, 0.7),
        ({"kind": "piecewise", "points": [[5, 0.7]]}, 50, 0.7),
    ],
)
def test_schedule_values(spec, step, expect):
    assert w(spec, step) == pytest.approx(expect, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["linear", "cosine"]),
    st.floats(-5, 5),
    st.floats(-5, 5),
    st.integers(0, 100),
    st.integers(1, 100),
    st.integers(0, 300),
    st.integers(0, 300),
)
def test_ramps_stay_between_their_ends_and_are_monotone(kind, start, end, s0, span, a, b):
    spec = {"kind": kind, "start": start, "end": end, "start_step": s0, "end_step": s0 + span}
    lo, hi = min(start, end), max(start, end)
    wa, wb = w(spec, a), w(spec, b)
    assert lo - 1e-12 <= wa <= hi + 1e-12
    if a <= b:  # moves from start towards end, never back
        assert (wb - wa) * (end - start) >= -1e-12


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.floats(-3, 3)), min_size=1, max_size=6, unique_by=lambda p: p[0]), st.integers(0, 1200))
def test_piecewise_and_step_lists_stay_within_their_points(points, step):
    points = sorted(points)
    values = [v for _, v in points]
    for kind in ("piecewise", "step"):
        got = w({"kind": kind, "points": points}, step)
        assert min(values) - 1e-12 <= got <= max(values) + 1e-12
        assert w({"kind": kind, "points": points}, points[-1][0]) == values[-1]
    # at a point, piecewise takes the point's value; step takes it from that point on
    for s, v in points:
        assert w({"kind": "piecewise", "points": points}, s) == pytest.approx(v)
        assert w({"kind": "step", "points": points}, s) == v


@pytest.mark.parametrize(
    "spec, needle",
    [
        ({**LIN, "start_step": -1}, "greater than or equal to 0"),
        ({**LIN, "end_step": -5, "start_step": 0}, "greater than or equal to 0"),
        ({**LIN, "start_step": 20, "end_step": 10}, r"end_step \(10\) must be after start_step \(20\)"),
        ({**LIN, "start_step": 10, "end_step": 10}, r"end_step \(10\) must be after start_step \(10\)"),
        ({**COS, "start_step": 30}, "must be after start_step"),
        ({"kind": "linear", "start": 1.0, "end": 0.0}, "end_step"),
        ({**LIN, "end_stpe": 3}, "end_stpe"),
        ({**STEP, "at": -1}, "greater than or equal to 0"),
        ({"kind": "step", "before": 1.0, "at": 3}, "missing: after"),
        ({**STEP, "points": [[0, 1.0]]}, "either `points` or"),
        ({"kind": "step", "points": []}, "at least 1 item"),
        ({"kind": "step", "points": [[5, 1.0], [3, 0.0]]}, r"increase strictly, got \[5, 3\]"),
        ({"kind": "piecewise", "points": [[5, 1.0], [5, 0.0]]}, "increase strictly"),
        ({"kind": "piecewise", "points": [[-1, 1.0], [5, 0.0]]}, "greater than or equal to 0"),
        ({"kind": "piecewise", "points": []}, "at least 1 item"),
        ({"kind": "constant", "value": math.nan}, "finite"),
        ({**LIN, "start": math.inf}, "finite"),
        ({"kind": "piecewise", "points": [[0, math.nan]]}, "finite"),
        ({"kind": "exponential", "rate": 0.1}, "exponential"),
        ({"value": 1.0}, "kind"),
    ],
)
def test_invalid_schedules(spec, needle):
    with pytest.raises(ValidationError, match=needle):
        schedule.validate_python(spec)


# ------------------------------------------------------------------------- the `rewards` section


def test_yaml_section_from_the_docs():
    data = yaml.safe_load(
        """
rewards:
  outcome: {weight: 1.0}
  format: {weight: {kind: linear, start: 0.2, end: 0.0, start_step: 0, end_step: 100}}
  instantiation: {weight: {kind: linear, start: 0.3, end: 0.0, end_step: 200}, params: {cap: 4}}
"""
    )
    cfg = RewardsConfig.model_validate(data["rewards"])
    assert cfg.weights_at(0) == pytest.approx({"outcome": 1.0, "format": 0.2, "instantiation": 0.3})
    assert cfg.weights_at(100) == pytest.approx({"outcome": 1.0, "format": 0.0, "instantiation": 0.15})
    assert dict(cfg.items())["instantiation"].params == {"cap": 4}
    # it survives a dump/load round trip (the resolved config is logged and reloaded on resume)
    again = RewardsConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.weights_at(150) == cfg.weights_at(150)


def test_bare_number_is_constant_and_default_is_outcome_only():
    cfg = RewardsConfig.model_validate({"format": {"weight": 0.5}, "outcome": {"weight": 2}})
    assert cfg.weights_at(0) == cfg.weights_at(10**6) == {"format": 0.5, "outcome": 2.0}
    assert RewardsConfig().weights_at(7) == {"outcome": 1.0}


def test_params_are_checked_against_the_signature_and_coerced():
    cfg = RewardsConfig.model_validate(
        {
            "overlong": {"weight": 1.0, "params": {"max_len": 64, "cache_len": "16"}},
            "self_verification": {"weight": 1.0, "params": {"rule": "brier"}},
            "anti_serial_collapse": {"weight": 1.0, "params": {"gate_on_outcome": False, "usable_only": True}},
        }
    )
    assert dict(cfg.items())["overlong"].params == {"max_len": 64, "cache_len": 16}


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"outcme": {"weight": 1.0}}, "unknown reward component 'outcme'. Did you mean 'outcome'"),
        ({"self_verify": {"weight": 1.0}}, "Did you mean 'self_verification'"),
        ({"bananas": {"weight": 1.0}}, r"unknown reward component 'bananas'\. Known: anti_serial_collapse, finish"),
        ({"outcome": {}}, r"outcome\.weight\s+Field required"),
        ({"outcome": {"params": {"partial_credit": True}}}, r"outcome\.weight\s+Field required"),
        ({"outcome": {"weight": 1.0, "params": {"partial": True}}}, "no parameter 'partial'. Did you mean 'partial_credit'"),
        ({"format": {"weight": 1.0, "params": {"strict": True}}}, r"no parameter 'strict'\. \(parameters: none\)"),
        ({"instantiation": {"weight": 1.0, "params": {"cap": 0}}}, "parameter 'cap': Input should be greater than or equal to 1"),
        ({"instantiation": {"weight": 1.0, "params": {"cap": "four"}}}, "parameter 'cap': Input should be a valid integer"),
        ({"self_verification": {"weight": 1.0, "params": {"rule": "log"}}}, "parameter 'rule'"),
        ({"overlong": {"weight": 1.0, "params": {"max_len": 0}}}, "parameter 'max_len'"),
        ({"outcome": {"weight": 1.0, "schedule": "linear"}}, "schedule"),
        ({"outcome": {"weight": {"kind": "linear", "start": 1, "end": 0, "start_step": 10, "end_step": 5}}}, "must be after start_step"),
        ({"outcome": {"weight": True}}, "weight"),
        ({}, "at least one reward component"),
    ],
)
def test_invalid_rewards_sections(data, needle):
    with pytest.raises(ValidationError, match=needle):
        RewardsConfig.model_validate(data)


# ------------------------------------------------------------------------- PARL λ defaults


def test_parl_lambdas_given_as_numbers_anneal_to_zero_over_the_run():
    raw = {"outcome": {"weight": 1.0}, "instantiation": {"weight": 0.4, "params": {"cap": 3}}, "finish": {"weight": 0.2}, "format": {"weight": 0.1}}
    cfg = RewardsConfig.model_validate(apply_parl_defaults(raw, total_steps=200))
    w0, w100, w200, w999 = (cfg.weights_at(s) for s in (0, 100, 200, 999))
    assert (w0["instantiation"], w100["instantiation"], w200["instantiation"], w999["instantiation"]) == (0.4, 0.2, 0.0, 0.0)
    assert (w0["finish"], w100["finish"], w200["finish"]) == (0.2, 0.1, 0.0)
    assert w0["format"] == w200["format"] == 0.1  # only the PARL terms anneal by default
    assert w0["outcome"] == w200["outcome"] == 1.0
    assert dict(cfg.items())["instantiation"].params == {"cap": 3}
    assert raw["instantiation"]["weight"] == 0.4  # the input is not modified


def test_explicit_parl_schedules_are_kept():
    raw = {"instantiation": {"weight": {"kind": "constant", "value": 0.4}}, "finish": {"weight": {"kind": "step", "before": 0.3, "after": 0.0, "at": 50}}}
    cfg = RewardsConfig.model_validate(apply_parl_defaults(raw, total_steps=200))
    assert cfg.weights_at(10_000)["instantiation"] == 0.4
    assert cfg.weights_at(49)["finish"] == 0.3


def test_parl_defaults_through_the_experiment_config(tmp_path):
    from rl.config import load_config

    p = tmp_path / "e.yaml"
    p.write_text("policy: {}\nenv: {name: math}\ntrain: {steps: 100}\nrewards: {outcome: {weight: 1.0}, instantiation: {weight: 0.3}}\n")
    cfg = load_config(p)
    assert [cfg.rewards.weights_at(s)["instantiation"] for s in (0, 50, 100)] == pytest.approx([0.3, 0.15, 0.0])


@pytest.mark.parametrize(
    "section, needle",
    [
        ("{outcome: {weight: 1.0}, formt: {weight: 0.1}}", "rewards.*formt.*Did you mean 'format'"),
        ("{outcome: {weight: {kind: linear, start: 1, end: 0, start_step: -2, end_step: 5}}}", r"rewards\.outcome\.weight\.linear\.start_step"),
        ("{outcome: {params: {}}}", r"rewards\.outcome\.weight"),
    ],
)
def test_bad_rewards_through_the_experiment_config_name_the_key(tmp_path, section, needle):
    from rl.config import ConfigError, load_config

    p = tmp_path / "e.yaml"
    p.write_text(f"policy: {{}}\nenv: {{name: math}}\nrewards: {section}\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(p)
