"""`swarmrl sweep DIR_OR_GLOB`: run several experiments as one MLflow experiment.

Every file is validated before the first run starts. The runs share one MLflow experiment
(`--experiment`, default: the folder's name); each run is named after its file, and tagged
with the config keys in which the files differ (`sweep.<key>`), so that `swarmrl compare`
and the MLflow UI show what was varied. The plan says which keys those are, and warns when they
go beyond the reward schedules (`rewards.*`): the curves of such a sweep do not compare schedules
alone.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Callable

from rl.config import ConfigError, ExperimentConfig, load_config
from rl.tracking import flatten


def sweep_files(pattern: str) -> list[Path]:
    p = Path(pattern)
    files = sorted(p.glob("*.yaml")) if p.is_dir() else sorted(Path(f) for f in glob.glob(pattern))
    if not files:
        raise ConfigError(f"sweep {pattern!r}: no experiment YAMLs found")
    return files


def differing_keys(configs: list[ExperimentConfig]) -> list[str]:
    flat = [flatten(c.model_dump(mode="json")) for c in configs]
    keys = sorted(set().union(*flat))
    return [k for k in keys if k != "run.name" and len({repr(f.get(k)) for f in flat}) > 1]


def plan_sweep(pattern: str, overrides: list[str], experiment: str | None, log=print) -> list[tuple[Path, ExperimentConfig]]:
    files = sweep_files(pattern)
    configs = [load_config(f, overrides) for f in files]
    exp_name = experiment or (Path(pattern).name if Path(pattern).is_dir() else files[0].parent.name)
    varied = differing_keys(configs)
    shown = sorted({k.split(".weight.")[0] + ".weight" if ".weight." in k else k for k in varied})  # a schedule's fields as one key
    log(f"sweep {exp_name}: {len(files)} run{'s' * (len(files) != 1)}; the files differ in {', '.join(shown) or 'nothing but run.name'}")
    beyond = [k for k in varied if not k.startswith("rewards.")]
    if beyond:
        log(f"note: the files differ in more than their reward schedules: {', '.join(beyond)} (a difference between the runs may come from these)")
    planned = []
    for f, cfg in zip(files, configs):
        flat = flatten(cfg.model_dump(mode="json"))
        tags = {**cfg.run.tags, "sweep": exp_name, **{f"sweep.{k}": str(flat.get(k))[:250] for k in varied}}
        cfg = cfg.model_copy(
            update={
                "run": cfg.run.model_copy(update={"name": f.stem, "tags": tags}),
                "tracking": cfg.tracking.model_copy(update={"experiment": exp_name}),
            }
        )
        planned.append((f, cfg))
    return planned


def run_sweep(planned: list[tuple[Path, ExperimentConfig]], train: Callable, log=print) -> list[dict]:
    results = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i, (f, cfg) in enumerate(planned, 1):
        run_dir = Path(cfg.run.runs_dir) / f"{cfg.tracking.experiment}-{stamp}" / cfg.run.name
        log(f"sweep {i}/{len(planned)}: {f.name} → {run_dir}")
        results.append({"file": str(f), "run_dir": str(run_dir), **train(cfg, run_dir)})
    return results
