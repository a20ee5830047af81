"""PARL benchmark: the trained PARL orchestrator vs the outcome-only baseline vs the SFT start.

  python benchmarks/parl.py                                  # train both experiments, then compare
  python benchmarks/parl.py --parl RUN_DIR --serial RUN_DIR  # compare finished runs
  python benchmarks/parl.py --parl RUN --serial RUN --width 16 --tasks 48 --latency 0.05

On held-out wide tasks (env `swarm`, one width, entities never seen in training), one greedy
episode per task and policy, sub-agents = the frozen SFT checkpoint for every policy. Prints
item F1, pass rate, mean critical steps, mean total steps, sub-agents and own tool calls per
episode, wall-clock per episode (the batch's time / its episodes) and each episode's latency
(its own start to end), and critical steps relative to the outcome-only baseline and to the
serial plan (N + 1).
`--latency` makes every tool call sleep (a slow tool), so that wall-clock reflects parallel stages.
The oracle rows are the demonstrations' own shape (serial: N + 1 critical steps; parallel: 4).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train(experiment: str, overrides: list[str]) -> Path:
    from rl.cli import main

    run_dir = REPO / "runs" / f"bench-{Path(experiment).stem}-{int(time.time())}"
    if main(["train", str(REPO / experiment), "--run-dir", str(run_dir), *overrides]) != 0:
        raise SystemExit(f"training {experiment} failed")
    return run_dir


def final_weights(run_dir: Path):
    import torch

    from rl.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise SystemExit(f"{run_dir}: no checkpoint")
    return torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)


def measure(name, state, workers, rollout, env, tasks, tokenizer, params, batch: int) -> dict:
    from envs.registry import verify_batch
    from rl.parl_metrics import parl_metrics
    from rollout.worker import push_weights

    push_weights(workers, state, version=0)
    t0 = time.perf_counter()
    episodes = []
    for k in range(0, len(tasks), batch):  # `batch` episodes at a time, so that each one's latency is its own path, not a queue
        episodes += rollout(workers, tasks[k : k + batch], tokenizer, params, group_size=1, seed=4242 + k, step=-1)
    wall = (time.perf_counter() - t0) / len(episodes)
    latency = sum(e.timings["latency_s"] for e in episodes) / len(episodes)
    verdicts = verify_batch(env, tasks, [e.completion_text for e in episodes])
    m = parl_metrics(episodes, prefix="")
    return {
        "policy": name,
        "item F1": sum(v.score for v in verdicts) / len(verdicts),
        "pass": sum(v.passed for v in verdicts) / len(verdicts),
        "critical": m["critical_steps"],
        "total": m["total_steps"],
        "sub-agents/ep": m["subagents"],
        "own tools/ep": m["own_tool_calls"],
        "wall s/ep": wall,
        "latency s": latency,
    }


def oracle_rows(env, tasks, latency: float) -> list[dict]:
    """The demonstrations' shapes. Their latency is their tool time alone (generation free): a
    lower bound, N sequential searches for the serial plan, one for the parallel one."""
    def turns(text: str) -> int:
        return sum(1 for line in text.splitlines() if not line.startswith(">"))

    n = len(tasks)
    serial = sum(turns(env.serial_transcript(t)) for t in tasks) / n
    sub = turns(env.subagent_transcript("age", tasks[0].payload["entities"][0])[1])
    par_crit = sum(turns(env.parallel_transcript(t)) + sub for t in tasks) / n
    par_total = sum(turns(env.parallel_transcript(t)) + sub * t.payload["level"] for t in tasks) / n
    width = tasks[0].payload["level"]
    base = {"item F1": 1.0, "pass": 1.0, "own tools/ep": None, "wall s/ep": None}
    return [
        {**base, "policy": "oracle serial", "critical": serial, "total": serial, "sub-agents/ep": 0.0, "own tools/ep": float(width), "latency s": width * latency},
        {**base, "policy": "oracle parallel", "critical": par_crit, "total": par_total, "sub-agents/ep": float(width), "own tools/ep": 0.0, "latency s": latency},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parl", type=Path, help="finished run of experiments/swarm_parl.yaml (default: train it)")
    ap.add_argument("--serial", type=Path, help="finished run of experiments/swarm_serial.yaml (default: train it)")
    ap.add_argument("--width", type=int, default=None, help="task width N of the held-out tasks (default: the widest trained level)")
    ap.add_argument("--tasks", type=int, default=48, help="held-out tasks")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds every tool call sleeps")
    ap.add_argument("--batch", type=int, default=8, help="episodes per rollout call (each episode's latency is measured inside its batch)")
    ap.add_argument("overrides", nargs="*", help="a.b=c overrides for the training runs")
    args = ap.parse_args()

    import ray

    from envs.registry import env_kwargs, make_env
    from policies.model import load_model
    from policies.tokenizer import load_tokenizer
    from rl.config import load_config
    from rl.rollout_choice import choose_rollout
    from rl.sft import run_sft
    from rollout.engines.base import SamplingParams
    from rollout.worker import spawn_workers

    parl_dir = args.parl or train("experiments/swarm_parl.yaml", args.overrides)
    serial_dir = args.serial or train("experiments/swarm_serial.yaml", args.overrides)
    trained = load_config(parl_dir / "config.yaml")
    sft_path = run_sft(trained, make_env("swarm", **env_kwargs(trained)))  # the SFT start, from the cache
    width = args.width or max(trained.env.levels)
    cfg = trained.model_copy(update={"env": trained.env.model_copy(update={"levels": [width], "eval_size": args.tasks})})
    env = make_env("swarm", **{**env_kwargs(cfg), "latency_s": args.latency})
    tasks = env.eval_tasks(args.tasks)
    sft_state = load_model(sft_path).state_dict()
    tokenizer = load_tokenizer(sft_path)

    # address="local": a fresh instance of our own, never another process's embedded one that happens to be running
    if ray.is_initialized():  # the training runs above left theirs up
        ray.shutdown()
    ray.init(address="local", num_cpus=cfg.cluster.num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    r = cfg.rollout
    workers = spawn_workers(r.num_workers, cfg.policy.model_copy(update={"path": str(sft_path), "tokenizer": str(sft_path)}), engine="hf", batch_size=r.batch_size, cpus=r.cpus_per_worker, gpus=0, torch_threads=1)
    cfg = cfg.model_copy(update={"parl": cfg.parl.model_copy(update={"subagent_policy": str(sft_path)})})
    rollout = choose_rollout(cfg, env, workers, None, str(sft_path))
    rollout.run.env_spec["kwargs"]["latency_s"] = args.latency
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=0.0, top_p=1.0)

    rows = [measure("SFT start", sft_state, workers, rollout.run, env, tasks, tokenizer, params, args.batch)]
    rows.append(measure("outcome only", final_weights(serial_dir), workers, rollout.run, env, tasks, tokenizer, params, args.batch))
    rows.append(measure("PARL", final_weights(parl_dir), workers, rollout.run, env, tasks, tokenizer, params, args.batch))
    rows += oracle_rows(env, tasks, args.latency)
    ray.shutdown()

    base = rows[1]["critical"]
    print(f"\nPARL benchmark: {len(tasks)} held-out tasks of width {width}, greedy, tool latency {args.latency}s")
    print(f"runs: PARL {parl_dir}  outcome-only {serial_dir}  SFT {sft_path}\n")
    cols = ["policy", "item F1", "pass", "critical", "total", "sub-agents/ep", "own tools/ep", "wall s/ep", "latency s", "critical vs outcome-only", "serial N+1 / critical"]
    print(" | ".join(f"{c:>13}" for c in cols))
    print("-" * (16 * len(cols)))
    for row in rows:
        row["critical vs outcome-only"] = base / row["critical"] if row["critical"] else None
        row["serial N+1 / critical"] = (width + 1) / row["critical"] if row["critical"] else None
        cells = [row["policy"]] + [row[c] for c in cols[1:]]
        print(" | ".join(f"{c:>13}" if isinstance(c, str) else ("{:>13}".format("-") if c is None else f"{c:>13.3f}") for c in cells))
    print("\n'critical vs outcome-only' = the baseline's mean critical steps / the row's (above 1: a shorter critical path)")
    print("'serial N+1 / critical' = the serial plan's critical steps / the row's (ceiling: (N + 1) / 4)")
    print(f"'latency s' = mean seconds from an episode's start to its end, {args.batch} episodes per rollout call; the oracle rows: their tool time alone")


if __name__ == "__main__":
    main()
