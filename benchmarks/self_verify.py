"""Self-verification benchmark: does the policy learn to judge its own answers, and does the
judgement pay at evaluation?

  python benchmarks/self_verify.py                                # train both runs, then report
  python benchmarks/self_verify.py --run RUN_DIR --baseline RUN_DIR   # report on finished runs
  python benchmarks/self_verify.py a.b=c ...                      # overrides for both training runs

The run is `experiments/self_verify.yaml` (outcome + Brier self-verification); the baseline is the
same file with the self-verification weight at 0 (same settings, same minutes, outcome reward
only). From each run's evaluations (held-out problems, k samples each; `rl.self_judgement`):
held-out pass@1, self-verdict AUROC overall and within each level, Brier against the constant
predictor at the same pass rate, ECE, and best-of-k by the policy's own verdict against a random
pick of the k (gain ± the standard error of the paired difference over held-out problems), at the
start (the bootstrap) and at the end; then a few sampled held-out answers with their verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

P = "eval/self_verify/"


def train(experiment: Path, overrides: list[str], name: str) -> Path:
    from rl.config import load_config
    from rl.trainer import train as train_run

    cfg = load_config(experiment, overrides)
    run_dir = Path(cfg.run.runs_dir) / f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    train_run(cfg, run_dir)
    return run_dir


def evaluations(run_dir: Path) -> tuple[dict[int, dict[str, float]], object]:
    """Every evaluated step's `eval/` metrics, and the run's config."""
    from mlflow.tracking import MlflowClient

    from rl.config import load_config
    from rl.tracking import default_uri

    cfg = load_config(run_dir / "config.yaml")
    client = MlflowClient(cfg.tracking.uri or default_uri(cfg.run.runs_dir))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    out: dict[int, dict[str, float]] = {}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith("eval/"):
            for m in client.get_metric_history(run_id, key):
                out.setdefault(m.step, {})[key] = m.value
    return out, cfg


def rows(evals: dict[int, dict[str, float]], levels: list[int], baseline_end: dict[str, float] | None) -> list[tuple[str, str, str]]:
    start, last = evals[0], max(evals)
    end = evals[last]

    def both(key: str, fmt: str = "{:.3f}") -> tuple[str, str]:
        return tuple(fmt.format(e[key]) if key in e else "-" for e in (start, end))

    out = [
        ("held-out pass@1", *both("eval/pass_at_1", "{:.1%}")),
        ("verdicts given (parsed)", *both(P + "parsed", "{:.1%}")),
        ("AUROC, all levels", *both(P + "auroc")),
        *[(f"AUROC, level {lv}", *both(f"{P}auroc_level{lv}")) for lv in levels],
        ("Brier (lower is better)", *both(P + "brier")),
        ("Brier of the constant predictor", *both(P + "brier_constant")),
        ("ECE", *both(P + "ece")),
        (f"best-of-{int(end.get(P + 'k', 0))} by self-verdict", *both(P + "best_of_k", "{:.1%}")),
        ("random pick of the same samples", *both(P + "random_pick", "{:.1%}")),
        ("gain ± s.e.", *(f"{e[P + 'gain'] * 100:+.1f} ± {e[P + 'gain_se'] * 100:.1f} pts" if P + "gain" in e else "-" for e in (start, end))),
    ]
    if baseline_end is not None:
        out.append(("outcome-only baseline pass@1", "", f"{baseline_end['eval/pass_at_1']:.1%}"))
    return [(k, a, b) for k, a, b in out]


def samples(run_dir: Path, step: int, n: int = 8) -> list[str]:
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    path = run_dir.parent / "mlartifacts" / run_id / "artifacts" / "episodes" / f"eval_step_{step:06d}.json"
    if not path.exists():
        return []
    lines = []
    for rec in json.loads(path.read_text())[:n]:
        lines.append(f"{rec['prompt']!r:>12} → {rec['completion']!r:<34} checker: {'right' if rec['passed'] else 'wrong'}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="finished run of the self-verification experiment (default: train it)")
    p.add_argument("--baseline", type=Path, help="finished outcome-only run (default: train it; 'none' to skip)")
    p.add_argument("--experiment", type=Path, default=REPO / "experiments" / "self_verify.yaml")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    run = args.run or train(args.experiment, args.overrides, "self_verify")
    baseline = args.baseline
    if baseline is None:
        baseline = train(args.experiment, [*args.overrides, "rewards.self_verification.weight=0", "run.name=self_verify_outcome_only"], "self_verify_outcome_only")
    evals, cfg = evaluations(run)
    base_end = None if str(baseline) == "none" else (lambda e: e[max(e)])(evaluations(baseline)[0])
    table = rows(evals, cfg.env.levels, base_end)
    last = max(evals)
    print(f"\nself-verification benchmark: {run}" + (f"  (baseline {baseline})" if base_end else ""))
    print(f"held-out: {cfg.env.eval_size} draws x {cfg.train.eval_samples} samples; start = bootstrap (step 0), end = step {last}\n")
    width = max(len(k) for k, _, _ in table)
    print(f"  {'':<{width}}  {'start':>16}  {'end':>16}")
    for k, a, b in table:
        print(f"  {k:<{width}}  {a:>16}  {b:>16}")
    lines = samples(run, last)
    if lines:
        print(f"\nsampled held-out answers at step {last}:")
        print("\n".join("  " + s for s in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
