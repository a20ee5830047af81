"""Synchronous vs asynchronous rollouts on the quickstart experiment: steps/s and completions/s.

  python benchmarks/async_rollouts.py                 # 20 steps each for k = 0, 1, 2
  python benchmarks/async_rollouts.py --steps 50 --k 0,1

Each k is one `swarmrl train experiments/quickstart.yaml rollout.max_staleness=k` run in a fresh
process (same seed, same SFT checkpoint from the cache, same steps; evaluations off except the
final one). Throughput is over the RL wall time (`time/rl_wall_s`: setup and evaluations
excluded). The table gives the ratio against k = 0, the mean time the driver waited for its
rollouts, and the staleness actually trained on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(k: int, args) -> Path:
    run_dir = Path(args.runs_dir) / f"async-k{k}"
    overrides = [
        f"run.runs_dir={args.runs_dir}",
        f"train.steps={args.steps}",
        "train.eval_every=0",
        "train.max_minutes=100000",
        "checkpoint.every=0",
        "tracking.progress=false",
        f"rollout.max_staleness={k}",
        *args.overrides,
    ]
    cmd = [sys.executable, "-m", "rl", "train", str(REPO / "experiments" / "quickstart.yaml"), "--run-dir", str(run_dir), *overrides]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    return run_dir


def summary(run_dir: Path, runs_dir: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    from rl.config import load_config
    from rl.tracking import default_uri

    cfg = load_config(run_dir / "config.yaml")
    client = MlflowClient(cfg.tracking.uri or default_uri(runs_dir))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()

    def hist(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    wall = hist("time/rl_wall_s")
    steps = max(wall)
    wait = hist("time/rollout_wait_s") or hist("time/rollout_s")
    stale = hist("rollout/staleness_mean")
    return {
        "steps_per_s": steps / wall[steps],
        "completions_per_s": steps * cfg.train.tasks_per_step * cfg.rollout.group_size / wall[steps],
        "wait_s": sum(wait.values()) / len(wait),
        "staleness": sum(stale.values()) / len(stale),
        "reward": sum(hist("reward/mean").values()) / steps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--k", default="0,1,2", help="max_staleness values; the first is the baseline")
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "bench-async"))
    p.add_argument("overrides", nargs="*", help="extra a.b=c overrides for every run")
    args = p.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    results = {k: summary(run(k, args), args.runs_dir) for k in ks}
    base = results[ks[0]]
    print(f"\nquickstart, {args.steps} steps, {os.cpu_count()} CPU cores")
    print("| max_staleness | steps/s | completions/s | vs k=%d | driver wait for rollouts (s/step) | mean staleness | mean train reward |" % ks[0])
    print("|---|---|---|---|---|---|---|")
    for k, r in results.items():
        print(
            f"| {k} | {r['steps_per_s']:.3f} | {r['completions_per_s']:.1f} | {r['completions_per_s'] / base['completions_per_s']:.2f}x "
            f"| {r['wait_s']:.2f} | {r['staleness']:.2f} | {r['reward']:.3f} |"
        )


if __name__ == "__main__":
    main()
