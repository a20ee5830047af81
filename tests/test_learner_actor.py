"""The learner in a Ray actor (how a GPU learner runs) trains exactly as the learner in the driver,
checkpoints and resumes through the actor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl.cli import main
from rl.config import ConfigError, load_config

TINY = """
run: {{name: tiny, seed: 5, runs_dir: {runs}, torch_threads: 1}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 32}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 8}}
rollout: {{group_size: 4, max_new_tokens: 4}}
rewards: {{outcome: {{weight: 1.0}}, format: {{weight: 0.5}}}}
algorithm: {{dynamic_sampling: false, entropy_coef: 0.01}}
train: {{steps: 2, tasks_per_step: 4, eval_every: 0, eval_ema: 0.5}}
tracking: {{progress: false}}
checkpoint: {{every: 1}}
"""


def _weights(run_dir: Path, name: str = "model.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "step_000002" / name, weights_only=True)


@pytest.mark.slow
def test_learner_actor_trains_checkpoints_and_resumes_like_the_driver(tmp_path, ray_session):
    exp = tmp_path / "tiny.yaml"
    exp.write_text(TINY.format(runs=tmp_path / "runs"))
    driver, actor = tmp_path / "runs" / "driver", tmp_path / "runs" / "actor"
    assert main(["train", str(exp), "--run-dir", str(driver)]) == 0
    # one step in the actor, stop, resume to two: the checkpoint goes out of and back into the actor
    assert main(["train", str(exp), "--run-dir", str(actor), "learner.actor=true", "train.steps=1"]) == 0
    assert main(["train", "--resume", str(actor), "train.steps=2"]) == 0
    for name in ("model.pt", "ema.pt", "optimizer.pt"):
        a, b = _weights(driver, name), _weights(actor, name)
        if name == "optimizer.pt":  # nested: compare the tensors it holds
            a, b = _flat(a), _flat(b)
        assert a.keys() == b.keys() and a, name
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (name, k)
    first = torch.load(actor / "checkpoints" / "step_000001" / "model.pt", weights_only=True)
    final = _weights(actor)
    assert any(not torch.equal(first[k], final[k]) for k in final), "the resumed step did not train"


def _flat(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out: dict[str, torch.Tensor] = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    for k, v in items:
        out.update(_flat(v, f"{prefix}/{k}"))
    return out


def test_a_gpu_learner_cannot_be_kept_in_the_driver():
    with pytest.raises(ConfigError, match=r"learner\.actor"):
        load_config("experiments/quickstart.yaml", ["cluster.learner_gpus=1", "learner.actor=false"])
    cfg = load_config("experiments/quickstart.yaml", ["cluster.learner_gpus=1"])
    assert cfg.learner_in_actor and cfg.learner_device == "cuda"
    assert not load_config("experiments/quickstart.yaml").learner_in_actor
