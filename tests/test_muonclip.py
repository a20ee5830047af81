"""MuonClip: the Muon/AdamW split, QK-Clip, state round trip; the QK probe against eager attention."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from policies.qk_probe import QK_PROBE_ATTENTION, max_qk_logit, probe_qk, read_max_logits, register_qk_probe
from rl.optim import build_optimizer, qk_clip


def tiny(arch="llama", kv=4, seed=0, attn=QK_PROBE_ATTENTION):
    register_qk_probe()
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = cls(vocab_size=40, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=kv, head_dim=32, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).float()
    with torch.no_grad():  # zero-initialised q/k biases would hide a bias that is not clipped
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def batch(seed=1, b=3, t=12, left_pad=(0, 4, 7)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    for i, p in enumerate(left_pad[:b]):
        mask[i, :p] = 0
        ids[i, :p] = 0
    return ids, mask


def measure(model, ids, mask):
    with torch.no_grad(), probe_qk(model):
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    return read_max_logits(model)


def eager_max_logits(model, ids, mask):
    """Reference: hook q/k projections, apply RoPE as the model does, full T×T matrix, mask."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    out, store = {}, {}
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    handles = []
    for layer in model.model.layers:
        attn = layer.self_attn

        def hook(mod, args, kwargs, attn=attn):
            store[attn.layer_idx] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        handles.append(attn.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=pos)
        cos, sin = model.model.rotary_emb(store[0], pos)
        for layer in model.model.layers:
            a = layer.self_attn
            h = store[a.layer_idx]
            b, t, _ = h.shape
            q = a.q_proj(h).view(b, t, -1, a.head_dim).transpose(1, 2)
            k = a.k_proj(h).view(b, t, -1, a.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = k.repeat_interleave(a.num_key_value_groups, dim=1)
            logits = q @ k.transpose(-1, -2) * a.scaling  # [B, H, T, T]
            valid = torch.tril(torch.ones(t, t, dtype=torch.bool))[None, None] & mask.bool()[:, None, None, :]
            valid = valid & mask.bool()[:, None, :, None]  # padded queries do not count
            out[a.layer_idx] = logits.masked_fill(~valid, -torch.inf).amax(dim=(0, 2, 3))
    for hnd in handles:
        hnd.remove()
    return out


@pytest.mark.parametrize("arch,kv", [("llama", 4), ("llama", 2), ("qwen2", 4)])
def test_probe_matches_eager_reference(arch, kv):
    model = tiny(arch, kv)
    ids, mask = batch()
    # make logits large enough that masked positions would matter
    got, ref = measure(model, ids, mask), eager_max_logits(model, ids, mask)
    for layer in ref:
        assert torch.allclose(got[layer], ref[layer], atol=1e-4)
    ids2, mask2 = batch(left_pad=(0, 0, 0))
    got2, ref2 = measure(model, ids2, mask2), eager_max_logits(model, ids2, mask2)
    for layer in ref2:
        assert torch.allclose(got2[layer], ref2[layer], atol=1e-4)


def test_chunked_max_equals_full_max():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 300, 32, generator=g), torch.randn(2, 2, 300, 32, generator=g)
    full = max_qk_logit(q, k, None, 0.2, True, kv_groups=2, chunk=10_000)
    chunked = max_qk_logit(q, k, None, 0.2, True, kv_groups=2, chunk=7)
    assert torch.allclose(full, chunked)
    # the causal rule excludes the future: make a future key huge, the max must not see it
    k2 = k.clone()
    k2[:, :, -1] = 1000.0
    q2 = q.clone()
    q2[:, :, -1] = 0.0  # the only query allowed to see the last key contributes 0
    assert float(max_qk_logit(q2, k2, None, 0.2, True, kv_groups=2).max()) < 100


