"""MuonClip: the Muon/AdamW split, training steps, state round trip, and QK-Clip on measured logits."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from policies.qk_probe import QK_PROBE_ATTENTION, probe_qk, read_max_logits, register_qk_probe
from rl.optim import build_optimizer, qk_clip, split_params

VOCAB = 40
HEADS = 4


def tiny(arch="llama", kv=HEADS, seed=0, tie=False):
    register_qk_probe()
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = cls(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=HEADS,
              num_key_value_heads=kv, head_dim=32, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=QK_PROBE_ATTENTION).float()
    with torch.no_grad():  # Qwen2's q/k biases start at zero: a bias left unclipped would go unseen
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def tokens(b=3, t=12, seed=1):
    return torch.randint(1, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def measure(model, ids):
    with torch.no_grad(), probe_qk(model):
        model(input_ids=ids)
    return read_max_logits(model)


def train(model, opt, ids, steps):
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def head_rows(model, layer, head):
    a = model.model.layers[layer].self_attn
    return a, slice(head * a.head_dim, (head + 1) * a.head_dim)


def blow_up_head(model, layer, head, factor):
    """Scale query head `head` by `factor`, and under MHA its own key head too (logits × factor²)."""
    a, rows = head_rows(model, layer, head)
    with torch.no_grad():
        for proj in (a.q_proj, a.k_proj) if a.num_key_value_groups == 1 else (a.q_proj,):
            proj.weight[rows] *= factor
            if proj.bias is not None:
                proj.bias[rows] *= factor


# ---------------------------------------------------------------- QK-Clip


@pytest.mark.parametrize("arch,kv", [("llama", 4), ("llama", 2), ("qwen2", 4), ("qwen2", 2)])
def test_qk_clip_brings_the_hot_head_to_tau_and_leaves_the_rest(arch, kv):
    model = tiny(arch, kv)
    ids = tokens()
    layer, head = 1, 2
    blow_up_head(model, layer, head, 8.0)
    before = measure(model, ids)
    hot = float(before[layer][head])
    others = max(float(before[l][h]) for l in before for h in range(HEADS) if (l, h) != (layer, head))
    assert hot > 2 * others
    tau = math.sqrt(hot * others)  # only the blown-up head is over tau
    snapshot = copy.deepcopy(model.state_dict())

    stats = qk_clip(model, before, tau)

    assert stats == {"clipped_heads": 1, "max_logit": pytest.approx(hot)}
    after = measure(model, ids)
    assert tau * 0.999 <= float(after[layer][head]) <= tau * (1 + 1e-4)  # to tau, not below it
    for l in before:
        for h in range(HEADS):
            if (l, h) != (layer, head):
                assert float(after[l][h]) == float(before[l][h]), (l, h)
    _, rows = head_rows(model, layer, head)
    changed = {f"model.layers.{layer}.self_attn.q_proj.{p}" for p in ("weight", "bias")}
    if kv == HEADS:  # MHA: the head's own key rows are scaled too; GQA: the shared key is not
        changed |= {f"model.layers.{layer}.self_attn.k_proj.{p}" for p in ("weight", "bias")}
    for name, tensor in model.state_dict().items():
        if name not in changed:
            assert torch.equal(tensor, snapshot[name]), f"{name} must be untouched"
            continue
        keep = torch.ones(tensor.shape[0], dtype=torch.bool)
        keep[rows] = False
        assert torch.equal(tensor[keep], snapshot[name][keep]), name
        assert not torch.equal(tensor[~keep], snapshot[name][~keep]), name


def test_qk_clip_split_between_query_and_key_under_mha():
    model = tiny("qwen2")
    a, rows = head_rows(model, 0, 1)
    q, k, bq = a.q_proj.weight[rows].clone(), a.k_proj.weight[rows].clone(), a.q_proj.bias[rows].clone()
    logits = {0: torch.tensor([1.0, 400.0, 2.0, 3.0]), 1: torch.zeros(HEADS)}
    qk_clip(model, logits, 100.0)
    # gamma = 1/4: each side by sqrt(gamma) = 1/2, so both keep their share of the logit scale
    torch.testing.assert_close(a.q_proj.weight[rows], q / 2, rtol=0, atol=0)
    torch.testing.assert_close(a.k_proj.weight[rows], k / 2, rtol=0, atol=0)
    torch.testing.assert_close(a.q_proj.bias[rows], bq / 2, rtol=0, atol=0)


def test_qk_clip_leaves_everything_when_no_head_is_over_tau():
    model = tiny("qwen2", 2)
    ids = tokens()
    logits = measure(model, ids)
    snapshot = copy.deepcopy(model.state_dict())
    tau = max(float(v.max()) for v in logits.values())  # equal to tau is not over it
    assert qk_clip(model, logits, tau)["clipped_heads"] == 0
    inf_logits = {0: torch.tensor([float("inf"), float("nan"), 0.0, 0.0])}
    assert qk_clip(model, inf_logits, 1.0)["clipped_heads"] == 0  # gamma 0 would erase the head
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshot[name]), name
    with pytest.raises(ValueError):
        qk_clip(model, logits, 0.0)


# ---------------------------------------------------------------- the optimizer


@pytest.mark.parametrize("arch,tie", [("llama", True), ("qwen2", False)])
def test_hidden_matrices_go_to_muon_everything_else_to_adamw(arch, tie):
    model = tiny(arch, 2, tie=tie)
    opt = build_optimizer(model, name="muonclip")
    names = dict(model.named_parameters())
    muon, adamw = set(opt.params_of("muon")), set(opt.params_of("adamw"))
    assert muon | adamw == set(names) and not muon & adamw
    expected_muon = {
        n for n in names
        if n.endswith("weight") and any(f".{p}." in n for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    }
    assert muon == expected_muon
    assert "model.embed_tokens.weight" in adamw and ("lm_head.weight" in adamw) == (not tie)
    assert any("norm" in n for n in adamw)
    assert any(n.endswith("bias") for n in adamw) == (arch == "qwen2")
    # the optimizers hold exactly those tensors (a tied head once, through the embedding)
    held = {part: {id(p) for g in o.param_groups for p in g["params"]} for part, o in opt.optimizers.items()}
    assert held["muon"] == {id(names[n]) for n in muon}
    assert held["adamw"] == {id(names[n]) for n in adamw}
    assert id(model.get_output_embeddings().weight) in held["adamw"]
    muon_opt = opt.optimizers["muon"]
    assert isinstance(muon_opt, torch.optim.Muon) and isinstance(opt.optimizers["adamw"], torch.optim.AdamW)
    assert muon_opt.defaults["adjust_lr_fn"] == "match_rms_adamw" and muon_opt.defaults["weight_decay"] == 0.0
    assert muon_opt.defaults["lr"] == 0.02 and opt.optimizers["adamw"].defaults["lr"] == 3e-3


def test_adamw_mode_puts_every_parameter_on_adamw_with_adamw_lr():
    model = tiny("qwen2")
    opt = build_optimizer(model, name="adamw", lr=0.5, adamw_lr=1e-3)
    assert set(opt.optimizers) == {"adamw"}
    assert set(opt.params_of("adamw")) == {n for n, _ in model.named_parameters()}
    assert [g["lr"] for g in opt.param_groups] == [1e-3]
    with pytest.raises(ValueError):
        build_optimizer(model, name="sgd")


def test_frozen_parameters_are_left_out():
    model = tiny()
    model.model.embed_tokens.weight.requires_grad_(False)
    model.model.layers[0].self_attn.q_proj.weight.requires_grad_(False)
    opt = build_optimizer(model)
    assert "model.embed_tokens.weight" not in opt.assignment
    assert "model.layers.0.self_attn.q_proj.weight" not in opt.assignment


@pytest.mark.parametrize("name", ["muonclip", "adamw"])
def test_a_few_steps_reduce_the_loss(name):
    model = tiny()
    losses = train(model, build_optimizer(model, name=name), tokens(), steps=8)
    assert losses[-1] < 0.8 * losses[0], losses


def test_param_groups_drive_the_learning_rate_and_zero_grad_clears():
    model = tiny("qwen2")
    opt = build_optimizer(model, weight_decay=0.1)
    for g in opt.param_groups:  # what an LR schedule does
        g["lr"] = 0.0
    before = copy.deepcopy(model.state_dict())
    train(model, opt, tokens(), steps=1)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trip_continues_identically():
    ids = tokens()
    a = tiny("qwen2", 2)
    opt_a = build_optimizer(a, weight_decay=0.01)
    train(a, opt_a, ids, steps=2)
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)  # as the checkpoint does, then a weights-only load
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    opt_b, opt_c = build_optimizer(b, weight_decay=0.01), build_optimizer(c, weight_decay=0.01)
    buf.seek(0)
    opt_b.load_state_dict(torch.load(buf, weights_only=True))
    for model, opt in ((a, opt_a), (b, opt_b), (c, opt_c)):
        train(model, opt, ids, steps=2)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
    # without the restored state (momenta, Adam moments, step counts) the run would differ
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_state_dict_for_other_parameters_is_refused():
    a = tiny()
    a.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    opt_a = build_optimizer(a)
    train(a, opt_a, tokens(), steps=1)
    # same number of parameters per part, so torch alone would load the state onto the wrong ones
    b = tiny()
    b.model.layers[0].mlp.down_proj.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="other parameters"):
        build_optimizer(b).load_state_dict(opt_a.state_dict())
    with pytest.raises(ValueError, match="parts"):
        build_optimizer(a, name="adamw").load_state_dict(opt_a.state_dict())


def test_split_by_module_type_not_by_name():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = torch.nn.Embedding(10, 8)
            self.positions = torch.nn.Embedding(16, 8)  # a second table, not the input embedding
            self.mix = torch.nn.Linear(8, 8)
            self.scale = torch.nn.Parameter(torch.ones(8))

        def get_input_embeddings(self):
            return self.tokens

    assert split_params(Toy()) == {
        "tokens.weight": "adamw", "positions.weight": "adamw", "mix.weight": "muon", "mix.bias": "adamw", "scale": "adamw",
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("nesterov", [True, False])
def test_batched_muon_matches_torch_muon_step_for_step(nesterov, seed):
    """Same update rule as torch.optim.Muon, within bfloat16's rounding. Batched and per-matrix
    bfloat16 matmuls round in a different order: over 1000 seeds x 2 x 5 matrices the two bfloat16
    runs differed by at most 1.0% of the distance the weights moved (99.9th percentile 0.5%), and
    float32 Newton-Schulz against torch's bfloat16 by at most 9.3% (99.9th percentile 4.9%, the
    thin 33x5 matrix). A different rule (scale, momentum, decay) is far outside both."""
    from rl.optim.muon import BatchedMuon

    g = torch.Generator().manual_seed(seed)
    shapes = [(16, 48), (16, 48), (48, 16), (7, 7), (33, 5)]
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(3)]
    kw = dict(lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn="match_rms_adamw")
    runs = {}
    for name, make in {
        "torch": lambda ps: torch.optim.Muon(ps, **kw),
        "bf16": lambda ps: BatchedMuon(ps, ns_dtype="bfloat16", **kw),
        "fp32": lambda ps: BatchedMuon(ps, ns_dtype="float32", **kw),
    }.items():
        ps = [torch.nn.Parameter(w.clone()) for w in init]
        opt = make(ps)
        for step_grads in grads:
            for p, gr in zip(ps, step_grads):
                p.grad = gr.clone()
            opt.step()
        runs[name] = ps
        assert all("momentum_buffer" in opt.state[p] for p in ps)
    for ref, b16, f32, w0 in zip(runs["torch"], runs["bf16"], runs["fp32"], init):
        moved = (ref - w0).abs().max()
        assert moved > 1e-3  # the optimizer did move the weights
        assert (b16 - ref).abs().max() < 0.02 * moved
        assert (f32 - ref).abs().max() < 0.1 * moved  # bfloat16 rounding, not a different rule


def test_muon_newton_schulz_precision_follows_the_device():
    from rl.optim.muon import resolve_ns_dtype

    assert resolve_ns_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_ns_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_ns_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="ns_dtype"):
        resolve_ns_dtype("fp8", torch.device("cpu"))
