"""Vision end to end: SFT bootstrap + 2 RL steps of a tiny LLaVA on real Ray and a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from envs.vision import VisionEnv
from rl.cli import main
from rl.tracking import default_uri

pytestmark = pytest.mark.slow

OVERRIDES = [
    "cluster.num_cpus=2",
    "policy.hidden_size=64",
    "policy.num_layers=2",
    "policy.num_heads=2",
    "policy.intermediate_size=128",
    "policy.vision.num_layers=1",
    "sft.examples=64",
    "sft.batch_size=16",
    "env.eval_size=10",
    "rollout.group_size=4",
    "rollout.max_new_tokens=4",
    "algorithm.dynamic_sampling=false",
    "train.steps=2",
    "train.tasks_per_step=4",
    "train.eval_every=0",
    "train.max_minutes=null",
    "tracking.progress=false",
    "tracking.sample_episodes=4",
    "checkpoint.every=0",
]


def test_two_rl_steps_keep_images_and_log_a_sample_grid(tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        run_dir = tmp_path / "runs" / "vision"
        args = ["train", "experiments/vision.yaml", "--run-dir", str(run_dir), f"run.runs_dir={tmp_path / 'runs'}", *OVERRIDES]
        assert main(args) == 0
    finally:
        ray.shutdown()

    # episodes keep their image bytes: the PNG of the task they answered
    env = VisionEnv(levels=(1, 2))
    rows = pq.read_table(run_dir / "episodes" / "step_000002.parquet").to_pylist()
    assert len(rows) == 16
    train_tasks = env.sample(4, np.random.default_rng([0, 2]))  # the trainer's stream for step 2
    for r in rows:
        assert len(r["images"]) == 1 and r["images"][0] == train_tasks[r["group"]].images[0]
        assert r["prompt"] == train_tasks[r["group"]].prompt
        assert json.loads(r["prompt_ids"]).count(100) == 36  # the image placeholder, expanded

    client = MlflowClient(default_uri(tmp_path / "runs"))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    kinds = {k for k in run.data.metrics if k.startswith("eval/pass_at_1_kind_")}
    assert kinds == {f"eval/pass_at_1_kind_{k}" for k in ("count", "identify", "spatial", "digits", "chart")}
    assert sorted(m.step for m in client.get_metric_history(run_id, "time/step_s")) == [1, 2]
    grids = [a.path for a in client.list_artifacts(run_id, "samples")]
    assert grids == ["samples/eval_step_000000.png", "samples/eval_step_000002.png"]
    local = client.download_artifacts(run_id, grids[-1], str(tmp_path / "dl"))
    assert Image.open(local).size == (4 * 144, 3 * (144 + 52))  # 10 eval tasks, 4 per row
    sample = json.loads(Path(client.download_artifacts(run_id, "episodes/eval_step_000002.json", str(tmp_path / "dl"))).read_text())
    assert len(sample) == 4 and all(len(e["images"][0]) == 64 for e in sample)  # sha256 hex, not bytes