def test_probe_matches_stock_sdpa_outputs_and_gradients():
    a, b = tiny(seed=3), tiny(seed=3, attn="sdpa")
    ids, mask = batch()
    with probe_qk(a):
        la = a(input_ids=ids, attention_mask=mask).logits
    lb = b(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(la, lb, atol=1e-5)
    la.sum().backward()
    lb.sum().backward()
    assert torch.allclose(a.model.layers[0].self_attn.q_proj.weight.grad, b.model.layers[0].self_attn.q_proj.weight.grad, atol=1e-4)


def test_probe_off_records_nothing():
    model = tiny()
    ids, mask = batch()
    model(input_ids=ids, attention_mask=mask)
    assert read_max_logits(model) == {}


def blow_up_head(model, layer, head, factor):
    a = model.model.layers[layer].self_attn
    rows = slice(head * a.head_dim, (head + 1) * a.head_dim)
    with torch.no_grad():
        for proj in (a.q_proj, a.k_proj) if a.num_key_value_groups == 1 else (a.q_proj,):
            proj.weight[rows] *= factor
            if proj.bias is not None:
                proj.bias[rows] *= factor


@pytest.mark.parametrize("arch,kv", [("llama", 4), ("llama", 2), ("qwen2", 4)])
def test_qk_clip_brings_hot_head_under_tau_and_leaves_others(arch, kv):
    model = tiny(arch, kv)
    ids, mask = batch(left_pad=(0, 0, 0))
    blow_up_head(model, 1, 2, 8.0)
    before = measure(model, ids, mask)
    others = max(float(before[l][h]) for l in before for h in range(4) if (l, h) != (1, 2))
    hot = float(before[1][2])
    assert hot > 2 * others
    tau = (hot * others) ** 0.5  # only the blown-up head is over tau
    snapshot = copy.deepcopy(model.state_dict())
    stats = qk_clip(model, before, tau)
    assert stats["clipped_heads"] == 1
    after = measure(model, ids, mask)
    assert float(after[1][2]) <= tau * (1 + 1e-4)
    assert float(after[1][2]) >= tau * 0.999  # scaled to tau, not further
    a = model.model.layers[1].self_attn
    d = a.head_dim
    for name, tensor in model.state_dict().items():
        if name.startswith("model.layers.1.self_attn.q_proj"):
            keep = torch.ones(tensor.shape[0], dtype=torch.bool)
            keep[2 * d : 3 * d] = False
            assert torch.equal(tensor[keep], snapshot[name][keep]), name
            assert not torch.equal(tensor[~keep], snapshot[name][~keep]), name
        elif name.startswith("model.layers.1.self_attn.k_proj") and kv == 4:
            keep = torch.ones(tensor.shape[0], dtype=torch.bool)
            keep[2 * d : 3 * d] = False
            assert torch.equal(tensor[keep], snapshot[name][keep]), name
        else:
            assert torch.equal(tensor, snapshot[name]), f"{name} must be untouched"


def test_param_split_muon_vs_adamw():
    model = tiny("qwen2")
    opt = build_optimizer(model, name="muonclip")
    muon, adamw = set(opt.params_of("muon")), set(opt.params_of("adamw"))
    assert muon and adamw and not muon & adamw
    for n, p in model.named_parameters():
        if "embed" in n or "lm_head" in n or "norm" in n or n.endswith("bias"):
            assert n in adamw, n
        elif p.ndim == 2:
            assert n in muon, n
    assert isinstance(opt.optimizers["muon"], torch.optim.Muon)
    assert opt.optimizers["muon"].defaults["adjust_lr_fn"] == "match_rms_adamw"
    assert set(build_optimizer(model, name="adamw").params_of("adamw")) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError):
        build_optimizer(model, name="sgd")


@pytest.mark.parametrize("name", ["muonclip", "adamw"])
def test_optimizer_reduces_loss(name):
    model = tiny()
    ids, mask = batch(left_pad=(0, 0, 0))
    opt = build_optimizer(model, name=name, lr=0.02, adamw_lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.8


def test_state_dict_round_trip_continues_identically():
    a = tiny()
    ids, _ = batch(left_pad=(0, 0, 0))
    opt_a = build_optimizer(a)
    for _ in range(2):
        opt_a.zero_grad()
        a(input_ids=ids, labels=ids).loss.backward()
        opt_a.step()
    b = copy.deepcopy(a)
    opt_b = build_optimizer(b)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for m, o in ((a, opt_a), (b, opt_b)):
        o.zero_grad()
        m(input_ids=ids, labels=ids).loss.backward()
        o.step()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
