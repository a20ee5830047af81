"""benchmarks/vs_trl.py compares swarmrl and TRL on one settings block: both configs are derived from
it, and `check_same_settings` refuses to run when they disagree or when a swarmrl extra (partial
credit, entropy bonus, level weights, weight average, dynamic sampling, an lr schedule...) is on.
These tests build the configs the way the benchmark does (no training), so a change to
experiments/quickstart.yaml that leaks into the benchmark fails here."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("vs_trl", ROOT / "benchmarks" / "vs_trl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_trl"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


vs_trl = _load_benchmark()


@pytest.fixture
def args(tmp_path):
    # the benchmark's defaults (`main`'s argparse), 15 steps as in the docs
    return argparse.Namespace(steps=15, tasks_per_step=32, group_size=8, max_new_tokens=6, temperature=1.0, lr=1e-4, runs_dir=str(tmp_path))


def _trl_kwargs(args):
    s = vs_trl.settings_from_args(args)
    return vs_trl.trl_arguments(s, steps=args.steps, seed=vs_trl._config(args).run.seed, output_dir=str(Path(args.runs_dir) / "trl"))


@pytest.mark.parametrize("row", vs_trl.ROWS)
def test_every_row_says_what_trl_says(args, row):
    cfg = vs_trl._config(args, row)
    vs_trl.check_same_settings(cfg, _trl_kwargs(args), "swarmrl" if row == "trl" else row)


def test_the_block_is_what_the_docs_say(args):
    cfg = vs_trl._config(args)
    assert {name: (c.weight.value, c.params) for name, c in cfg.rewards.items()} == {"outcome": (1.0, {})}
    a, o = cfg.algorithm, cfg.optimizer
    assert (a.loss_agg, a.clip_low, a.clip_high, a.advantage, a.kl_coef, a.entropy_coef, a.dynamic_sampling) == ("token_mean", 0.2, 0.28, "grpo", 0.0, 0.0, False)
    assert (o.name, o.adamw_lr, o.schedule, o.warmup_steps, tuple(o.betas)) == ("adamw", 1e-4, "constant", 0, (0.9, 0.95))
    assert (cfg.env.level_weights, cfg.train.eval_ema, cfg.learner.precision, cfg.rollout.max_staleness) == (None, None, "fp32", 0)


def test_rows_differ_only_in_what_they_declare(args):
    base = vs_trl._config(args, "swarmrl").model_dump()
    for row in ("swarmrl-async", "swarmrl-muonclip"):
        other = vs_trl._config(args, row).model_dump()
        changed = {f"{sec}.{k}" for sec in base for k in base[sec] if isinstance(base[sec], dict) and base[sec][k] != other[sec][k]}
        assert changed - {"run.name"} == set(vs_trl.ROW_DIFFERENCES[row]), row


@pytest.mark.parametrize(
    "override, key",
    [
        ("algorithm.entropy_coef=0.01", "algorithm.entropy_coef"),
        ("rewards.format.weight=0.2", "rewards.format"),
        ("rewards.outcome.params.partial_credit=true", "rewards.outcome.params.partial_credit"),
        ("rewards.outcome.weight=2.0", "rewards.outcome.weight"),
        ("algorithm.kl_coef=0.01", "algorithm.kl_coef"),
        ("env.level_weights={1: 0.5}", "env.level_weights"),
        ("train.eval_ema=0.98", "train.eval_ema"),
        ("algorithm.dynamic_sampling=true", "algorithm.dynamic_sampling"),
        ("optimizer.schedule=cosine", "optimizer.schedule"),
        ("optimizer.warmup_steps=50", "optimizer.warmup_steps"),
        ("optimizer.adamw_lr=3e-4", "optimizer.adamw_lr"),
        ("algorithm.clip_high=0.3", "algorithm.clip_high"),
        ("learner.precision=bf16", "learner.precision"),
        ("rollout.max_staleness=1", "rollout.max_staleness"),
    ],
)
def test_a_swarmrl_extra_is_refused_by_name(args, override, key):
    cfg = vs_trl._config(args, "swarmrl", extra=[override])
    with pytest.raises(vs_trl.SettingsMismatch, match=key.replace(".", r"\.")):
        vs_trl.check_same_settings(cfg, _trl_kwargs(args), "swarmrl")


def test_the_quickstart_itself_fails_the_check(args):
    """What the benchmark measured before the settings block: the quickstart's RL settings as they are."""
    from rl.config import load_config

    cfg = load_config(ROOT / "experiments" / "quickstart.yaml", [f"run.runs_dir={args.runs_dir}"])
    with pytest.raises(vs_trl.SettingsMismatch) as err:
        vs_trl.check_same_settings(cfg, _trl_kwargs(args), "swarmrl")
    for key in ("rewards.outcome.params.partial_credit", "algorithm.entropy_coef", "env.level_weights", "train.eval_ema", "algorithm.dynamic_sampling", "optimizer.schedule", "optimizer.name"):
        assert key in str(err.value), key


def test_a_trl_side_change_is_refused(args):
    kwargs = {**_trl_kwargs(args), "loss_type": "grpo", "top_entropy_quantile": 0.2}
    with pytest.raises(vs_trl.SettingsMismatch) as err:
        vs_trl.check_same_settings(vs_trl._config(args), kwargs, "swarmrl")
    assert "algorithm.loss_agg" in str(err.value) and "top_entropy_quantile" in str(err.value)


@pytest.mark.slow
def test_trl_grpo_config_object_passes(args):
    """TRL's own `GRPOConfig` (its defaults and post-init included), as the benchmark checks it (importing TRL takes ~10-25 s)."""
    grpo = vs_trl._trl_config(args, seed=vs_trl._config(args).run.seed)
    for row in vs_trl.ROWS:
        vs_trl.check_same_settings(vs_trl._config(args, row), grpo, "swarmrl" if row == "trl" else row)
