"""The policy's judgement of its own answers, measured at evaluation.

Each held-out sample may end with the policy's verdict p on its own answer (`<verify>p=0.7</verify>`,
see `rewards.self_verification`); the checker says whether the answer passed (y). From those:

- calibration (`eval/self_verify/accuracy|brier|auroc|parsed`), and AUROC within each level:
  difficulty alone separates levels, so the within-level figure is the one that shows judgement;
  `brier_constant` is the Brier score of stating the pass rate every time (y(1 - y) over the same
  samples): a verdict below it says more than the base rate does;
- a reliability diagram: the verdicts binned by p, each bin's mean p against its pass rate
  (a calibrated policy lies on the diagonal); ECE is the count-weighted mean gap;
- with k samples per task, **best-of-k by self-verdict**: keep the sample with the highest stated p
  (ties go to the earliest sample; a missing verdict ranks below every stated one), next to a
  random pick of the k (seeded) and plain pass@1 (the mean over all samples, the random pick's
  expectation). The judgement's gain is best-of-k minus random pick, per task; `gain_se` is the
  standard error of that paired difference over tasks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rewards.self_verification import calibration_metrics, parse_self_verdict

PREFIX = "eval/self_verify/"


def stated_and_graded(episodes) -> tuple[list[float | None], list[bool]]:
    """Each evaluated episode's stated p (None: no valid verdict) and the checker's result."""
    return [parse_self_verdict(e.completion_text) for e in episodes], [bool(e.verdict["passed"]) for e in episodes]


def reliability_bins(ps: Sequence[float | None], ys: Sequence[bool], n_bins: int = 10) -> list[dict]:
    """Bin i holds the verdicts with i/n <= p < (i+1)/n (p = 1 in the last bin); missing verdicts
    are left out. Each bin: `lo`, `hi`, `count`, `mean_p`, `pass_rate` (nan when empty)."""
    bins = [{"lo": i / n_bins, "hi": (i + 1) / n_bins, "count": 0, "sum_p": 0.0, "passed": 0} for i in range(n_bins)]
    for p, y in zip(ps, ys):
        if p is None:
            continue
        b = bins[min(int(p * n_bins), n_bins - 1)]
        b["count"] += 1
        b["sum_p"] += p
        b["passed"] += bool(y)
    for b in bins:
        n = b.pop("count")
        b["count"], b["mean_p"], b["pass_rate"] = n, (b.pop("sum_p") / n if n else math.nan), (b.pop("passed") / n if n else math.nan)
    return bins


def expected_calibration_error(bins: list[dict]) -> float:
    total = sum(b["count"] for b in bins)
    if not total:
        return math.nan
    return sum(b["count"] * abs(b["mean_p"] - b["pass_rate"]) for b in bins if b["count"]) / total


def best_of_k(ps: Sequence[Sequence[float | None]], passed: Sequence[Sequence[bool]], seed: int = 0) -> dict[str, float]:
    """`ps[i]`, `passed[i]`: the k verdicts and checker results of task i's samples."""
    if not ps or len(ps) != len(passed) or any(len(a) != len(b) or not a for a, b in zip(ps, passed)):
        raise ValueError("need the same, non-zero number of verdicts and results for every task")
    rng = np.random.default_rng(seed)
    best, pick, mean = [], [], []
    for task_ps, task_ys in zip(ps, passed):
        ranked = [-1.0 if p is None else p for p in task_ps]
        best.append(float(task_ys[int(np.argmax(ranked))]))  # argmax: the first of equal maxima
        pick.append(float(task_ys[int(rng.integers(len(task_ys)))]))
        mean.append(float(np.mean(task_ys)))
    gain = np.array(best) - np.array(pick)
    return {
        "k": float(len(ps[0])),
        "pass_at_1": float(np.mean(mean)),
        "best_of_k": float(np.mean(best)),
        "random_pick": float(np.mean(pick)),
        "gain": float(gain.mean()),
        "gain_se": float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else math.nan,
    }


def self_judgement_metrics(ps: list[float | None], passed: list[bool], levels: list, samples: int, seed: int = 0) -> dict[str, float]:
    """Evaluation metrics (`eval/self_verify/...`) of task-major samples; {} when no sample states
    a verdict (the policy was not trained to give one)."""
    if all(p is None for p in ps):
        return {}
    out = {PREFIX + k.split("/", 1)[1]: v for k, v in calibration_metrics(ps, passed).items()}
    for level in sorted({lv for lv in levels if lv is not None}):
        idx = [i for i, lv in enumerate(levels) if lv == level]
        auroc = calibration_metrics([ps[i] for i in idx], [passed[i] for i in idx])["self_verify/auroc"]
        out[f"{PREFIX}auroc_level{level}"] = auroc
    stated = [y for p, y in zip(ps, passed) if p is not None]
    rate = sum(stated) / len(stated)
    out[PREFIX + "brier_constant"] = rate * (1 - rate)
    out[PREFIX + "ece"] = expected_calibration_error(reliability_bins(ps, passed))
    if samples > 1:
        by_task = lambda xs: [xs[i : i + samples] for i in range(0, len(xs), samples)]  # noqa: E731
        out.update({f"{PREFIX}{k}": v for k, v in best_of_k(by_task(ps), by_task(passed), seed).items()})
    return out


def plot_reliability(bins: list[dict], out_png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.6, 5.6), height_ratios=[3, 1], sharex=True)
    full = [b for b in bins if b["count"]]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="calibrated")
    ax.plot([b["mean_p"] for b in full], [b["pass_rate"] for b in full], marker="o", label="policy")
    ax.set_ylabel("pass rate (checker)")
    ax.set_title(f"{title}  ECE {expected_calibration_error(bins):.3f}", fontsize=10)
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    hist.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["count"] for b in bins], width=bins[0]["hi"] - bins[0]["lo"], color="C0", alpha=0.6)
    hist.set_xlabel("stated p (self-verdict)")
    hist.set_ylabel("samples")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def log_reliability_diagram(tracker, run_dir: Path, ps: list[float | None], passed: list[bool], step: int) -> Path | None:
    """Write the diagram beside the run and log it as `calibration/eval_step_<step>.png`; nothing
    when no sample states a verdict."""
    if all(p is None for p in ps):
        return None
    path = plot_reliability(reliability_bins(ps, passed), Path(run_dir) / "calibration" / f"eval_step_{step:06d}.png", f"self-verdicts, step {step}")
    tracker.log_artifact(path, "calibration")
    return path
