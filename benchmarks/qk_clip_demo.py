"""QK-Clip at work: plain Muon lets the max attention logit run past τ; MuonClip holds it at τ.

  python benchmarks/qk_clip_demo.py                    # lr 0.03, τ 100, 300 steps (~2.5 min of CPU, 1 thread)
  python benchmarks/qk_clip_demo.py --lr 0.05 --tau 50

Two runs of the same SFT (next-token loss on math oracle demonstrations, the quickstart's tiny
Llama, same init and batches): `rl.optim.build_optimizer(name="muonclip")` with QK-Clip off
(plain Muon on the hidden matrices, AdamW on the rest) and with it on. The recipe that makes the
logits grow is a high Muon lr held constant, no weight decay, and Llama's attention with no QK
norm. The max logit is what `policies.qk_probe` records in each step's forward pass (the number
QK-Clip acts on, measured before that step's update and clip). Prints a table, writes a PNG of
both max-logit and loss curves, and logs both runs (metrics + PNG) to MLflow
(`sqlite:///runs/mlflow.db`, experiment "qk-clip-demo").
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from muonclip import RunConfig, RunResult, load_task, table, train  # noqa: E402

EXPERIMENT = "qk-clip-demo"


def plot(runs: dict[str, RunResult], tau: float, path: Path) -> Path:
    """Max logit on a log scale and zoomed around τ (linear), and the loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_log, ax_zoom, ax_loss) = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = {"muon": "tab:red", "muonclip": "tab:blue"}
    for name, r in runs.items():
        for ax in (ax_log, ax_zoom):
            ax.plot(r.steps, r.max_logit, color=colours[name], label=f"{name} (step's forward pass)")
            if r.max_logit_after:
                ax.plot(r.steps, r.max_logit_after, color="tab:cyan", lw=0.8, label=f"{name} after the step's clip")
        ax_loss.plot(r.steps, smooth(r.train_loss), color=colours[name], label=f"{name} train (10-step mean)")
        ev = [e for e in r.evals if e["step"] > 0]
        ax_loss.plot([e["step"] for e in ev], [e["loss"] for e in ev], "o--", ms=4, color=colours[name], alpha=0.7, label=f"{name} held-out")
    for ax in (ax_log, ax_zoom):
        ax.axhline(tau, color="black", ls=":", label=f"τ = {tau:g}")
        ax.set(xlabel="step", ylabel="max pre-softmax logit over layers and heads")
    ax_log.set_yscale("log")
    ax_log.set_title("Max attention logit (log scale)")
    ax_zoom.set_ylim(0, 2.5 * tau)
    ax_zoom.set_title("Max attention logit near τ (linear)")
    losses = [v for r in runs.values() for v in smooth(r.train_loss)[len(r.train_loss) // 10 :]]
    ax_loss.set_ylim(min(losses) * 0.95, max(losses) * 1.05)  # the first drop from ~4.5 would flatten the rest
    ax_loss.set(xlabel="step", ylabel="completion loss (nats/token)", title="Loss (first 10% of steps off-scale)")
    for ax in (ax_log, ax_zoom, ax_loss):
        ax.grid(alpha=0.3)
    ax_log.legend(fontsize=8)
    ax_loss.legend(fontsize=8)
    cfg = next(iter(runs.values())).cfg
    fig.suptitle(f"Muon vs MuonClip: lr {cfg.lr:g} constant, weight decay {cfg.weight_decay:g}, batch {cfg.batch_size}, "
                 f"quickstart Llama (no QK norm), seed {cfg.seed}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def smooth(values: list[float], window: int = 10) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def log_to_mlflow(runs: dict[str, RunResult], png: Path, uri: str) -> list[str]:
    """One MLflow run per optimizer: params, per-step metrics, and the comparison PNG."""
    from rl.tracking import Tracker

    ids = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name, r in runs.items():
        run_dir = REPO / "runs" / EXPERIMENT / f"{stamp}-{name}"
        run_dir.mkdir(parents=True, exist_ok=True)
        c = r.cfg
        params = {"optimizer": "muonclip", "qk_clip": c.qk_clip, "tau": c.tau, "lr": c.lr, "adamw_lr": c.lr,
                  "weight_decay": c.weight_decay, "schedule": c.schedule, "warmup": c.warmup, "steps": c.steps,
                  "batch_size": c.batch_size, "seed": c.seed, "grad_clip": c.grad_clip}
        tracker = Tracker(uri, EXPERIMENT, run_dir, f"{name}-{stamp}", params, artifact_root=REPO / "runs", tags={"demo": "qk-clip"})
        for i, step in enumerate(r.steps):
            metrics = {"train/loss": r.train_loss[i], "learner/qk_max_logit": r.max_logit[i],
                       "learner/qk_clipped_heads": r.clipped_heads[i], "train/tokens": r.tokens[i]}
            if r.max_logit_after:
                metrics["learner/qk_max_logit_after_clip"] = r.max_logit_after[i]
            tracker.log_metrics(metrics, step)
        for e in r.evals:
            tracker.log_metrics({"eval/loss": e["loss"], "eval/exact": e["exact"]}, e["step"] if e["step"] else 0)
        tracker.log_artifact(png, "plots")
        tracker.finish()
        ids.append(tracker.run_id)
    return ids


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lr", type=float, default=0.03, help="Muon and AdamW lr (constant after warm-up)")
    p.add_argument("--tau", type=float, default=100.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=20, help="table row every this many steps")
    p.add_argument("--png", type=Path, default=REPO / "runs" / EXPERIMENT / "qk_clip_demo.png")
    p.add_argument("--tracking-uri", default="sqlite:///runs/mlflow.db", help="relative to the repository root")
    p.add_argument("--clip-on", choices=["step", "remeasured"], default="remeasured",
                   help="QK-Clip on the max logits of the step's forward pass (Kimi K2's order) or measured again "
                        "after the update (optimizer.qk_clip_remeasure; the step's batch ends at or under tau)")
    p.add_argument("--ns-dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="Muon's Newton-Schulz precision")
    args = p.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    task = load_task(args.steps * args.batch_size)
    runs: dict[str, RunResult] = {}
    for name, clip in (("muon", False), ("muonclip", True)):
        cfg = RunConfig("muonclip", args.lr, args.steps, seed=args.seed, batch_size=args.batch_size, weight_decay=args.weight_decay,
                        schedule="constant", qk_clip=clip, tau=args.tau, eval_every=50, probe=True, remeasure=clip,
                        ns_dtype=args.ns_dtype, clip_on=args.clip_on)
        runs[name] = train(task, cfg)
        r = runs[name]
        print(f"  {name}: {r.seconds:.0f}s, max logit {max(r.max_logit):.1f}, clipped head-steps {sum(r.clipped_heads)}", flush=True)

    muon, clip = runs["muon"], runs["muonclip"]
    rows = []
    for i, step in enumerate(muon.steps):
        if step % args.every == 0 or step == 1:
            rows.append([str(step), f"{muon.max_logit[i]:.1f}", f"{clip.max_logit[i]:.1f}", f"{clip.max_logit_after[i]:.1f}",
                         f"{muon.train_loss[i]:.4f}", f"{clip.train_loss[i]:.4f}"])
    print(f"\nQK-Clip demo: lr {args.lr:g} constant, tau {args.tau:g}, weight decay {args.weight_decay:g}, "
          f"batch {args.batch_size}, seed {args.seed}, QK-Clip on {args.clip_on} logits "
          f"(max logit: this step's forward pass; loss: this batch)")
    print("max logit muonclip: measured in the step's forward pass, before its update and clip (what QK-Clip acts on);\n"
          "after clip: the same batch probed again after the update and QK-Clip")
    print(table(["step", "max logit muon", "max logit muonclip", "muonclip after clip", "loss muon", "loss muonclip"], rows))

    tail = max(1, args.steps // 10)
    first_over = next((s for s, m in zip(muon.steps, muon.max_logit) if m > args.tau), None)
    summary = [
        ["steps with max logit > tau", str(sum(m > args.tau for m in muon.max_logit)), str(sum(m > args.tau for m in clip.max_logit))],
        ["first step over tau", str(first_over or "-"), str(next((s for s, m in zip(clip.steps, clip.max_logit) if m > args.tau), "-"))],
        ["largest max logit", f"{max(muon.max_logit):.1f}", f"{max(clip.max_logit):.1f}"],
        ["largest max logit after the step's clip (same batch)", "-", f"{max(clip.max_logit_after):.2f}"],
        ["max logit, last step", f"{muon.max_logit[-1]:.1f}", f"{clip.max_logit[-1]:.1f}"],
        [f"train loss, mean of last {tail} steps", f"{mean(muon.train_loss[-tail:]):.4f}", f"{mean(clip.train_loss[-tail:]):.4f}"],
        ["held-out loss, end", f"{muon.evals[-1]['loss']:.4f}", f"{clip.evals[-1]['loss']:.4f}"],
        ["held-out exact match, end", f"{muon.evals[-1]['exact']:.1%}", f"{clip.evals[-1]['exact']:.1%}"],
        ["QK-Clip head rescalings (sum over steps)", "0", str(sum(clip.clipped_heads))],
    ]
    print()
    print(table(["", "muon", "muonclip"], summary))

    png = plot(runs, args.tau, args.png)
    uri = args.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(REPO / uri[len('sqlite:///'):]).resolve()}"
    ids = log_to_mlflow(runs, png, uri)
    print(f"\nplot: {png}\nmlflow: {uri}, experiment {EXPERIMENT!r}, runs {', '.join(ids)}\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


if __name__ == "__main__":
    raise SystemExit(main())
