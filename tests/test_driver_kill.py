"""The driver killed with SIGKILL mid-run, then `swarmrl train --resume RUN_DIR`: a real
`swarmrl train` subprocess is killed once it has checkpointed and logged a step past the
checkpoint; the resumed run continues from the checkpoint, re-trains that step without logging it
again, and finishes. The MLflow run has every step once; the re-run steps' Parquet files are
rewritten, not duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from rl.checkpoint import latest_checkpoint
from rl.tracking import default_uri

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STEPS, TASKS, GROUP = 6, 6, 6

TINY = f"""
run: {{name: killed, seed: 11, runs_dir: {{runs}}}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 64}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 8}}
rollout: {{group_size: {GROUP}, max_new_tokens: 24}}
algorithm: {{dynamic_sampling: false}}
train: {{steps: {STEPS}, tasks_per_step: {TASKS}, eval_every: 2}}
tracking: {{progress: false}}
checkpoint: {{every: 2, keep: 5}}
"""


def _swarmrl(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # its own session, so the Ray processes it starts can be cleaned up with it after the kill
    return subprocess.Popen([sys.executable, "-m", "rl", "train", *args], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_sigkilled_driver_resumes_with_each_step_logged_once(tmp_path: Path):
    runs = tmp_path / "runs"
    exp = tmp_path / "killed.yaml"
    exp.write_text(TINY.replace("{runs}", str(runs)))
    run_dir = runs / "killed"
    client = MlflowClient(default_uri(runs))

    proc = _swarmrl(str(exp), "--run-dir", str(run_dir))
    deadline = time.monotonic() + 120
    killed_after: list[int] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ckpt = latest_checkpoint(run_dir)
            id_file = run_dir / "mlflow_run_id"
            if ckpt is not None and id_file.exists():
                logged = _steps(client, id_file.read_text().strip(), "time/step_s")
                if logged and logged[-1] > int(ckpt.name.split("_")[1]):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed_after = logged
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray processes the killed driver left behind
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{proc.stdout.read()}"
    checkpoint_step = int(latest_checkpoint(run_dir).name.split("_")[1])
    assert checkpoint_step < killed_after[-1] < STEPS  # a logged step past the checkpoint is trained again
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    before = {m.step: m.value for m in client.get_metric_history(run_id, "reward/mean")}

    resumed = _swarmrl("--resume", str(run_dir))
    out, _ = resumed.communicate(timeout=180)
    try:
        os.killpg(resumed.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert resumed.returncode == 0, out
    assert f"resumed from {latest_checkpoint(run_dir).parent / f'step_{checkpoint_step:06d}'}" in out.replace("\n", "")
    assert "final: step=6" in out

    # the same MLflow run, each step exactly once, also for the steps logged before the kill
    assert (run_dir / "mlflow_run_id").read_text().strip() == run_id
    for key in ("time/step_s", "reward/mean", "faults/worker_restarts"):
        assert _steps(client, run_id, key) == list(range(1, STEPS + 1)), key
    assert _steps(client, run_id, "eval/pass_at_1") == [0, 2, 4, 6]
    after = {m.step: m.value for m in client.get_metric_history(run_id, "reward/mean")}
    assert all(after[s] == v for s, v in before.items())
    assert client.get_run(run_id).info.status == "FINISHED"

    # one Parquet file per step with one step's episodes, none left half-written
    files = sorted(p.name for p in (run_dir / "episodes").iterdir())
    assert files == [f"step_{s:06d}.parquet" for s in range(1, STEPS + 1)]
    for s in range(1, STEPS + 1):
        table = pq.read_table(run_dir / "episodes" / f"step_{s:06d}.parquet")
        assert table.num_rows == TASKS * GROUP and set(table.column("step").to_pylist()) == {s}
