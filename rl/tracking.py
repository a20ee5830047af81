"""MLflow tracking: one run per training run; a resumed run continues the same MLflow run.

The MLflow run id is kept in `<run_dir>/mlflow_run_id`. On resume, steps after the checkpoint
are trained again; a step the crashed process had already logged is not logged twice (training
is deterministic per seed, so the values would be the same). A step's metrics go in one
`log_batch` (one transaction in the SQL store), so a kill leaves a step logged whole or not at all.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient


def default_uri(runs_dir: str | Path) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


class Tracker:
    def __init__(
        self,
        uri: str,
        experiment: str,
        run_dir: Path,
        run_name: str,
        params: dict[str, Any],
        artifact_root: Path | None = None,
        tags: dict[str, str] | None = None,
    ):
        # MLflow's alembic migrations log at INFO on every fresh SQLite store.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        id_file = Path(run_dir) / "mlflow_run_id"
        self.logged_until = -1
        if id_file.exists():
            self.run_id = id_file.read_text().strip()
            self.logged_until = self._last_logged_step()
            self.client.set_terminated(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            # Without an explicit location MLflow puts artifacts in ./mlruns of whatever the CWD is.
            location = (Path(artifact_root).resolve() / "mlartifacts").as_uri() if artifact_root else None
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment, artifact_location=location)
            run = self.client.create_run(exp_id, run_name=run_name, tags={"swarmrl.run_dir": str(Path(run_dir).resolve()), **(tags or {})})
            self.run_id = run.info.run_id
            id_file.write_text(self.run_id)
            flat = flatten(params)
            items = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in flat.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step <= self.logged_until:
            return
        ms = [mlflow.entities.Metric(k, float(v), int(_now_ms()), step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(ms), 500):
            self.client.log_batch(self.run_id, metrics=ms[i : i + 500])

    def _last_logged_step(self) -> int:
        """The highest step any metric of the run has (-1: none). Every metric counts, not one
        per-step key: a run killed after its step-0 evaluation has logged step 0 only."""
        keys = self.client.get_run(self.run_id).data.metrics
        return max((m.step for k in keys for m in self.client.get_metric_history(self.run_id, k)), default=-1)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Any, name: str) -> None:
        self.client.log_dict(self.run_id, data, name)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _now_ms() -> float:
    import time

    return time.time() * 1000
