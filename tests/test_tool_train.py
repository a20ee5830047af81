"""Tool-using RL end to end (real local Ray, real sandbox, real MLflow store, real Parquet): a
3-step `tool_math` run with asynchronous rollouts (`max_staleness: 1`) whose episodes carry their
turns, each policy turn its weights version within the staleness bound, tool observations out of
the loss, and whose tool metrics reach MLflow for training and evaluation."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from rl.cli import main
from rl.tracking import default_uri

pytestmark = pytest.mark.slow

TOOL_YAML = """
run: {{name: tools, seed: 0, runs_dir: {runs}}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 64}}
sft: {{examples: 1500, batch_size: 32, lr: 2.0e-3}}
env: {{name: tool_math, levels: [1], eval_size: 16, tool_fraction: 0.5}}
agent: {{max_turns: 3, max_tool_calls: 2, max_total_tokens: 48}}
sandbox: {{timeout_s: 2.0}}
rollout: {{num_workers: 1, group_size: 4, max_new_tokens: 10, torch_threads: 1, max_staleness: 1}}
algorithm: {{dynamic_sampling: false}}
train: {{steps: 3, tasks_per_step: 8, eval_every: 3}}
tracking: {{progress: false}}
checkpoint: {{every: 0}}
"""


def test_tool_math_trains_end_to_end(tmp_path, ray_session):
    exp = tmp_path / "tools.yaml"
    exp.write_text(TOOL_YAML.format(runs=tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "tools-run"
    assert main(["train", str(exp), "--run-dir", str(run_dir)]) == 0

    calls = 0
    for step in (1, 2, 3):
        rows = pq.read_table(run_dir / "episodes" / f"step_{step:06d}.parquet").to_pylist()
        assert len(rows) == 8 * 4
        for row in rows:
            calls += _check_row(row, learner_version=step - 1, k=1)
    assert calls > 0, "the bootstrapped policy never called its tool"

    client = MlflowClient(default_uri(tmp_path / "runs"))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    metrics = client.get_run(run_id).data.metrics
    for key in ("tools/calls", "tools/errors", "tools/turns", "tools/answered", "eval/tools/calls", "eval/pass_at_1"):
        assert key in metrics, key
    assert 0 < metrics["tools/calls"] <= 2 and 1 <= metrics["tools/turns"] <= 3


def _check_row(row: dict, learner_version: int, k: int) -> int:
    """Checks one Parquet row; returns its tool calls."""
    turns = json.loads(row["turns"])
    mine = [t for t in turns if t["role"] == "assistant"]
    assert turns[0]["role"] == "assistant" and len(mine) <= 3
    calls = 0
    for prev, turn in zip(turns, turns[1:]):
        if turn["role"] == "tool":  # every observation answers the policy line before it, untrained
            assert prev["role"] == "assistant" and not turn["trainable"] and turn["text"].startswith(">")
            calls += prev["text"].startswith("$")
    assert all(t["trainable"] == (t["role"] == "assistant") for t in turns)
    assert row["completion"] == "".join(t["text"] for t in mine)
    versions = [t["policy_version"] for t in mine]
    assert all(learner_version - k <= v <= learner_version for v in versions), (versions, learner_version)
    assert row["policy_version"] == min(versions)
    return calls
