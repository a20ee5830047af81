"""swarmrl against TRL's `GRPOTrainer`: same tiny model, same math task, same settings, this machine.

  python benchmarks/vs_trl.py                     # 30 steps per row
  python benchmarks/vs_trl.py --steps 100         # longer runs
  python benchmarks/vs_trl.py --rows trl,swarmrl  # a subset of the rows

Both trainers start from the same SFT checkpoint of the quickstart policy (`experiments/
quickstart.yaml`: tiny Llama, character tokenizer, math levels 1-3 in fixed width; `rl.sft.run_sft`,
cached) and train on the same tasks (step s uses the tasks swarmrl samples for step s, fed to TRL
in that order with shuffling off). Everything else comes from ONE settings block, `Settings` below,
from which both the swarmrl overrides (`swarmrl_overrides`) and TRL's `GRPOConfig` arguments
(`trl_arguments`) are derived: reward = the env verifier's outcome only (1 when the answer is
correct, weight 1, no partial or format credit), token-mean loss, clip 0.2 / 0.28, group-std
advantages, one pass and one optimizer step per generation batch, AdamW at a constant learning
rate without warm-up, betas (0.9, 0.95), no weight decay, gradient clip 1, no KL term, no entropy
bonus, dynamic sampling off (TRL trains every row), levels equally often, no weight average, fp32,
and the same group size, tasks per step, completion length, temperature and number of steps. The
quickstart's RL extras (partial credit, entropy bonus, level weights, `train.eval_ema`, dynamic
sampling, the MuonClip optimizer and its lr schedule) are all overridden. Before any row runs,
`check_same_settings` asserts that the swarmrl `ExperimentConfig` of every row and TRL's
`GRPOConfig` say the same on every field of the block and that no swarmrl extra is on; it raises
naming the offending keys (tests/test_vs_trl_settings.py keeps it from drifting with the
quickstart). Rows (what each changes against the block, `ROW_DIFFERENCES`):

  trl              TRL GRPOTrainer (transformers `generate` in the training process), AdamW
  swarmrl          swarmrl, AdamW, synchronous rollouts (rollout.max_staleness=0): nothing changed
  swarmrl-async    swarmrl, AdamW, rollout.max_staleness=1: only the rollouts' timing
  swarmrl-muonclip swarmrl with MuonClip (the quickstart's lr 7e-4 / adamw_lr 2.8e-4, constant) in
                   place of AdamW: only the optimizer, synchronous rollouts

Each row runs in a fresh subprocess; the parent samples the resident memory of that process and
all its descendants (swarmrl: the driver, the Ray services and the rollout workers) and keeps the
peak. samples/s = completions trained on / RL wall time (setup, Ray start and evaluations
excluded). Held-out pass@1 is measured afterwards for every row by the same function: one sample
per held-out task from the trained weights, same tasks, same temperature, same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = ("trl", "swarmrl", "swarmrl-async", "swarmrl-muonclip")


@dataclass(frozen=True)
class Settings:
    """The one settings block both trainers are built from (`swarmrl_overrides`, `trl_arguments`);
    `check_same_settings` asserts, before any row runs, that the two configs say the same on every
    field and that none of swarmrl's extras is on. The quickstart supplies only the model, the
    tokenizer, the env (math levels 1-3, fixed width) and the SFT bootstrap."""

    group_size: int = 8  # completions per task (TRL: num_generations)
    tasks_per_step: int = 32  # one optimizer step per generation batch of tasks_per_step x group_size
    max_new_tokens: int = 6
    temperature: float = 1.0
    top_p: float = 1.0
    reward: str = "outcome"  # the env verifier's outcome only: 1 when the answer is correct, weight 1, no partial/format credit
    loss_agg: str = "token_mean"  # TRL: loss_type "dapo" (token-mean over the batch)
    clip_low: float = 0.2
    clip_high: float = 0.28
    advantage: str = "grpo"  # group-std advantages (TRL: scale_rewards "group")
    epochs: int = 1  # passes over each batch (TRL: num_iterations)
    lr: float = 1e-4  # AdamW
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    kl_coef: float = 0.0  # no KL term, no reference model (TRL: beta)
    entropy_coef: float = 0.0  # no entropy bonus
    dynamic_sampling: bool = False  # TRL trains every row, zero-advantage groups included
    level_weights: None = None  # levels equally often
    eval_ema: None = None  # no weight average
    precision: str = "fp32"
    # the swarmrl-muonclip row only: its optimizer (the quickstart's learning rates, at the constant schedule above)
    muonclip_lr: float = 7e-4
    muonclip_adamw_lr: float = 2.8e-4


# What a row changes against the settings block, besides nothing (the check allows these keys to differ).
ROW_DIFFERENCES = {
    "trl": (),
    "swarmrl": (),
    "swarmrl-async": ("rollout.max_staleness",),  # 1: the batch of step t+1 is generated while step t trains
    "swarmrl-muonclip": ("optimizer.name", "optimizer.lr", "optimizer.adamw_lr"),  # MuonClip instead of AdamW, nothing else
}


def settings_from_args(args) -> Settings:
    return Settings(
        group_size=args.group_size,
        tasks_per_step=args.tasks_per_step,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        lr=args.lr,
    )


def swarmrl_overrides(s: Settings, row: str = "swarmrl") -> list[str]:
    """The settings block as `load_config` overrides of experiments/quickstart.yaml (every RL key the
    quickstart sets is overridden: rewards, algorithm, optimizer, level weights, weight average)."""
    o = [
        f"rewards={{{s.reward}: {{weight: 1.0}}}}",  # replaces the quickstart's rewards (partial credit) wholesale
        f"rollout.group_size={s.group_size}",
        f"rollout.max_new_tokens={s.max_new_tokens}",
        f"rollout.temperature={s.temperature}",
        f"rollout.top_p={s.top_p}",
        f"rollout.max_staleness={1 if row == 'swarmrl-async' else 0}",
        f"train.tasks_per_step={s.tasks_per_step}",
        "train.eval_ema=null",
        "env.level_weights=null",
        f"algorithm.advantage={s.advantage}",
        f"algorithm.loss_agg={s.loss_agg}",
        f"algorithm.clip_low={s.clip_low}",
        f"algorithm.clip_high={s.clip_high}",
        f"algorithm.kl_coef={s.kl_coef}",
        f"algorithm.entropy_coef={s.entropy_coef}",
        f"algorithm.dynamic_sampling={str(s.dynamic_sampling).lower()}",
        f"algorithm.epochs={s.epochs}",
        "algorithm.minibatch_size=0",  # the whole batch is one optimizer step
        "algorithm.tis_cap=null",
        "algorithm.verdict_credit=false",
        f"optimizer.schedule={s.lr_schedule}",
        f"optimizer.warmup_steps={s.warmup_steps}",
        f"optimizer.betas=[{s.betas[0]}, {s.betas[1]}]",
        f"optimizer.weight_decay={s.weight_decay}",
        f"optimizer.grad_clip={s.grad_clip}",
        f"learner.precision={s.precision}",
    ]
    if row == "swarmrl-muonclip":
        o += ["optimizer.name=muonclip", f"optimizer.lr={s.muonclip_lr}", f"optimizer.adamw_lr={s.muonclip_adamw_lr}"]
    else:
        o += ["optimizer.name=adamw", f"optimizer.adamw_lr={s.lr}", f"optimizer.lr={s.lr}"]
    return o


def trl_arguments(s: Settings, *, steps: int, seed: int, output_dir: str) -> dict:
    """The settings block as TRL `GRPOConfig` keyword arguments."""
    assert s.reward == "outcome" and s.loss_agg == "token_mean" and s.advantage == "grpo" and s.precision == "fp32"
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=s.tasks_per_step * s.group_size,  # one optimizer step per generation batch, as swarmrl
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=s.epochs,
        num_generations=s.group_size,
        max_completion_length=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=0,
        learning_rate=s.lr,
        lr_scheduler_type=s.lr_schedule,
        warmup_steps=s.warmup_steps,
        adam_beta1=s.betas[0],
        adam_beta2=s.betas[1],
        weight_decay=s.weight_decay,
        max_grad_norm=s.grad_clip,
        beta=s.kl_coef,
        epsilon=s.clip_low,
        epsilon_high=s.clip_high,
        loss_type="dapo",  # token-mean over the batch: swarmrl's `token_mean`
        scale_rewards="group",  # group-std advantages: swarmrl's `grpo`
        shuffle_dataset=False,
        use_vllm=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


# TRL 1.16's defaults of the `GRPOConfig` fields `trl_arguments` leaves out and the check reads
# (an object is read as it is; `TRL_OPTIONAL` fields may be missing from it in some TRL versions)
TRL_DEFAULTS = {
    "reward_weights": None,
    "top_entropy_quantile": 1.0,
    "mask_truncated_completions": False,
    "importance_sampling_level": "token",
    "delta": None,
    "warmup_ratio": 0.0,
}
TRL_OPTIONAL = {"warmup_ratio"}


class SettingsMismatch(ValueError):
    """The swarmrl and TRL configs of the benchmark do not say the same thing (or a swarmrl extra is on)."""


def check_same_settings(cfg, grpo, row: str = "swarmrl") -> None:
    """Raise `SettingsMismatch` naming every key where the swarmrl `ExperimentConfig` of `row` and
    TRL's `GRPOConfig` (an object or its keyword arguments) differ, or where a swarmrl extra that TRL
    has no counterpart of is on. The keys a row declares in `ROW_DIFFERENCES` may differ."""
    def g(key: str):
        if isinstance(grpo, dict):  # keyword arguments: what they leave out is TRL's default
            return grpo[key] if key in grpo else TRL_DEFAULTS[key]
        return getattr(grpo, key) if key not in TRL_OPTIONAL else getattr(grpo, key, TRL_DEFAULTS[key])

    allowed = set(ROW_DIFFERENCES[row])
    bad: list[str] = []

    def same(key: str, ours, theirs, what: str = "") -> None:
        if key not in allowed and ours != theirs:
            bad.append(f"{key}: swarmrl {ours!r} vs TRL {theirs!r}{' (' + what + ')' if what else ''}")

    def off(key: str, value, ok) -> None:
        if key not in allowed and value != ok:
            bad.append(f"{key}: {value!r} is a swarmrl extra TRL's row does not have (must be {ok!r})")

    a, o, r = cfg.algorithm, cfg.optimizer, cfg.rollout
    per_step = cfg.train.tasks_per_step * r.group_size
    # the batch, the sampler
    same("rollout.group_size", r.group_size, g("num_generations"), "num_generations")
    same("train.tasks_per_step", per_step, g("per_device_train_batch_size") * g("gradient_accumulation_steps"), "completions per optimizer step")
    same("train.tasks_per_step", 1, g("steps_per_generation"), "TRL steps_per_generation: one optimizer step per generation batch")
    same("rollout.max_new_tokens", r.max_new_tokens, g("max_completion_length"), "max_completion_length")
    same("rollout.temperature", r.temperature, g("temperature"))
    same("rollout.top_p", r.top_p, g("top_p"))
    same("algorithm.epochs", a.epochs, g("num_iterations"), "num_iterations")
    off("algorithm.minibatch_size", a.minibatch_size if a.minibatch_size not in (0, per_step) else 0, 0)
    off("rollout.max_staleness", r.max_staleness, 0)
    same("run.seed", cfg.run.seed, g("seed"))
    same("rollout.shuffle", False, g("shuffle_dataset"), "TRL must see the tasks in swarmrl's order")
    # the reward: the verifier's outcome, nothing else
    weights = {name: c.weight for name, c in cfg.rewards.items()}
    if "outcome" not in weights:
        bad.append("rewards.outcome: missing (the reward is the env verifier's outcome)")
    for name, comp in cfg.rewards.items():
        kind = getattr(comp.weight, "kind", None)
        value = getattr(comp.weight, "value", None)
        if name == "outcome":
            if kind != "constant" or value != 1.0:
                bad.append(f"rewards.outcome.weight: {comp.weight!r}, must be the constant 1.0")
            if comp.params.get("partial_credit"):
                bad.append("rewards.outcome.params.partial_credit: true is a swarmrl extra (TRL's reward is 1 for a correct answer, else 0)")
        elif not (kind == "constant" and value == 0):
            bad.append(f"rewards.{name}: weight {comp.weight!r} is a swarmrl extra (only the outcome reward counts)")
    reward_weights = g("reward_weights")
    if reward_weights not in (None, [1.0]):
        bad.append(f"reward_weights: TRL {reward_weights!r}, must be None or [1.0]")
    # the loss and the advantages
    same("algorithm.loss_agg", a.loss_agg, {"dapo": "token_mean"}.get(g("loss_type"), g("loss_type")), "TRL loss_type dapo is token_mean")
    same("algorithm.clip_low", a.clip_low, g("epsilon"), "epsilon")
    same("algorithm.clip_high", a.clip_high, g("epsilon_high"), "epsilon_high")
    same("algorithm.advantage", a.advantage, {"group": "grpo", True: "grpo"}.get(g("scale_rewards"), g("scale_rewards")), "TRL scale_rewards group is grpo")
    same("algorithm.kl_coef", a.kl_coef, g("beta"), "beta")
    off("algorithm.kl_coef", a.kl_coef, 0.0)
    off("algorithm.entropy_coef", a.entropy_coef, 0.0)
    off("algorithm.dynamic_sampling", a.dynamic_sampling, False)
    off("algorithm.tis_cap", a.tis_cap, None)
    off("algorithm.verdict_credit", a.verdict_credit, False)
    # TRL's own extras
    for key, ok in (("top_entropy_quantile", 1.0), ("mask_truncated_completions", False), ("importance_sampling_level", "token"), ("delta", None), ("use_vllm", False)):
        if g(key) != ok:
            bad.append(f"{key}: TRL {g(key)!r}, must be {ok!r} (swarmrl has no such setting on)")
    # the optimizer
    same("optimizer.name", o.name, "adamw", "TRL optimizes with AdamW")
    same("optimizer.adamw_lr", o.adamw_lr, g("learning_rate"), "learning_rate")
    same("optimizer.lr", o.lr, g("learning_rate"), "learning_rate")
    same("optimizer.schedule", o.schedule, g("lr_scheduler_type").value if hasattr(g("lr_scheduler_type"), "value") else g("lr_scheduler_type"), "lr_scheduler_type")
    off("optimizer.schedule", o.schedule, "constant")
    same("optimizer.warmup_steps", o.warmup_steps, g("warmup_steps"))
    off("optimizer.warmup_steps", o.warmup_steps, 0)
    if g("warmup_ratio") not in (0, 0.0, None):
        bad.append(f"warmup_ratio: TRL {g('warmup_ratio')!r}, must be 0")  # (older TRL versions)
    same("optimizer.betas", tuple(o.betas), (g("adam_beta1"), g("adam_beta2")), "adam_beta1/adam_beta2")
    same("optimizer.weight_decay", o.weight_decay, g("weight_decay"))
    same("optimizer.grad_clip", o.grad_clip, g("max_grad_norm"), "max_grad_norm")
    # precision, and what else the quickstart turns on
    same("learner.precision", cfg.learner.precision, "bf16" if g("bf16") else "fp16" if g("fp16") else "fp32", "TRL bf16/fp16")
    off("learner.precision", cfg.learner.precision, "fp32")
    lw = cfg.env.level_weights
    off("env.level_weights", None if not lw or all(w == 1 for w in lw.values()) else lw, None)
    off("train.eval_ema", cfg.train.eval_ema, None)
    off("policy.lora", cfg.policy.lora, None)
    if bad:
        raise SettingsMismatch(f"vs_trl row {row}: the swarmrl and TRL settings differ:\n  " + "\n  ".join(bad))


def _config(args, row: str = "swarmrl", extra: list[str] | None = None):
    """The swarmrl `ExperimentConfig` of `row`: the quickstart's model and env, the settings block for the rest."""
    from rl.config import load_config

    overrides = [
        f"run.runs_dir={args.runs_dir}",
        f"run.name=vs-trl-{row}",
        f"train.steps={args.steps}",
        "train.eval_every=0",
        "train.eval_samples=1",
        "train.max_minutes=100000",
        "checkpoint.every=0",
        "tracking.progress=false",
        *swarmrl_overrides(settings_from_args(args), row),
        *(extra or []),
    ]
    return load_config(REPO / "experiments" / "quickstart.yaml", overrides)


