"""The SFT cache key follows the settings and the demonstrations."""

from __future__ import annotations

from envs.math import MathEnv
from rl.config import validate_config
from rl.sft import sft_cache_dir


def cfg(**sft):
    return validate_config({"policy": {}, "env": {"name": "math"}, "sft": sft})


def test_cache_key_changes_with_settings_and_with_the_generated_data(monkeypatch):
    env = MathEnv()
    base = sft_cache_dir(cfg(), env)
    assert sft_cache_dir(cfg(), MathEnv()) == base
    assert sft_cache_dir(cfg(lr=5e-4), env) != base
    monkeypatch.setattr(MathEnv, "oracle", lambda self, task: task.payload["answer"] + " ")
    assert sft_cache_dir(cfg(), MathEnv()) != base


def test_sft_seed_keeps_one_bootstrap_across_run_seeds():
    env = MathEnv()
    base = sft_cache_dir(cfg(), env)  # run.seed 0, sft.seed empty: the bootstrap seed is the run's
    assert sft_cache_dir(cfg(seed=0), env) == base
    fixed = validate_config({"policy": {}, "env": {"name": "math"}, "sft": {"seed": 0}, "run": {"seed": 3}})
    assert fixed.sft_seed == 0 and sft_cache_dir(fixed, env) == base
    follows = validate_config({"policy": {}, "env": {"name": "math"}, "run": {"seed": 3}})
    assert follows.sft_seed == 3 and sft_cache_dir(follows, env) != base
