"""LR schedules: factors by progress, progress by steps or time, and the learner's base lrs."""

from __future__ import annotations

import math

import pytest

from policies.model import build_policy
from rl.config import ConfigError, validate_config
from rl.learner import Learner
from rl.optim.schedule import lr_factor, run_progress


def test_decay_shapes():
    assert lr_factor("constant", 0.7, 10) == 1.0
    assert lr_factor("linear", 0.0, 1) == 1.0
    assert lr_factor("linear", 0.25, 5) == pytest.approx(0.75)
    assert lr_factor("linear", 1.0, 9) == 0.0
    assert lr_factor("cosine", 0.5, 5) == pytest.approx(0.5)
    assert lr_factor("cosine", 0.25, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor("cosine", 1.0, 5) == pytest.approx(0.0)


def test_min_ratio_is_the_floor_of_the_decay():
    assert lr_factor("linear", 1.0, 100, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 0.5, 100, min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor("constant", 1.0, 100, min_ratio=0.2) == 1.0


def test_warmup_ramps_then_hands_over():
    assert [lr_factor("constant", 0.0, s, warmup_steps=4) for s in (1, 2, 3, 4, 5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    # warm-up and decay multiply: at step 2 of 4 warm-up steps, half of the decayed value
    assert lr_factor("linear", 0.5, 2, warmup_steps=4) == pytest.approx(0.25)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="'step'"):
        lr_factor("step", 0.5, 1)


def test_progress_is_the_larger_of_steps_and_time():
    assert run_progress(25, 100, 0.0, None) == 0.25
    assert run_progress(25, 100, 300.0, 10.0) == 0.5  # 5 of 10 minutes spent
    assert run_progress(75, 100, 300.0, 10.0) == 0.75
    assert run_progress(10, 100, 900.0, 10.0) == 1.0  # past the time cap: clamped
    assert run_progress(0, 100, 0.0, 10.0) == 0.0


def test_config_rejects_a_bad_schedule():
    base = {"policy": {}, "env": {"name": "math"}}
    with pytest.raises(ConfigError, match="optimizer.schedule"):
        validate_config({**base, "optimizer": {"schedule": "exponential"}})
    with pytest.raises(ConfigError, match="optimizer.min_lr_ratio"):
        validate_config({**base, "optimizer": {"min_lr_ratio": 1.5}})


@pytest.mark.parametrize("name", ["muonclip", "adamw"])
def test_learner_scales_every_group_from_the_configured_lrs(name):
    cfg = validate_config(
        {
            "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "head_dim": 32, "intermediate_size": 64},
            "env": {"name": "math"},
            "optimizer": {"name": name, "lr": 1e-3, "adamw_lr": 3e-4},
        }
    )
    model, _ = build_policy(cfg.policy, seed=0)
    learner = Learner.from_config(model, cfg)
    configured = [g["lr"] for g in learner.optimizer.param_groups]
    assert sorted(set(configured)) == ([3e-4, 1e-3] if name == "muonclip" else [3e-4])
    learner.set_lr_factor(0.25)
    assert [g["lr"] for g in learner.optimizer.param_groups] == pytest.approx([0.25 * lr for lr in configured])

    # a checkpoint holds the scaled lrs; a learner restored from it still scales the configured ones
    state = learner.optimizer.state_dict()
    restored = Learner.from_config(build_policy(cfg.policy, seed=0)[0], cfg)
    restored.optimizer.load_state_dict(state)
    assert [g["lr"] for g in restored.optimizer.param_groups] == pytest.approx([0.25 * lr for lr in configured])
    restored.set_lr_factor(0.5)
    assert [g["lr"] for g in restored.optimizer.param_groups] == pytest.approx([0.5 * lr for lr in configured])


def test_learner_follows_the_configured_schedule():
    cfg = validate_config(
        {
            "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "head_dim": 32, "intermediate_size": 64},
            "env": {"name": "math"},
            "optimizer": {"lr": 1e-3, "adamw_lr": 1e-4, "schedule": "linear", "warmup_steps": 10, "min_lr_ratio": 0.2},
        }
    )
    learner = Learner.from_config(build_policy(cfg.policy, seed=0)[0], cfg)
    configured = list(learner.base_lrs)
    assert learner.schedule_lr(5, 0.0) == pytest.approx(0.5)  # half-way through the warm-up
    assert learner.schedule_lr(50, 0.5) == pytest.approx(0.2 + 0.8 * 0.5)
    assert learner.schedule_lr(100, 1.0) == pytest.approx(0.2)
    assert [g["lr"] for g in learner.optimizer.param_groups] == pytest.approx([0.2 * lr for lr in configured])
