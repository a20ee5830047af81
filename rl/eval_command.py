"""`swarmrl eval`: the trainer's held-out evaluation, on demand, for a run or any model folder.

The figure it prints must be the one the trainer logged (`eval/pass_at_1` of `summary.json` for
the final checkpoint), or a run cannot be re-checked, nor two models compared on equal terms. So
everything the trainer's `run_eval` depends on is taken from the experiment, never chosen here:
the env (`experiment_env`), the held-out tasks (`env.eval_tasks(env.eval_size)`), the seed
(`run.seed + 7_777_777`), the rollout workers (`rollout.num_workers`, the same engine and
batching) and the sampling parameters (`rollout.*`, `train.eval_temperature`). Generation is
seeded per request, so the same weights give the same completions.

- RUN_DIR: the run's `config.yaml` is the experiment (an EXP.yaml given instead replaces it).
  The weights are those the trainer evaluated: the checkpoint's weight average (`ema.pt`) when
  the run set `train.eval_ema`, else its trained weights. They are exported (`rl.export`) to a
  temporary folder that the workers serve as `policy.path`.
- MODEL_DIR (any Hugging Face folder, e.g. an export): EXP.yaml is required for the env and the
  sampling settings; the folder becomes `policy.path`.

Besides pass@1 (overall, per level and task kind) it reports pass@k for k = 1, 2, 4, ... up to
the samples per task, with the unbiased estimator 1 - C(n - c, k) / C(n, k) per task (n samples,
c passed), averaged over tasks.
"""

from __future__ import annotations

import json
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any, Iterator

from rl.config import ConfigError, ExperimentConfig, load_config

EVAL_SEED_OFFSET = 7_777_777  # the trainer's: `run.seed + 7_777_777`


@dataclass(frozen=True)
class EvalTarget:
    """What to evaluate: the experiment (with `policy.path` = the served folder) and where the weights came from."""

    cfg: ExperimentConfig
    source: str  # the RUN_DIR or MODEL_DIR as given
    weights: str  # "average" / "trained" (a run's checkpoint) or "model" (a folder)
    step: int | None = None  # the run's checkpoint step
    run_cfg: ExperimentConfig | None = None  # the run's own experiment (RUN_DIR only)


def run_eval_command(
    target: str | Path,
    experiment: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    samples: int | None = None,
    step: int | None = None,
) -> dict[str, Any]:
    """Resolve `target` (a run directory or a model folder), evaluate it, return the report
    (`format_report` prints it, `json.dumps` saves it). Raises `ConfigError` for a bad target."""
    if samples is not None and samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="swarmrl-eval-") as tmp:
        if is_run_dir(target):
            resolved = resolve_run(target, experiment, overrides or [], step, Path(tmp) / "policy")
        else:
            if step is not None:
                raise ConfigError(f"--step chooses a checkpoint of a run directory; {target} is not one (no config.yaml)")
            resolved = resolve_model_folder(target, experiment, overrides or [])
        return heldout_report(resolved, samples)


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def resolve_run(run_dir: Path, experiment: str | Path | None, overrides: list[str], step: int | None, export_to: Path) -> EvalTarget:
    """The run's experiment and the weights its trainer evaluated, exported to `export_to`."""
    from rl.export import choose_checkpoint, export

    run_cfg = load_config(run_dir / "config.yaml")
    average = run_cfg.train.eval_ema is not None
    ckpt = choose_checkpoint(run_dir, step)
    chosen = int(ckpt.name.removeprefix("step_"))
    export(run_dir, export_to, chosen, average=average)
    cfg = load_config(experiment or run_dir / "config.yaml", [*overrides, *serve_folder(export_to)])
    return EvalTarget(cfg, str(run_dir), "average" if average else "trained", chosen, run_cfg)


def resolve_model_folder(model_dir: Path, experiment: str | Path | None, overrides: list[str]) -> EvalTarget:
    """Any Hugging Face model folder, evaluated on the env and sampling settings of `experiment`."""
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir}: neither a run directory (config.yaml) nor a model folder (config.json)")
    if experiment is None:
        raise ConfigError(f"{model_dir} is a model folder: give an experiment YAML for the env and sampling settings (swarmrl eval {model_dir} EXP.yaml)")
    cfg = load_config(experiment, [*overrides, *serve_folder(model_dir)])
    return EvalTarget(cfg, str(model_dir), "model")


def serve_folder(folder: Path) -> list[str]:
    """Overrides that make the workers serve `folder` as it is (no SFT bootstrap on top). The path
    goes in as a quoted YAML string, whatever characters it holds."""
    return [f"policy.path={json.dumps(str(folder))}", "sft.enabled=false"]


def subagent_policy(target: EvalTarget) -> tuple[str | None, Any]:
    """PARL envs: the frozen sub-agent policy as `choose_rollout` takes it, (folder, None) or
    (None, model). A run's trainer froze the sub-agents at the policy it started from:
    `parl.subagent_policy`, else the SFT result (cached), else `policy.path`, else its random init.
    A model folder's sub-agents are `parl.subagent_policy`, else the folder itself."""
    cfg, run_cfg = target.cfg, target.run_cfg
    if cfg.parl.subagent_policy:
        return cfg.parl.subagent_policy, None
    if run_cfg is None:
        return cfg.policy.path, None
    if run_cfg.sft.enabled:
        from rl.experiment_env import experiment_env
        from rl.sft import run_sft

        return str(run_sft(run_cfg, experiment_env(run_cfg))), None  # the cached bootstrap the run trained from
    if run_cfg.policy.path:
        return run_cfg.policy.path, None
    from policies.model import build_policy

    return None, build_policy(run_cfg.policy, seed=run_cfg.run.seed)[0]


