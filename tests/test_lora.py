"""LoRA for RL (`policy.lora`, `policies/lora.py`): what trains, what the workers are served,
the KL reference, QK-Clip on adapted q/k, the config's refusals, and one short run."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from policies.lora import (
    ADAPTER,
    adapter_parameters,
    adapters_disabled,
    apply_lora,
    lora_layers,
    merged_checkpoint_state,
    merged_state_dict,
    save_lora_settings,
)
from policies.model import build_policy
from rl.batch import build_batch
from rl.config import ConfigError, ExperimentConfig, validate_config
from rl.learner import Learner
from rollout.episode import Episode, Turn

pytest.importorskip("peft")

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "head_dim": 32, "intermediate_size": 128, "max_position_embeddings": 32}


def config(lora: dict | None = None, **sections: dict) -> ExperimentConfig:
    policy = {**SMALL, **({"lora": lora} if lora is not None else {})}
    data = {"policy": policy, "env": {"name": "math", "levels": [1]}, "sft": {"enabled": False}, "rollout": {"max_new_tokens": 6}}
    return validate_config({**data, **sections})


def base_model(seed: int = 0):
    return build_policy(config().policy, seed=seed)


def adapted(seed: int = 0, lora: dict | None = None, nudge: float = 0.1):
    """(LoRA model, its base before the adapters, tokenizer); B made non-zero so the adapters matter."""
    lora = lora or {"r": 4, "alpha": 8}
    model, tok = base_model(seed)
    base = copy.deepcopy(model)
    apply_lora(model, config(lora).policy.lora, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in adapter_parameters(model).items():
            if ".lora_B." in name:
                p.copy_(nudge * torch.randn(p.shape, generator=g))
    return model, base, tok


def batch_of(tokenizer, n: int = 6, seed: int = 0, advantages: list[float] | None = None):
    g = torch.Generator().manual_seed(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in (tokenizer.pad_token_id, tokenizer.eos_token_id)]
    episodes = []
    for i in range(n):
        p, c = int(torch.randint(2, 8, (), generator=g)), int(torch.randint(2, 6, (), generator=g))
        ids = [vocab[int(j)] for j in torch.randint(0, len(vocab), (p + c,), generator=g)]
        turn = Turn(role="assistant", text="", token_ids=ids[p:], logprobs=[-2.0] * c, trainable=True)
        episodes.append(Episode(task_id=str(i), env="math", prompt="", prompt_ids=ids[:p], turns=[turn], group=i // 2))
    adv = advantages if advantages is not None else [(-1.0) ** i for i in range(n)]
    return build_batch(episodes, adv, tokenizer.pad_token_id)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


# ----------------------------------------------------------------------------- what trains


def test_only_adapters_get_gradients_and_move_with_muon():
    model, tok = base_model(seed=1)
    apply_lora(model, config({"r": 4}).policy.lora, seed=1)
    cfg = config({"r": 4}, optimizer={"lr": 2e-2})
    learner = Learner.from_config(model, cfg)
    adapters = adapter_parameters(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(adapters)
    assert len(adapters) == 2 * 7 * SMALL["num_layers"]  # A and B on every default target
    # A and B are hidden 2-D matrices: Muon, and nothing is left for AdamW
    assert learner.optimizer.assignment == dict.fromkeys(adapters, "muon")

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = batch_of(tok, seed=1)
    for _ in range(2):  # B starts at zero, so A's gradient is zero until B has moved once
        out = learner.update(batch)
    assert out["learner/skipped_steps"] == 0 and out["learner/qk_clipped_heads"] == 0
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and grads <= set(adapters)
    for n, p in model.named_parameters():
        if n in adapters:
            assert not torch.equal(p, before[n]), f"adapter {n} did not move"
        else:
            assert torch.equal(p, before[n]), f"base parameter {n} moved"


# ----------------------------------------------------------------------------- what the workers get


def test_merged_weights_give_the_adapted_logits_and_leave_the_model_alone():
    model, _, tok = adapted(seed=2)
    batch = batch_of(tok, seed=2)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_state_dict(model)
    for k, v in model.state_dict().items():  # computed on the side: adapters still separate
        assert torch.equal(v, state_before[k]), k

    plain, _ = base_model(seed=99)  # another init: every weight must come from `merged`
    assert merged.keys() == plain.state_dict().keys()
    plain.load_state_dict(merged, strict=True)
    torch.testing.assert_close(logits(plain, batch), logits(model, batch), atol=1e-5, rtol=0)

    # what PEFT's own merge leaves in the base layers
    peft_merged = copy.deepcopy(model)
    for name, layer in lora_layers(peft_merged).items():
        layer.merge()
        torch.testing.assert_close(merged[f"{name}.weight"], layer.base_layer.weight, atol=1e-6, rtol=0)


def test_a_saved_checkpoint_merges_from_the_run_settings_alone(tmp_path):
    model, _, _ = adapted(seed=3, lora={"r": 2, "alpha": 5.0})
    save_lora_settings(config({"r": 2, "alpha": 5.0}).policy.lora, tmp_path)
    assert json.loads((tmp_path / "lora.json").read_text())["scaling"] == 2.5
    torch.save(model.state_dict(), tmp_path / "model.pt")
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    from_disk = merged_checkpoint_state(saved, tmp_path)
    live = merged_state_dict(model)
    assert from_disk.keys() == live.keys()
    for k in live:
        assert torch.equal(from_disk[k], live[k]), k
    # already merged (a LoRA run's average) or never adapted: unchanged
    assert merged_checkpoint_state(live, tmp_path).keys() == live.keys()
    with pytest.raises(ValueError, match="lora.json"):
        merged_checkpoint_state(saved, tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- the KL reference


def test_reference_logprobs_are_the_base_models():
    model, base, tok = adapted(seed=4)
    cfg = config({"r": 4, "alpha": 8}, algorithm={"kl_coef": 0.1}, optimizer={"qk_clip": False})
    learner = Learner.from_config(model, cfg)
    assert learner.ref_model is None  # no second copy of the weights
    batch = batch_of(tok, seed=4)
    m = batch.completion_mask.bool()
    model.train()
    ref = learner._reference_logprobs(batch)
    expected = Learner.from_config(base, config())._logprobs(base, batch)[0].detach()
    torch.testing.assert_close(ref[m], expected[m], atol=1e-6, rtol=0)
    # the adapters are back on afterwards, trainable, and they do change the policy
    assert model.training and all(not layer.disable_adapters for layer in lora_layers(model).values())
    assert all(p.requires_grad for p in adapter_parameters(model).values())
    policy = learner._logprobs(model, batch)[0].detach()
    assert (policy[m] - ref[m]).abs().max() > 1e-3


def test_full_fine_tuning_keeps_a_frozen_copy_as_reference():
    model, tok = base_model(seed=7)
    learner = Learner.from_config(model, config(algorithm={"kl_coef": 0.1}))
    assert learner.ref_model is not None and learner.ref_model is not model
    batch = batch_of(tok, seed=7)
    m = batch.completion_mask.bool()
    torch.testing.assert_close(learner._reference_logprobs(batch)[m], learner._logprobs(model, batch)[0].detach()[m], atol=1e-6, rtol=0)


def test_adapters_disabled_restores_what_was_frozen():
    model, _, _ = adapted(seed=5)
    frozen = next(n for n in adapter_parameters(model) if ".lora_A." in n)
    adapter_parameters(model)[frozen].requires_grad_(False)
    with adapters_disabled(model):
        pass
    flags = {n: p.requires_grad for n, p in adapter_parameters(model).items()}
    assert not flags.pop(frozen) and all(flags.values())


# ----------------------------------------------------------------------------- QK-Clip


def test_qk_clip_scales_the_merged_rows_of_the_clipped_head_only():
    from rl.optim import qk_clip

    model, _, _ = adapted(seed=6, lora={"r": 4, "target_modules": ["q_proj", "k_proj"]})
    before = merged_state_dict(model)
    snapshot_a = lora_layers(model)["model.layers.0.self_attn.q_proj"].lora_A[ADAPTER].weight.clone()
    tau, head, d = 10.0, 1, SMALL["head_dim"]
    stats = qk_clip(model, {0: torch.tensor([0.5 * tau, 4.0 * tau]), 1: torch.tensor([tau, tau])}, tau)
    assert stats["clipped_heads"] == 1
    after = merged_state_dict(model)
    rows = slice(head * d, (head + 1) * d)
    factor = math.sqrt(tau / (4.0 * tau))
    for key in before:
        if key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
            torch.testing.assert_close(after[key][rows], factor * before[key][rows], atol=1e-6, rtol=1e-6)
            other = torch.ones(after[key].shape[0], dtype=torch.bool)
            other[rows] = False
            assert torch.equal(after[key][other], before[key][other]), key
        else:
            assert torch.equal(after[key], before[key]), key
    # A is shared by every head of the layer: the clip leaves it alone and scales B's rows
    layer = lora_layers(model)["model.layers.0.self_attn.q_proj"]
    assert torch.equal(layer.lora_A[ADAPTER].weight, snapshot_a)


# ----------------------------------------------------------------------------- config and setup errors


def test_kl_with_qk_clip_under_lora_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="optimizer.qk_clip") as e:
        config({"r": 4}, algorithm={"kl_coef": 0.1})
    assert "algorithm.kl_coef" in str(e.value)
    config({"r": 4}, algorithm={"kl_coef": 0.1}, optimizer={"qk_clip": False})
    config({"r": 4}, algorithm={"kl_coef": 0.1}, optimizer={"name": "adamw"})
    config(algorithm={"kl_coef": 0.1})  # full fine-tuning keeps its frozen copy


@pytest.mark.parametrize(
    "lora, key",
    [({"r": 0}, "policy.lora.r"), ({"dropout": 1.0}, "policy.lora.dropout"), ({"target_modules": []}, "policy.lora.target_modules"), ({"rank": 4}, "policy.lora.rank")],
)
def test_bad_lora_keys_name_the_key(lora, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(lora)


def test_targets_must_be_hidden_linear_layers():
    model, _ = base_model()
    with pytest.raises(ValueError, match=r"policy\.lora\.target_modules: 'qproj' names no linear layer.*q_proj"):
        apply_lora(model, config({"target_modules": ["qproj"]}).policy.lora)
    with pytest.raises(ValueError, match="output head"):
        apply_lora(model, config({"target_modules": ["lm_head"]}).policy.lora)
    with pytest.raises(ValueError, match="names no linear layer"):
        apply_lora(model, config({"target_modules": ["embed_tokens"]}).policy.lora)


def test_missing_peft_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    model, _ = base_model()
    with pytest.raises(ImportError, match="pip install peft"):
        apply_lora(model, config({}).policy.lora)


def test_lora_settings_do_not_invalidate_the_sft_cache():
    assert config({"r": 4}).sft_fingerprint() == config().sft_fingerprint()


# ----------------------------------------------------------------------------- one short run

RUN = """
run: {{name: lora, seed: 5, runs_dir: {runs}}}
cluster: {{num_cpus: 2}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 32, lora: {{r: 4, alpha: 8}}}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 4}}
rollout: {{group_size: 4, max_new_tokens: 4}}
rewards:
  outcome: {{weight: 1.0}}
