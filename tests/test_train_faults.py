"""A rollout worker SIGKILLed during a real training run (real local Ray, real MLflow store, real
Parquet): the run finishes, the restart is in MLflow (`faults/worker_restarts`) and on the
console, and every step's episodes are the ones of an undisturbed run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from rl.cli import main
from rl.tracking import default_uri

pytestmark = pytest.mark.slow

STEPS = 6
TINY = """
run: {{name: faults, seed: 9, runs_dir: {runs}}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 64}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 8}}
rollout: {{num_workers: 2, group_size: 4, max_new_tokens: 24, torch_threads: 1}}
algorithm: {{dynamic_sampling: false}}
train: {{steps: 6, tasks_per_step: 4, eval_every: 0}}
tracking: {{progress: false}}
checkpoint: {{every: 0}}
"""


def _rollout_worker_pids() -> list[int]:
    """Live RolloutWorker processes of this test's Ray instance: children of a raylet that is a
    child of this process (never another user's actors)."""

    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            if cmd.startswith(b"ray::RolloutWorker") and parent(parent(int(entry))) == os.getpid():
                found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def _completions(run_dir: Path) -> list[list]:
    """Per step, the sampled token ids of each episode in order."""
    tables = [pq.read_table(run_dir / "episodes" / f"step_{s:06d}.parquet") for s in range(1, STEPS + 1)]
    return [[[t["token_ids"] for t in json.loads(turns)] for turns in table.column("turns").to_pylist()] for table in tables]


def test_worker_killed_during_training_is_recovered_and_logged(tmp_path: Path, ray_session, capsys):
    exp = tmp_path / "faults.yaml"
    exp.write_text(TINY.format(runs=tmp_path / "runs"))
    straight, faulty = tmp_path / "runs" / "straight", tmp_path / "runs" / "faulty"
    assert main(["train", str(exp), "--run-dir", str(straight)]) == 0
    capsys.readouterr()

    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(rc=main(["train", str(exp), "--run-dir", str(faulty)])))
    thread.start()
    deadline = time.monotonic() + 120
    while not (faulty / "episodes" / "step_000002.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = _rollout_worker_pids()
    assert len(pids) == 2 and thread.is_alive()
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=300)
    assert result.get("rc") == 0

    client = MlflowClient(default_uri(tmp_path / "runs"))
    run_id = (faulty / "mlflow_run_id").read_text().strip()
    restarts = client.get_metric_history(run_id, "faults/worker_restarts")
    assert sorted(m.step for m in restarts) == list(range(1, STEPS + 1))
    assert sum(m.value for m in restarts) == 1
    assert "1 rollout worker restart(s) recovered" in "".join(capsys.readouterr())
    assert _completions(faulty) == _completions(straight)  # nothing lost, duplicated or sampled with stale weights
