"""Quickstart benchmark: does the policy learn, how fast, at what rollout throughput?

  python benchmarks/quickstart.py                      # train experiments/quickstart.yaml, then report
  python benchmarks/quickstart.py --run-dir RUN_DIR    # report on a finished run
  python benchmarks/quickstart.py a.b=c ...            # overrides for the training run

Reads the run's MLflow history and prints: held-out pass@1 at the SFT start and at the end,
the gain, RL minutes to +20 and +35 points, rollout completions/s, step time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def report(run_dir: Path) -> list[tuple[str, str]]:
    from mlflow.tracking import MlflowClient

    from rl.config import load_config
    from rl.tracking import default_uri

    cfg = load_config(run_dir / "config.yaml")
    client = MlflowClient(cfg.tracking.uri or default_uri(cfg.run.runs_dir))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    evals, wall = history("eval/pass_at_1"), history("time/rl_wall_s")
    cps, step_s = history("rollout/completions_per_s"), history("time/step_s")
    start, last_step = evals[0], max(evals)
    end = evals[last_step]

    def minutes_to(gain: float) -> str:
        for s in sorted(evals):
            if s > 0 and evals[s] - start >= gain:
                return f"{wall[s] / 60:.1f} min (step {s})"
        return "not reached"

    samples = cfg.train.eval_samples
    rows = [
        ("held-out problems", f"{cfg.env.eval_size}" + (f", {samples} samples each (pass@1 = their mean)" if samples > 1 else "")),
        *([("evaluated policy", f"moving average of the weights (train.eval_ema {cfg.train.eval_ema})")] if cfg.train.eval_ema else []),
        ("pass@1 at SFT start", f"{start:.1%}"),
        (f"pass@1 after RL (step {last_step})", f"{end:.1%}"),
        ("gain", f"{(end - start) * 100:+.1f} points"),
        ("best pass@1", f"{max(evals.values()):.1%}"),
        *level_rows(history, cfg.env.levels, last_step),
        ("RL wall time", f"{wall[max(wall)] / 60:.1f} min"),
        ("time to +20 points", minutes_to(0.20)),
        ("time to +35 points", minutes_to(0.35)),
        ("rollout completions/s (median)", f"{sorted(cps.values())[len(cps) // 2]:.0f}"),
        ("step time (median)", f"{sorted(step_s.values())[len(step_s) // 2]:.2f} s"),
    ]
    return rows


def level_rows(history, levels: list[int], last_step: int) -> list[tuple[str, str]]:
    """Per level, start → end: shows whether RL taught the harder levels or only sharpened the easy one."""
    rows = []
    for lv in levels:
        h = history(f"eval/pass_at_1_level{lv}")
        if h:
            rows.append((f"  level {lv}: start → end", f"{h[0]:.1%} → {h[last_step]:.1%}"))
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--experiment", default=str(REPO / "experiments" / "quickstart.yaml"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    run_dir = args.run_dir
    if run_dir is None:
        from rl.config import load_config
        from rl.trainer import train

        cfg = load_config(args.experiment, args.overrides)
        run_dir = Path(cfg.run.runs_dir) / f"bench-{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        train(cfg, run_dir)
    rows = report(run_dir)
    width = max(len(k) for k, _ in rows)
    print(f"\nquickstart benchmark: {run_dir}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
