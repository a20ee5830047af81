"""`swarmrl compare EXPERIMENT`: the runs of an MLflow experiment side by side.

Prints a table (final and best held-out pass rate, final reward, steps, RL wall time) and
writes a PNG with one panel per curve (held-out pass@1, reward mean, each reward component and
its weight) and one line per run; the PNG is also logged as an artifact of every compared run.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

PASS = "eval/pass_at_1"


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def compare(uri: str, experiment: str, out_png: Path) -> tuple[list[dict], Path]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment {experiment!r} in {uri}; experiments: {names or 'none'}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    if not runs:
        raise ValueError(f"experiment {experiment!r} has no runs")
    rows, curves = [], {}
    for run in runs:
        name = run.info.run_name or run.info.run_id[:8]
        keys = sorted(k for k in run.data.metrics if k == PASS or k == "reward/mean" or k.startswith(("reward/", "weight/")))
        curves[name] = {k: _history(client, run.info.run_id, k) for k in keys}
        evals = curves[name].get(PASS, [])
        wall = _history(client, run.info.run_id, "time/rl_wall_s")
        rows.append(
            {
                "run": name,
                "status": run.info.status,
                "steps": int(max((s for s, _ in wall), default=0)),
                "pass@1 start": evals[0][1] if evals else float("nan"),
                "pass@1 final": evals[-1][1] if evals else float("nan"),
                "pass@1 best": max((v for _, v in evals), default=float("nan")),
                "reward final": run.data.metrics.get("reward/mean", float("nan")),
                "wall min": (wall[-1][1] / 60) if wall else float("nan"),
                "tags": {k[len("sweep.") :]: v for k, v in run.data.tags.items() if k.startswith("sweep.")},
                "run_id": run.info.run_id,
            }
        )
    _plot(curves, out_png, experiment)
    for row in rows:
        client.log_artifact(row["run_id"], str(out_png), "compare")
    return rows, out_png


def _plot(curves: dict[str, dict[str, list[tuple[int, float]]]], out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for c in curves.values() for k in c}, key=lambda k: (k != PASS, k != "reward/mean", k))
    cols = min(3, len(keys)) or 1
    rows = (len(keys) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, c in curves.items():
            pts = c.get(key, [])
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], label=name, marker="o" if len(pts) < 30 else None, lw=1.5)
        ax.set_title("held-out pass@1" if key == PASS else key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), frameon=False, title=f"experiment: {title}")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)


def format_table(rows: list[dict]) -> str:
    cols = ["run", "steps", "pass@1 start", "pass@1 final", "pass@1 best", "reward final", "wall min", "status"]
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    varied = sorted({k for r in rows for k in r["tags"]})
    for r in rows:
        if varied:
            shown = [f"{k}={r['tags'][k]}" for k in varied if r["tags"].get(k) not in (None, "None")]
            lines.append(f"  {r['run']}: " + ", ".join(shown))
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return str(v)
