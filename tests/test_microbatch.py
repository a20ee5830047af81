"""Micro-batched updates equal one pass; gradient checkpointing equals none; bf16 stays near fp32;
everything of a step lives on the learner's device."""

from __future__ import annotations

import copy

import pytest
import torch

from policies.model import build_policy
from policies.qk_probe import probe_qk, read_max_logits
from rl.batch import build_batch
from rl.config import ConfigError, load_config
from rl.learner import Learner
from rl.microbatch import MicroMetrics, pack, padding_fraction, plan_microbatches, prompt_order, select_trimmed, shared_prefix_positions
from rollout.episode import Episode, Turn

LOSS_AGGS = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]


def _cfg(*overrides: str):
    return load_config("experiments/quickstart.yaml", ["sft.enabled=false", "rollout.max_new_tokens=12", *overrides])


def _grouped_batch(tokenizer, prompts: int, group: int, seed: int):
    """`prompts` prompts of 2-8 tokens with `group` completions of 1-12 tokens each: rows of one
    prompt share it (the shared-prefix path) and differ in length (padding)."""
    g = torch.Generator().manual_seed(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in (tokenizer.pad_token_id, tokenizer.eos_token_id)]

    def tokens(k: int) -> list[int]:
        return [vocab[int(j)] for j in torch.randint(0, len(vocab), (k,), generator=g)]

    episodes = []
    for p in range(prompts):
        prompt = tokens(int(torch.randint(2, 9, (), generator=g)))
        for _ in range(group):
            c = int(torch.randint(1, 13, (), generator=g))
            logprobs = (-torch.rand(c, generator=g) * 3).tolist()
            turn = Turn(role="assistant", text="", token_ids=tokens(c), logprobs=logprobs, trainable=True)
            episodes.append(Episode(task_id=str(p), env="math", prompt="", prompt_ids=prompt, turns=[turn], group=p))
    return build_batch(episodes, torch.randn(len(episodes), generator=g).tolist(), tokenizer.pad_token_id)


def _run(cfg, model, batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model = copy.deepcopy(model)
    metrics = Learner.from_config(model, cfg).update(batch)
    metrics.pop("time/learner_s")
    return metrics, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["adamw", "muonclip"])
@pytest.mark.parametrize("loss_agg", LOSS_AGGS)
def test_micro_batched_update_equals_one_pass(optimizer, loss_agg):
    common = [f"optimizer.name={optimizer}", f"algorithm.loss_agg={loss_agg}", "algorithm.entropy_coef=0.01"]
    base = _cfg(*common)
    model, tok = build_policy(base.policy, seed=3)
    batch = _grouped_batch(tok, prompts=4, group=4, seed=11)
    ref_metrics, ref_params = _run(base, model, batch)
    # 40 padded tokens: about two rows per micro-batch, several micro-batches per minibatch
    metrics, params = _run(_cfg(*common, "learner.max_tokens_per_microbatch=40"), model, batch)
    assert metrics.keys() == ref_metrics.keys() and "learner/pg_loss" in metrics
    for k in ref_metrics:
        assert metrics[k] == pytest.approx(ref_metrics[k], abs=1e-5, rel=1e-5), k
    for n in ref_params:
        torch.testing.assert_close(params[n], ref_params[n], atol=1e-5, rtol=0, msg=n)
    assert any(not torch.equal(ref_params[n], p) for n, p in model.named_parameters()), "the update changed nothing"


def test_micro_batches_with_kl_tis_minibatches_and_epochs_equal_one_pass():
    common = ["algorithm.kl_coef=0.05", "algorithm.tis_cap=2.0", "algorithm.minibatch_size=8", "algorithm.epochs=2", "algorithm.shared_prefix=false"]
    base = _cfg(*common)
    model, tok = build_policy(base.policy, seed=4)
    batch = _grouped_batch(tok, prompts=4, group=4, seed=12)
    ref_metrics, ref_params = _run(base, model, batch)
    metrics, params = _run(_cfg(*common, "learner.max_tokens_per_microbatch=30"), model, batch)
    assert "learner/kl_ref" in metrics and "learner/sampler_kl" in metrics
    for k in ref_metrics:
        assert metrics[k] == pytest.approx(ref_metrics[k], abs=1e-5, rel=1e-5), k
    for n in ref_params:
        torch.testing.assert_close(params[n], ref_params[n], atol=1e-5, rtol=0, msg=n)


