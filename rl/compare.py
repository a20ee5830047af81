"""`swarmrl compare EXPERIMENT`: the runs of an MLflow experiment side by side.

Prints a table (final and best held-out pass rate, final reward, steps, RL wall time) and
writes a PNG with one panel per curve (held-out pass@1, reward mean, each reward component and
its weight) and one line per run; the PNG is also logged as an artifact of every compared run.

PARL runs (those that log `parl/` metrics) get the columns that show whether the orchestrator
splits its work: held-out item F1, critical and total steps, sub-agents and own tool calls per
episode (all at the last evaluation, greedy, on held-out tasks), and each reward component at the
end of training (the mean of the last `TAIL` steps, since one step holds few episodes). Their PNG
adds panels for critical steps, sub-agents and own tool calls per episode over training. The
PNG's `Description` text chunk lists its panels.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

PASS = "eval/pass_at_1"
TAIL = 5  # steps averaged for "at the end" training figures

# (column, metric) read at the last evaluation of a PARL run
PARL_HELD_OUT = [
    ("item F1", "eval/score"),
    ("critical", "eval/parl/critical_steps"),
    ("total", "eval/parl/total_steps"),
    ("sub-agents/ep", "eval/parl/subagents"),
    ("own tools/ep", "eval/parl/own_tool_calls"),
]
# training curves that get a panel of their own, in this order after the held-out ones
PARL_CURVES = ["parl/critical_steps", "parl/subagents", "parl/own_tool_calls"]
TITLES = {
    PASS: "held-out pass@1",
    "eval/score": "held-out item F1",
    "parl/critical_steps": "critical steps / episode",
    "parl/subagents": "sub-agents / episode",
    "parl/own_tool_calls": "own tool calls / episode",
}


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _is_parl(metrics: dict) -> bool:
    return any(k.startswith(("parl/", "eval/parl/")) for k in metrics)


def _curve_keys(metrics: dict, parl: bool) -> list[str]:
    keys = [k for k in metrics if k == PASS or k.startswith(("reward/", "weight/"))]
    if parl:
        keys += [k for k in ["eval/score", *PARL_CURVES] if k in metrics]
    return keys


def _tail_mean(points: list[tuple[int, float]]) -> float:
    tail = [v for _, v in points[-TAIL:]]
    return sum(tail) / len(tail) if tail else float("nan")


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
    names = [run.info.run_name or run.info.run_id[:8] for run in runs]
    for run, name in zip(runs, names):
        if names.count(name) > 1:  # runs of one name (a sweep run twice): one line each, told apart by id
            name = f"{name} ({run.info.run_id[:6]})"
        parl = _is_parl(run.data.metrics)
        curves[name] = {k: _history(client, run.info.run_id, k) for k in _curve_keys(run.data.metrics, parl)}
        evals = curves[name].get(PASS, [])
        wall = _history(client, run.info.run_id, "time/rl_wall_s")
        row = {
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
            "parl": parl,
        }
        if parl:
            f1 = curves[name].get("eval/score", [])
            row["item F1 start"] = f1[0][1] if f1 else float("nan")
            row.update({col: run.data.metrics.get(key, float("nan")) for col, key in PARL_HELD_OUT})
            components = sorted(k for k in curves[name] if k.startswith("reward/") and k != "reward/mean")
            row["components"] = {k[len("reward/") :]: _tail_mean(curves[name][k]) for k in components}
        rows.append(row)
    _plot(curves, out_png, experiment)
    for row in rows:
        client.log_artifact(row["run_id"], str(out_png), "compare")
    return rows, out_png


def _panel_order(key: str) -> tuple:
    fixed = [PASS, "eval/score", "reward/mean", *PARL_CURVES]
    return (fixed.index(key), "") if key in fixed else (len(fixed) + (not key.startswith("reward/")), key)


def panels(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> list[str]:
    """The metric of each panel, in the order they are drawn."""
    return sorted({k for c in curves.values() for k in c}, key=_panel_order)


def _plot(curves: dict[str, dict[str, list[tuple[int, float]]]], out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = panels(curves)
    cols = min(3, len(keys)) or 1
    rows = (len(keys) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for i, (name, c) in enumerate(curves.items()):
            pts = c.get(key, [])
            if not pts:
                continue
            steps, values = [s for s, _ in pts], [v for _, v in pts]
            color = f"C{i}"
            if key in PARL_CURVES and len(pts) >= 2 * TAIL:
                # per-step episode shapes are noisy (a few dozen episodes): the raw line faint, a moving mean on top
                ax.plot(steps, values, color=color, alpha=0.25, lw=1)
                smooth = [sum(values[max(0, j - TAIL + 1) : j + 1]) / len(values[max(0, j - TAIL + 1) : j + 1]) for j in range(len(values))]
                ax.plot(steps, smooth, color=color, label=name, lw=1.8)
            else:
                ax.plot(steps, values, color=color, label=name, marker="o" if len(pts) < 30 else None, lw=1.5)
        ax.set_title(TITLES.get(key, key) + (f" (train, mean of {TAIL} steps)" if key in PARL_CURVES else ""), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), frameon=False, title=f"experiment: {title}")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight", metadata={"Title": f"swarmrl compare {title}", "Description": "panels: " + "; ".join(keys)})
    plt.close(fig)


def format_table(rows: list[dict]) -> str:
    parl = any(r["parl"] for r in rows)
    if parl:
        names = sorted({c for r in rows for c in r.get("components", {})}, key=lambda c: (c != "outcome", c))
        rows = [{**r, **{f"r.{c}": r.get("components", {}).get(c, float("nan")) for c in names}} for r in rows]
        cols = ["run", "steps", "item F1 start", *(c for c, _ in PARL_HELD_OUT), "pass@1 final", *(f"r.{c}" for c in names), "wall min", "status"]
    else:
        cols = ["run", "steps", "pass@1 start", "pass@1 final", "pass@1 best", "reward final", "wall min", "status"]
    cells = [[_fmt(r.get(c, float("nan"))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    if parl:
        lines.append(
            f"held-out columns at the last evaluation (greedy episodes on held-out tasks); r.<component>: "
            f"that reward's mean over the last {TAIL} steps, before its weight"
        )
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