def _trl_config(args, seed: int):
    from trl import GRPOConfig

    return GRPOConfig(**trl_arguments(settings_from_args(args), steps=args.steps, seed=seed, output_dir=str(Path(args.runs_dir) / "vs-trl-trl")))


def _env(cfg):
    from envs.registry import env_kwargs, make_env

    return make_env(cfg.env.name, **env_kwargs(cfg))


def _step_tasks(cfg, env, step: int):
    """The tasks of one step, exactly as the swarmrl trainer samples them."""
    import numpy as np

    return env.sample(cfg.train.tasks_per_step, np.random.default_rng([cfg.run.seed, step]))


def heldout(model, tokenizer, env, args) -> float:
    """pass@1 over `args.eval_size` held-out tasks, one sample each (the same for every row)."""
    import torch

    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine

    tasks = env.eval_tasks(args.eval_size)
    prompts = [tokenizer(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks]
    engine = HFEngine(model.eval(), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=256)
    with torch.no_grad():
        completions = engine.generate(prompts, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.eval_temperature), seed=4242)
    texts = [tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in completions]
    return sum(env.verify(t, x).passed for t, x in zip(tasks, texts)) / len(tasks)


def run_trl(args, sft_path: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import GRPOTrainer

    from policies.model import load_model
    from policies.tokenizer import load_tokenizer

    hf_logging.set_verbosity_error()
    cfg = _config(args, "trl")
    env = _env(cfg)
    tasks = [t for s in range(1, args.steps + 1) for t in _step_tasks(cfg, env, s)]
    by_id = {t.id: t for t in tasks}
    data = Dataset.from_list([{"prompt": t.prompt, "task_id": t.id} for t in tasks])

    def outcome(prompts, completions, task_id, **_):
        return [float(env.verify(by_id[i], c).passed) for i, c in zip(task_id, completions)]

    per_step = args.tasks_per_step * args.group_size
    gargs = _trl_config(args, cfg.run.seed)
    check_same_settings(_config(args, "swarmrl"), gargs, "swarmrl")
    model, tokenizer = load_model(sft_path), load_tokenizer(sft_path)
    trainer = GRPOTrainer(model=model, reward_funcs=[outcome], args=gargs, train_dataset=data, processing_class=tokenizer)
    t0 = time.perf_counter()
    trainer.train()
    rl_s = time.perf_counter() - t0
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    torch.set_grad_enabled(False)
    return {"samples": per_step * args.steps, "rl_s": rl_s, "rewards": rewards, "pass_at_1": heldout(trainer.model, tokenizer, env, args)}


def run_swarmrl(args, row: str, sft_path: Path) -> dict:
    import pyarrow.parquet as pq
    import torch
    from mlflow.tracking import MlflowClient

    from policies.model import load_model
    from policies.tokenizer import load_tokenizer
    from rl.tracking import default_uri
    from rl.trainer import train

    cfg = _config(args, row)
    run_dir = Path(args.runs_dir) / f"vs-trl-{row}-{int(time.time())}"
    train(cfg, run_dir)
    client = MlflowClient(cfg.tracking.uri or default_uri(cfg.run.runs_dir))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    wall = {m.step: m.value for m in client.get_metric_history(run_id, "time/rl_wall_s")}
    rewards = [float(pq.read_table(run_dir / "episodes" / f"step_{s:06d}.parquet").column("reward").to_numpy().mean()) for s in range(1, args.steps + 1)]
    model = load_model(sft_path)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / f"step_{args.steps:06d}" / "model.pt", weights_only=True))
    env = _env(cfg)
    return {
        "samples": args.tasks_per_step * args.group_size * args.steps,
        "rl_s": wall[max(wall)],
        "rewards": rewards,
        "pass_at_1": heldout(model, load_tokenizer(sft_path), env, args),
        "run_dir": str(run_dir),
    }


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure_row(args, row: str, sft_path: Path) -> dict:
    """Run one row in a fresh subprocess and sample its process tree's RSS until it exits."""
    out = Path(args.runs_dir) / f"vs-trl-{row}.json"
    cmd = [sys.executable, __file__, "--row", row, "--sft-path", str(sft_path), "--out", str(out), *sys.argv[1:]]
    child = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)})
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(child.pid))
        time.sleep(0.2)
    if child.returncode != 0:
        raise SystemExit(f"row {row} failed with exit code {child.returncode}")
    return {**json.loads(out.read_text()), "peak_rss_mib": peak / 2**20}


