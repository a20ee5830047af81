"""`rollout.engine: vllm` through real Ray rollout workers and a short training run (real vLLM, CPU).

Skipped only when vLLM is not installed at all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from policies.model import build_policy
from rl.cli import main
from rl.config import load_config
from rl.console import Console
from rl.tracking import default_uri
from rl.run_state import start_ray_and_workers, stop_workers
from rollout import worker as rollout_worker
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (the `vllm` extra: pip install -e '.[vllm]')"),
]

TINY = """
run: {{name: tiny-vllm, seed: 3, runs_dir: {runs}}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 48}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 8}}
rollout: {{engine: vllm, group_size: 4, max_new_tokens: 6, vllm_kv_cache_gib: 1}}
rewards:
  outcome: {{weight: 1.0}}
  format: {{weight: 0.5}}
algorithm: {{dynamic_sampling: false, tis_cap: 2.0}}
# a random policy earns equal rewards (zero advantages); decoupled weight decay still moves every
# weight by 5% per step, so a missed weight sync would show in the step-2 mismatch
optimizer: {{name: adamw, adamw_lr: 5.0e-2, weight_decay: 1.0}}
train: {{steps: 2, tasks_per_step: 4, eval_every: 0}}
tracking: {{progress: false}}
checkpoint: {{every: 0}}
"""


def exp_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.format(runs=tmp_path / "runs"))
    return p


def test_vllm_rollout_worker_serves_the_pushed_weights(tmp_path, ray_session):
    cfg = load_config(exp_file(tmp_path))
    workers = start_ray_and_workers(cfg, cfg.policy, Console(enabled=False))
    try:
        model, tok = build_policy(cfg.policy, seed=11)  # not the worker's init: only a push makes them agree
        hf = HFEngine(model.eval(), tok.eos_token_id, tok.pad_token_id)
        prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+2=", "40-13=", "8+8=", "5-7="]]
        params = SamplingParams(max_new_tokens=6, temperature=0)
        for version in (1, 2):
            rollout_worker.push_weights(workers, model.state_dict(), version=version)
            got = rollout_worker.generate(workers, prompts, params, seed=0)
            want = hf.generate(prompts, params, seed=0)
            assert [c.token_ids for c in got] == [c.token_ids for c in want], f"version {version}"
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.3 * torch.randn_like(p) * p.std().clamp(min=0.02))
    finally:
        stop_workers(workers)


def test_training_with_the_vllm_engine_logs_a_small_sampler_mismatch(tmp_path, ray_session):
    exp = exp_file(tmp_path)
    run_dir = tmp_path / "runs" / "run"
    assert main(["train", str(exp), "--run-dir", str(run_dir)]) == 0
    client = MlflowClient(default_uri(tmp_path / "runs"))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    diffs = client.get_metric_history(run_id, "learner/sampler_logprob_abs_diff")
    assert sorted(m.step for m in diffs) == [1, 2]
    # step 2 samples with the weights pushed after step 1: a missed sync would show here
    assert all(m.value < 1e-3 for m in diffs), [m.value for m in diffs]
    initial, _ = build_policy(load_config(exp).policy, seed=3)
    final = torch.load(run_dir / "checkpoints" / "step_000002" / "model.pt", weights_only=True)
    moved = [(final[k] - v).abs().max() / v.abs().max() for k, v in initial.state_dict().items() if v.abs().max() > 0]
    assert min(moved) > 0.05  # every tensor moved: the sync had something to carry