algorithm: {{dynamic_sampling: false, entropy_coef: 0.1}}
optimizer: {{lr: 2.0e-2}}
train: {{steps: 2, tasks_per_step: 4, eval_every: 0, eval_ema: 0.5}}
tracking: {{progress: false}}
checkpoint: {{every: 1}}
"""


def metric(run_dir: Path, key: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    from rl.tracking import default_uri

    client = MlflowClient(default_uri(run_dir.parent))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.mark.slow
def test_lora_run_serves_merged_weights_and_resumes(tmp_path, ray_session):
    from rl.cli import main
    from rollout.episode import read_parquet

    exp = tmp_path / "lora.yaml"
    exp.write_text(RUN.format(runs=tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "lora"
    assert main(["train", str(exp), "--run-dir", str(run_dir), "train.steps=1"]) == 0
    assert main(["train", "--resume", str(run_dir), "train.steps=2"]) == 0
    assert sorted(metric(run_dir, "time/step_s")) == [1, 2]

    # step 2 was sampled from the adapters trained in step 1, restored from the checkpoint and
    # pushed merged: the workers' log-probs are the learner's ...
    assert metric(run_dir, "learner/sampler_logprob_max_abs_diff")[2] < 1e-4
    cfg = validate_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    base, tok = build_policy(cfg.policy, seed=cfg.run.seed)
    episodes = read_parquet(run_dir / "episodes" / "step_000002.parquet")
    batch = build_batch(episodes, [0.0] * len(episodes), tok.pad_token_id)
    base_lp = Learner.from_config(base, config())._logprobs(base, batch)[0].detach()
    m = batch.completion_mask.bool()
    assert (base_lp[m] - batch.old_logprobs[m]).abs().max() > 1e-3  # ... and not the base model's

    # the checkpoint: the base as built, the adapters moved; the average is kept merged
    saved = torch.load(run_dir / "checkpoints" / "step_000002" / "model.pt", weights_only=True)
    for k, v in base.state_dict().items():
        key = k if k in saved else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(saved[key], v), k
    assert any(".lora_B." in k and saved[k].abs().max() > 0 for k in saved)
    ema = torch.load(run_dir / "checkpoints" / "step_000002" / "ema.pt", weights_only=True)
    assert ema.keys() == base.state_dict().keys()
    assert merged_checkpoint_state(saved, run_dir / "policy").keys() == base.state_dict().keys()

    # the export folds the adapters in: stock transformers scores step 2's completions as the workers did
    from transformers import AutoModelForCausalLM

    from rl.export import export

    out = export(run_dir, tmp_path / "export")
    assert not (out / "lora.json").exists()
    stock = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sdpa")
    logits = stock(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    exported_lp = torch.log_softmax(logits, -1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    merged = merged_checkpoint_state(saved, run_dir / "policy")
    assert all(torch.equal(stock.state_dict()[k], merged[k]) for k in merged if k in stock.state_dict())
    assert (exported_lp[m] - base_lp[m]).abs().max() > 1e-3
