"""swarmrl against TRL's `GRPOTrainer`: same tiny model, same math task, same settings, this machine.

  python benchmarks/vs_trl.py                     # 30 steps per row (TRL takes ~15 s a step here)
  python benchmarks/vs_trl.py --steps 100         # longer runs
  python benchmarks/vs_trl.py --rows trl,swarmrl  # a subset of the rows

Both trainers start from the same SFT checkpoint of the quickstart policy (`experiments/
quickstart.yaml`: tiny Llama, character tokenizer; `rl.sft.run_sft`, cached) and train on the
same tasks (math levels 1-3; step s uses the tasks swarmrl samples for step s, fed to TRL in that
order with shuffling off), with the same group size, tasks per step, completion length, sampling
temperature, learning rate, AdamW betas, clip range (0.2 / 0.28), group-std advantages,
token-mean loss, no KL term, constant learning rate, fp32, one optimizer step per generation
batch, and the same number of steps. The reward is the env's verifier (1 when the answer is
correct) in both. Rows:

  trl              TRL GRPOTrainer (transformers `generate` in the training process), AdamW
  swarmrl          swarmrl, AdamW, synchronous rollouts (rollout.max_staleness=0)
  swarmrl-async    swarmrl, AdamW, rollout.max_staleness=1
  swarmrl-muonclip swarmrl, MuonClip (the quickstart optimizer settings), rollout.max_staleness=1

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = ("trl", "swarmrl", "swarmrl-async", "swarmrl-muonclip")


def _config(args, row: str = "swarmrl"):
    from rl.config import load_config

    overrides = [
        f"run.runs_dir={args.runs_dir}",
        f"run.name=vs-trl-{row}",
        f"train.steps={args.steps}",
        f"train.tasks_per_step={args.tasks_per_step}",
        "train.eval_every=0",
        "train.max_minutes=100000",
        f"rollout.group_size={args.group_size}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.temperature={args.temperature}",
        "checkpoint.every=0",
        "tracking.progress=false",
    ]
    if row == "swarmrl-muonclip":
        overrides += ["optimizer.name=muonclip", "rollout.max_staleness=1"]  # lr / adamw_lr: the quickstart's
    else:
        overrides += ["optimizer.name=adamw", f"optimizer.adamw_lr={args.lr}", f"optimizer.lr={args.lr}"]
    if row == "swarmrl-async":
        overrides.append("rollout.max_staleness=1")
    return load_config(REPO / "experiments" / "quickstart.yaml", overrides)


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
    from trl import GRPOConfig, GRPOTrainer

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
    gargs = GRPOConfig(
        output_dir=str(Path(args.runs_dir) / "vs-trl-trl"),
        max_steps=args.steps,
        per_device_train_batch_size=per_step,  # one optimizer step per generation batch, as swarmrl
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",  # token-mean over the batch: swarmrl's `token_mean`
        scale_rewards="group",
        shuffle_dataset=False,
        use_vllm=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=cfg.run.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
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