def eval_sampling_params(cfg: ExperimentConfig):
    """The trainer's held-out sampling: the rollout settings at `train.eval_temperature` if set."""
    from rollout.engines.base import SamplingParams

    r = cfg.rollout
    temperature = r.temperature if cfg.train.eval_temperature is None else cfg.train.eval_temperature
    return SamplingParams(max_new_tokens=r.max_new_tokens, temperature=temperature, top_p=r.top_p)


def heldout_report(target: EvalTarget, samples: int | None = None) -> dict[str, Any]:
    """Run the trainer's held-out evaluation of `target` on fresh rollout workers."""
    from policies.tokenizer import load_tokenizer
    from policies.vlm import processor_for
    from rl.evaluate import evaluate
    from rl.experiment_env import experiment_env
    from rl.rollout_choice import choose_rollout

    cfg = target.cfg
    samples = samples or cfg.train.eval_samples
    seed = cfg.run.seed + EVAL_SEED_OFFSET
    env = experiment_env(cfg)
    tasks = env.eval_tasks(cfg.env.eval_size)
    tokenizer = load_tokenizer(cfg.policy.tokenizer or cfg.policy.path)
    processor = processor_for(cfg.policy, tokenizer)
    params = eval_sampling_params(cfg)
    with rollout_workers(cfg) as workers:
        rollout = choose_rollout(cfg, env, workers, *_rollout_policy(cfg, target), processor)
        metrics, episodes = evaluate(
            workers, env, tasks, tokenizer, params, seed=seed, verify_workers=cfg.sandbox.workers, rollout=rollout, samples=samples
        )
    passed = [[bool(e.verdict["passed"]) for e in episodes[i * samples : (i + 1) * samples]] for i in range(len(tasks))]
    return {
        "target": target.source,
        "weights": target.weights,
        "step": target.step,
        "env": cfg.env.name,
        "seed": seed,
        "samples": samples,
        "workers": cfg.rollout.num_workers,
        "tasks": len(tasks),
        "temperature": params.temperature,
        "metrics": metrics,
        "pass_at_k": {str(k): v for k, v in pass_at_k_table(passed).items()},
    }


def _rollout_policy(cfg: ExperimentConfig, target: EvalTarget) -> tuple[Any, str | None]:
    """`choose_rollout`'s (model, policy_path): they matter to PARL envs only (the sub-agents)."""
    from rl.rollout_choice import PARL_ENVS

    if cfg.env.name not in PARL_ENVS:
        return None, cfg.policy.path
    path, model = subagent_policy(target)
    return model, path


@contextmanager
def rollout_workers(cfg: ExperimentConfig) -> Iterator[list]:
    """The trainer's rollout workers for `cfg.policy`, on the Ray instance in use or a fresh
    embedded one (`cluster.*`), which is shut down afterwards."""
    import ray

    from rl.console import Console
    from rl.run_state import start_ray_and_workers, stop_workers

    started_ray = not ray.is_initialized()
    workers = None
    try:
        workers = start_ray_and_workers(cfg, cfg.policy, Console(enabled=False))
        yield workers
    finally:
        if workers is not None:
            stop_workers(workers)
        if started_ray and ray.is_initialized():
            ray.shutdown()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task from n samples of which c passed: 1 - C(n - c, k) / C(n, k)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks if ks[-1] == n else [*ks, n]


def pass_at_k_table(passed: list[list[bool]]) -> dict[int, float]:
    """Mean pass@k over tasks, for every k of `ks_up_to(samples)`; `passed[i]`: task i's samples."""
    n = len(passed[0])
    return {k: sum(pass_at_k(n, sum(p), k) for p in passed) / len(passed) for k in ks_up_to(n)}


def format_report(report: dict[str, Any]) -> str:
    """The report as a two-column table: the run's settings, then the figures."""
    where = f"{report['target']} (step {report['step']}, {report['weights']} weights)" if report["step"] is not None else report["target"]
    m = report["metrics"]
    rows: list[tuple[str, str]] = [("pass@1", _pct(m["eval/pass_at_1"]))]
    for key in sorted((k for k in m if k.startswith("eval/pass_at_1_")), key=_natural):
        rows.append((f"  {key.removeprefix('eval/pass_at_1_').replace('kind_', 'kind ').replace('level', 'level ')}", _pct(m[key])))
    rows.append(("mean score", f"{m['eval/score']:.4f}"))
    rows += [(f"pass@{k}", _pct(v)) for k, v in report["pass_at_k"].items() if k != "1"]  # pass@1 heads the table
    shown = {"eval/pass_at_1", "eval/score"} | {k for k in m if k.startswith("eval/pass_at_1_")}
    rows += [(k.removeprefix("eval/"), f"{v:.4g}") for k, v in sorted(m.items()) if k not in shown and isinstance(v, (int, float))]
    settings = [
        ("env", report["env"]),
        ("tasks", str(report["tasks"])),
        ("samples", str(report["samples"])),
        ("seed", str(report["seed"])),
        ("workers", str(report["workers"])),
        ("temperature", f"{report['temperature']:g}"),
    ]
    width = max(len(name) for name, _ in settings + rows)
    lines = [f"held-out evaluation of {where}"]
    lines += [f"{name:<{width}}  {value}" for name, value in settings]
    lines.append("")
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def _natural(key: str) -> tuple:
    """`level2` before `level10`."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


def _pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")  # numpy scalars as plain numbers
    return path