def table(results: dict[str, dict], args, start_pass: float) -> str:
    base = results.get("trl")
    k = max(1, min(5, args.steps // 3))
    lines = [
        f"{args.steps} steps x {args.tasks_per_step} tasks x {args.group_size} completions, {args.max_new_tokens} new tokens, "
        f"lr {args.lr}, held-out pass@1 on {args.eval_size} tasks (SFT start: {start_pass:.1%})",
        "",
        f"| row | samples/s | step time (s) | peak RSS (MiB) | train reward, first {k} -> last {k} steps | held-out pass@1 | samples/s vs TRL |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, r in results.items():
        sps = r["samples"] / r["rl_s"]
        ratio = f"{sps / (base['samples'] / base['rl_s']):.2f}x" if base else "-"
        first, last = sum(r["rewards"][:k]) / k, sum(r["rewards"][-k:]) / k
        lines.append(
            f"| {row} | {sps:.1f} | {r['rl_s'] / args.steps:.2f} | {r['peak_rss_mib']:.0f} | {first:.3f} -> {last:.3f} | {r['pass_at_1']:.1%} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--tasks-per-step", type=int, default=32)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=6)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of the trl/swarmrl/swarmrl-async rows")
    p.add_argument("--eval-size", type=int, default=256)
    p.add_argument("--eval-temperature", type=float, default=1.0)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "bench-vs-trl"))
    p.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row in this process
    p.add_argument("--sft-path", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.runs_dir = str(Path(args.runs_dir).resolve())

    if args.row:
        sft = Path(args.sft_path)
        result = run_trl(args, sft) if args.row == "trl" else run_swarmrl(args, args.row, sft)
        Path(args.out).write_text(json.dumps(result))
        return

    from policies.model import load_model
    from policies.tokenizer import load_tokenizer
    from rl.sft import run_sft

    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)}; choose from {list(ROWS)}")
    settings = settings_from_args(args)
    print("settings:", json.dumps(asdict(settings)), flush=True)
    grpo = _trl_config(args, seed=_config(args).run.seed)
    for row in rows:  # every row against TRL's config, before anything trains
        check_same_settings(_config(args, row), grpo, row if row != "trl" else "swarmrl")
    cfg = _config(args)
    env = _env(cfg)
    sft_path = run_sft(cfg, env)
    start_pass = heldout(load_model(sft_path), load_tokenizer(sft_path), env, args)
    results = {}
    for row in rows:
        print(f"--- {row}", flush=True)
        results[row] = measure_row(args, row, sft_path)
    print()
    print(table(results, args, start_pass))


if __name__ == "__main__":
    main()
