"""End to end on a real local Ray instance and a real MLflow store: train, resume, compare."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from rl.cli import main
from rl.tracking import default_uri

TINY = """
run: {{name: tiny, seed: 3, runs_dir: {runs}}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 32}}
sft: {{examples: 2048, batch_size: 32, lr: 3.0e-3}}
env: {{name: math, levels: [1], eval_size: 16}}
rollout: {{group_size: 4, max_new_tokens: 4}}
rewards:
  outcome: {{weight: 1.0}}
  format: {{weight: {{kind: linear, start: 0.5, end: 0.0, end_step: 4}}}}
algorithm: {{dynamic_sampling: false}}
optimizer: {{lr: 3.0e-3, adamw_lr: 3.0e-4, warmup_steps: 4}}
train: {{steps: 4, tasks_per_step: 4, eval_every: 2, eval_ema: 0.5}}
tracking: {{progress: false}}
checkpoint: {{every: 2}}
"""

pytestmark = pytest.mark.slow


def exp_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.format(runs=tmp_path / "runs"))
    return p


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "step_000004" / "model.pt", weights_only=True)


def history(run_dir: Path, key: str) -> list[int]:
    client = MlflowClient(default_uri(run_dir.parent))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_train_then_resume_matches_straight_run(tmp_path, ray_session):
    exp = exp_file(tmp_path)
    straight, split = tmp_path / "runs" / "straight", tmp_path / "runs" / "split"
    assert main(["train", str(exp), "--run-dir", str(straight)]) == 0

    # what a run leaves behind
    for step in range(1, 5):
        table = pq.read_table(straight / "episodes" / f"step_{step:06d}.parquet")
        assert table.num_rows == 16  # tasks_per_step * group_size
        comps = table.column("reward_components").to_pylist()
        assert all('"outcome"' in c and '"format"' in c for c in comps)
    assert history(straight, "time/step_s") == [1, 2, 3, 4]
    assert history(straight, "eval/pass_at_1") == [0, 2, 4]
    assert history(straight, "weight/format")  # schedule weights are logged
    client = MlflowClient(default_uri(tmp_path / "runs"))
    run = client.get_run((straight / "mlflow_run_id").read_text().strip())
    assert run.data.params["train.steps"] == "4" and run.info.status == "FINISHED"
    assert run.data.metrics["weight/format"] == 0.0  # linear 0.5 → 0 by step 4
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "episodes")
    }
    assert "config.yaml" in artifacts and "episodes/eval_step_000000.json" in artifacts
    assert (tmp_path / "runs" / "mlartifacts").is_dir()

    # 2 steps, stop; resume to 4: same final parameters, same MLflow run, each step once
    assert main(["train", str(exp), "--run-dir", str(split), "train.steps=2"]) == 0
    run_id = (split / "mlflow_run_id").read_text()
    assert main(["train", "--resume", str(split), "train.steps=4"]) == 0
    assert (split / "mlflow_run_id").read_text() == run_id
    assert history(split, "time/step_s") == [1, 2, 3, 4]
    # the warm-up continues where it stopped: the restored optimizer's lr (half the base at step 2)
    # must not become the new base
    client = MlflowClient(default_uri(tmp_path / "runs"))
    factors = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "learner/lr_factor"))
    assert factors == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    a, b = final_weights(straight), final_weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # the evaluated weight average resumes too; the evaluation at step 2 served it and then gave
    # the workers the trained weights back (else steps 3-4 of the straight run would differ)
    avg_a, avg_b = (torch.load(r / "checkpoints" / "step_000004" / "ema.pt", weights_only=True) for r in (straight, split))
    assert avg_a.keys() == a.keys()
    for k in avg_a:
        assert torch.allclose(avg_a[k], avg_b[k], atol=1e-5), k
    assert any(not torch.allclose(avg_a[k], a[k]) for k in a if a[k].is_floating_point())
    # and training moved the weights at all
    mid = torch.load(straight / "checkpoints" / "step_000002" / "model.pt", weights_only=True)
    assert any(not torch.equal(mid[k], a[k]) for k in a)


def test_resume_without_checkpoint_dir_is_a_config_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_sweep_then_compare(tmp_path, ray_session, capsys):
    sweep_dir = tmp_path / "sched"
    sweep_dir.mkdir()
    base = TINY.format(runs=tmp_path / "runs").replace("train: {steps: 4,", "train: {steps: 2,")
    base = base.replace("checkpoint: {every: 2}", "checkpoint: {every: 0}")
    variants = {
        "annealed": "  format: {weight: {kind: linear, start: 0.5, end: 0.0, end_step: 4}}",
        "constant": "  format: {weight: 0.2}",
    }
    for name, line in variants.items():
        text = base.replace("  format: {weight: {kind: linear, start: 0.5, end: 0.0, end_step: 4}}", line)
        (sweep_dir / f"{name}.yaml").write_text(text)
    assert main(["sweep", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "compare with: swarmrl compare sched" in out

    png = tmp_path / "cmp.png"
    assert main(["compare", "sched", "--runs-dir", str(tmp_path / "runs"), "--out", str(png)]) == 0
    table = capsys.readouterr().out
    assert "annealed" in table and "constant" in table and "pass@1 final" in table
    assert "rewards.format.weight.kind=linear" in table and "rewards.format.weight.kind=constant" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(default_uri(tmp_path / "runs"))
    exp = client.get_experiment_by_name("sched")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["annealed", "constant"]
    for r in runs:
        assert [a.path for a in client.list_artifacts(r.info.run_id, "compare")] == ["compare/cmp.png"]
        assert r.data.tags["sweep.rewards.format.weight.kind"] in {"linear", "constant"}


def test_sweep_validates_every_file_before_running(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.yaml").write_text(TINY.format(runs=tmp_path / "runs"))
    (d / "b.yaml").write_text(TINY.format(runs=tmp_path / "runs").replace("outcome: {weight: 1.0}", "outcme: {weight: 1.0}"))
    assert main(["sweep", str(d)]) == 2
    assert "outcme" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_compare_unknown_experiment_is_clear(tmp_path, capsys):
    assert main(["compare", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err


def test_code_env_trains_through_the_sandbox(tmp_path, ray_session):
    text = TINY.format(runs=tmp_path / "runs")
    text = text.replace("env: {name: math, levels: [1], eval_size: 16}", "env: {name: code, levels: [1], eval_size: 8}\nsandbox: {workers: 2}")
    text = text.replace("max_position_embeddings: 32", "max_position_embeddings: 128").replace("max_new_tokens: 4", "max_new_tokens: 24")
    text = text.replace("train: {steps: 4,", "train: {steps: 2,").replace("examples: 2048", "examples: 256")
    exp = tmp_path / "code.yaml"
    exp.write_text(text)
    run_dir = tmp_path / "runs" / "code"
    assert main(["train", str(exp), "--run-dir", str(run_dir)]) == 0
    rows = pq.read_table(run_dir / "episodes" / "step_000002.parquet").to_pylist()
    assert len(rows) == 16
    verdicts = [__import__("json").loads(r["verdict"]) for r in rows]
    assert all("reason" in v for v in verdicts)
    assert history(run_dir, "time/step_s") == [1, 2]