def test_plan_covers_every_row_once_within_the_budget():
    cfg = _cfg()
    _, tok = build_policy(cfg.policy, seed=0)
    batch = _grouped_batch(tok, prompts=6, group=4, seed=5)
    lengths = batch.attention_mask.sum(dim=1)
    for together in (False, True):
        plan = plan_microbatches(batch, 48, share_prompts=together)
        rows = torch.cat(plan).sort().values
        assert torch.equal(rows, torch.arange(len(batch)))
        for micro in plan:
            assert len(micro) == 1 or len(micro) * int(lengths[micro].max()) <= 48
            part = select_trimmed(batch, micro)
            assert part.input_ids.shape[1] == int(lengths[micro].max())  # trimmed to its longest row
    assert plan_microbatches(batch, 0) [0].tolist() == list(range(len(batch)))


def test_a_row_longer_than_the_budget_is_a_micro_batch_of_its_own():
    cfg = _cfg()
    _, tok = build_policy(cfg.policy, seed=0)
    batch = _grouped_batch(tok, prompts=2, group=3, seed=6)
    plan = plan_microbatches(batch, 1)
    assert [len(m) for m in plan] == [1] * len(batch)


def test_prompt_groups_stay_together_and_sorting_cuts_padding():
    cfg = _cfg()
    _, tok = build_policy(cfg.policy, seed=0)
    batch = _grouped_batch(tok, prompts=8, group=4, seed=7)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    groups = (torch.arange(len(batch)) // 4).tolist()
    plan = pack(lengths, prompt_order(lengths, groups), 4 * 20)
    seen: list[int] = []
    for micro in plan:
        for g in [groups[i] for i in micro.tolist()]:
            if not seen or seen[-1] != g:
                assert g not in seen, "a prompt group was split over non-adjacent micro-batches"
                seen.append(g)
    # the same number of rows per pass, in batch order, against rows sorted by length
    in_order = [torch.arange(s, min(s + 4, len(batch))) for s in range(0, len(batch), 4)]
    assert padding_fraction(batch, plan_microbatches(batch, 4 * 20)) < padding_fraction(batch, in_order)


@pytest.mark.parametrize("prompt_len, answer_len", [(40, 3), (3, 40)])
def test_with_shared_prompts_the_plan_computing_fewer_positions_is_taken(prompt_len, answer_len):
    # long shared prompts with short answers: keep the groups; short prompts with long varied answers: sort rows
    g = torch.Generator().manual_seed(prompt_len)
    episodes = []
    for p in range(6):
        prompt = torch.randint(3, 60, (prompt_len,), generator=g).tolist()
        for _ in range(4):
            c = int(torch.randint(1, answer_len + 1, (), generator=g))
            turn = Turn(role="assistant", text="", token_ids=torch.randint(3, 60, (c,), generator=g).tolist(), logprobs=[-1.0] * c, trainable=True)
            episodes.append(Episode(task_id=str(p), env="math", prompt="", prompt_ids=prompt, turns=[turn], group=p))
    batch = build_batch(episodes, [1.0] * len(episodes), 0)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    prompt_lens, group = [prompt_len] * len(batch), [i // 4 for i in range(len(batch))]
    budget = 8 * (prompt_len + answer_len)
    chosen = plan_microbatches(batch, budget, share_prompts=True)
    grouped = pack(lengths, prompt_order(lengths, group), budget)
    by_length = plan_microbatches(batch, budget)
    cost = {name: shared_prefix_positions(plan, lengths, prompt_lens, group) for name, plan in (("grouped", grouped), ("by_length", by_length))}
    assert cost["grouped"] != cost["by_length"]
    best = min(cost, key=cost.get)
    assert best == ("grouped" if prompt_len > answer_len else "by_length")
    assert shared_prefix_positions(chosen, lengths, prompt_lens, group) == cost[best]


def test_pooled_extremes_ignore_micro_batches_without_tokens():
    pooled = MicroMetrics()
    pooled.add({"ratio_min": 1.0, "ratio_max": 1.0, "clip_frac": 0.0}, 0.0, 0.0, has_tokens=False)
    pooled.add({"ratio_min": 1.2, "ratio_max": 1.3, "clip_frac": 0.5}, 1.0, 1.0, has_tokens=True)
    assert pooled.result() == {"ratio_min": 1.2, "ratio_max": 1.3, "clip_frac": 0.5}


def _grads_and_qk_max(cfg, model, batch):
    model = copy.deepcopy(model)
    learner = Learner.from_config(model, cfg)
    model.train()
    model.zero_grad(set_to_none=True)
    with probe_qk(model):
        lp, _ = learner._logprobs(model, batch)
    (lp * batch.completion_mask * batch.advantages[:, None]).sum().backward()
    qk = read_max_logits(model)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, qk


def test_gradient_checkpointing_gives_the_same_gradients_and_qk_maxima():
    plain_cfg = _cfg("algorithm.shared_prefix=false")
    model, tok = build_policy(plain_cfg.policy, seed=8)
    batch = _grouped_batch(tok, prompts=3, group=3, seed=9)
    g0, qk0 = _grads_and_qk_max(plain_cfg, model, batch)
    g1, qk1 = _grads_and_qk_max(_cfg("learner.gradient_checkpointing=true"), model, batch)
    assert g0.keys() == g1.keys() and len(g0) > 5
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)
    assert qk0.keys() == qk1.keys() and len(qk0) == plain_cfg.policy.num_layers
    for layer in qk0:
        torch.testing.assert_close(qk1[layer], qk0[layer], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_is_on_in_the_update():
    cfg = _cfg("learner.gradient_checkpointing=true")
    model, _ = build_policy(cfg.policy, seed=0)
    learner = Learner.from_config(model, cfg)
    assert model.is_gradient_checkpointing and not learner.shared_prefix


def test_bf16_log_probs_stay_near_fp32_and_the_update_is_finite():
    fp32 = _cfg()
    model, tok = build_policy(fp32.policy, seed=10)
    batch = _grouped_batch(tok, prompts=4, group=4, seed=13)
    m = batch.completion_mask.bool()
    with torch.no_grad():
        lp32, ent32 = Learner.from_config(copy.deepcopy(model), fp32)._logprobs(model, batch)
        bf16 = Learner.from_config(copy.deepcopy(model), _cfg("learner.precision=bf16"))
        lp16, ent16 = bf16._logprobs(bf16.model, batch)
    assert lp16.dtype == torch.float32 and torch.isfinite(lp16[m]).all()
    # bf16 keeps 8 mantissa bits: stated tolerance 0.05 nats per token (measured max ~0.02 here)
    assert float((lp16 - lp32)[m].abs().max()) < 0.05
    assert float((ent16 - ent32)[m].abs().max()) < 0.05
    before = {n: p.detach().clone() for n, p in bf16.model.named_parameters()}
    metrics = bf16.update(batch)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # fp32 master weights
    assert all(torch.isfinite(p).all() for p in bf16.model.parameters())
    assert metrics["learner/skipped_steps"] == 0 and metrics["learner/grad_norm"] > 0
    assert any(not torch.equal(before[n], p) for n, p in bf16.model.named_parameters())


def _device_of_every_forward(cfg, device: str) -> set[str]:
    model, tok = build_policy(cfg.policy, seed=0)
    batch = _grouped_batch(tok, prompts=2, group=3, seed=14)
    seen: set[str] = set()

    def record(module, args, kwargs):
        for t in [*args, *kwargs.values()]:
            if isinstance(t, torch.Tensor):
                seen.add(t.device.type)

    learner = Learner.from_config(model, cfg)
    model.register_forward_pre_hook(record, with_kwargs=True)
    for m in model.modules():
        m.register_forward_pre_hook(record, with_kwargs=True)
    learner.update(batch)  # the batch arrives on the CPU, as `build_batch` makes it
    seen |= {p.device.type for p in model.parameters()}
    optimizers = getattr(learner.optimizer, "optimizers", {"": learner.optimizer}).values()  # MuonAdamW holds one per parameter kind
    seen |= {t.device.type for o in optimizers for s in o.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim() > 0}
    assert optimizers and any(o.state for o in optimizers)
    return seen


def test_every_tensor_of_a_step_is_on_the_learner_device_cpu():
    assert _device_of_every_forward(_cfg("algorithm.kl_coef=0.05"), "cpu") == {"cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_tensor_of_a_step_is_on_the_learner_device_cuda():
    cfg = _cfg("algorithm.kl_coef=0.05", "cluster.learner_gpus=1", "learner.precision=bf16")
    assert cfg.learner_device == "cuda"
    assert _device_of_every_forward(cfg, "cuda") == {"cuda"}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["learner.device=cuda"], "cluster.learner_gpus"),
        (["learner.device=cpu", "cluster.learner_gpus=1"], "learner.device"),
        (["learner.precision=fp16"], "learner.precision"),
        (["learner.max_tokens_per_microbatch=-1"], "learner.max_tokens_per_microbatch"),
    ],
)
def test_impossible_learner_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(*overrides)
