"""The path a user with their own model takes: a local HF folder (a tiny Qwen2 with a byte-level BPE
tokenizer trained here and a ChatML chat template), a dataset file, prompts through the chat template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoTokenizer

from envs.dataset.word_problems import generate, write
from policies.tiny_checkpoint import write_tiny_checkpoint
from rl.cli import main
from rl.config import load_config
from rl.experiment_env import experiment_env
from rl.tracking import default_uri
from rollout.collect import encode_prompt

SYSTEM = "Solve the problem. End with \\boxed{answer}."


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real_path")
    rows = generate(400, seed=0, levels=(1,))
    write(rows, root / "rows.parquet")
    write(rows, root / "rows.jsonl")
    write_tiny_checkpoint(root / "qwen2", [r["question"] for r in rows] + [r["solution"] for r in rows], vocab_size=400, max_position_embeddings=192)
    return root


def experiment(root: Path, data: str, extra: str = "") -> Path:
    p = root / f"exp-{data.replace('.', '-')}.yaml"
    p.write_text(
        f"""
run: {{name: real, seed: 1, runs_dir: {root / 'runs'}}}
cluster: {{num_cpus: 2}}
policy: {{path: {root / 'qwen2'}, chat_template: true}}
sft: {{enabled: false}}
env: {{name: dataset, path: {root / data}, solution_key: solution, eval_size: 8, system_prompt: "{SYSTEM.replace(chr(92), chr(92) * 2)}"}}
rollout: {{group_size: 4, max_new_tokens: 12}}
algorithm: {{dynamic_sampling: false}}
train: {{steps: 2, tasks_per_step: 4, eval_every: 0}}
tracking: {{progress: false}}
{extra}"""
    )
    return p


def test_checkpoint_lengths_and_tokenizer_come_from_the_folder(assets):
    cfg = load_config(experiment(assets, "rows.parquet"))
    assert cfg.policy.max_position_embeddings == 192  # the folder's, not the built-in 256
    assert load_config(experiment(assets, "rows.parquet"), ["policy.max_position_embeddings=100"]).policy.max_position_embeddings == 100


def test_prompts_are_exactly_the_chat_template(assets):
    cfg = load_config(experiment(assets, "rows.parquet"))
    tok = AutoTokenizer.from_pretrained(assets / "qwen2")
    env = experiment_env(cfg)
    tasks = env.sample(5, np.random.default_rng(0)) + env.eval_tasks(3)
    for task in tasks:
        raw = task.payload["raw_prompt"]
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": raw}]
        assert task.prompt == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert encode_prompt(tok, task) == list(ids)
        assert task.prompt.endswith("<|im_start|>assistant\n")
        # graded on the row, not on the rendered text
        assert env.verify(task, env.oracle(task)).passed
        assert env.oracle(task) == next(r for r in pq.read_table(assets / "rows.parquet").to_pylist() if r["question"] == raw)["solution"]


def test_chat_template_refused_where_it_cannot_apply(assets, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in (assets / "qwen2").iterdir():
        if f.name != "chat_template.jinja":
            (plain / f.name).write_bytes(f.read_bytes())
    exp = experiment(assets, "rows.parquet")
    assert main(["config", str(exp), f"policy.path={plain}"]) == 2
    assert "has no chat template" in capsys.readouterr().err
    assert main(["config", str(exp), "policy.chat_template=false"]) == 2
    assert "env.system_prompt is a chat message" in capsys.readouterr().err


@pytest.mark.slow
def test_two_steps_through_the_dataset_env(assets, ray_session):
    """Training rows from the JSONL file, held-out rows from the Parquet file (the same problems:
    this checks the readers, not generalisation)."""
    run_dir = assets / "runs" / "two_steps"
    exp = experiment(assets, "rows.jsonl", extra=f"checkpoint: {{every: 1}}")
    assert main(["train", str(exp), "--run-dir", str(run_dir), f"env.eval_path={assets / 'rows.parquet'}"]) == 0
    tok = AutoTokenizer.from_pretrained(assets / "qwen2")
    table = pq.read_table(run_dir / "episodes" / "step_000002.parquet").to_pylist()
    assert len(table) == 16
    for row in table:
        assert row["prompt"].startswith("<|im_start|>system\n" + SYSTEM) and row["prompt"].endswith("<|im_start|>assistant\n")
        assert json.loads(row["prompt_ids"]) == tok(row["prompt"], add_special_tokens=False)["input_ids"]
    # the sampler (hf engine, KV cache) and the learner (full forward) see the same distribution
    client = MlflowClient(default_uri(assets / "runs"))
    metrics = client.get_run((run_dir / "mlflow_run_id").read_text().strip()).data.metrics
    assert metrics["learner/sampler_logprob_max_abs_diff"] < 1e-3
    assert "eval/pass_at_1" in json.loads((run_dir / "summary.json").read_text())
    # the run keeps the policy's tokenizer and chat template for export and eval
    assert AutoTokenizer.from_pretrained(run_dir / "policy").chat_template == tok.chat_template
