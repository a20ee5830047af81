"""QK probe: per-head max pre-softmax logit against an explicit full-matrix computation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import kernels.qk_max as qk_max
import policies.qk_probe as qk_probe
from policies.qk_probe import (
    QK_PROBE_ATTENTION,
    max_qk_logit,
    overall_max_logit,
    probe_qk,
    qk_probe_attention_forward,
    read_max_logits,
    register_qk_probe,
)

VOCAB = 40


def tiny(arch="llama", kv=4, seed=0, attn=QK_PROBE_ATTENTION):
    register_qk_probe()
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = cls(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=kv, head_dim=32, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).float()
    with torch.no_grad():  # Qwen2's q/k biases start at zero; random ones must show up in the logits
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def padded_batch(pad=(0, 4, 7), side="left", t=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(pad), t), generator=g)
    mask = torch.ones(len(pad), t, dtype=torch.long)
    for i, p in enumerate(pad):
        cols = slice(0, p) if side == "left" else slice(t - p, t)
        mask[i, cols] = 0
        ids[i, cols] = 0
    return ids, mask


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def measure(model, ids, mask=None, position_ids=None):
    if position_ids is None and mask is not None:
        position_ids = positions(mask)
    with torch.no_grad(), probe_qk(model):
        # no cache: with one, transformers skips its packed-sequence detection
        model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
    return read_max_logits(model)


def reference_logits(model, ids, position_ids, mask=None):
    """Full [B, H, T, T] logits per layer from hooked hidden states, RoPE applied as the model does."""
    hidden, handles = {}, []
    for layer in model.model.layers:
        def hook(mod, args, kwargs):
            hidden[mod.layer_idx] = kwargs.get("hidden_states", args[0] if args else None)
        handles.append(layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
    finally:
        for hnd in handles:
            hnd.remove()
    out = {}
    with torch.no_grad():
        cos, sin = model.model.rotary_emb(hidden[0], position_ids)
        for layer in model.model.layers:
            a = layer.self_attn
            h = hidden[a.layer_idx]
            b, t, _ = h.shape
            q = a.q_proj(h).view(b, t, -1, a.head_dim).transpose(1, 2)
            k = a.k_proj(h).view(b, t, -1, a.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = k.repeat_interleave(a.num_key_value_groups, dim=1)
            out[a.layer_idx] = q @ k.transpose(-1, -2) * a.scaling
    return out


def masked_max(logits, valid):
    return {l: x.masked_fill(~valid, -torch.inf).amax(dim=(0, 2, 3)) for l, x in logits.items()}


def causal(t):
    return torch.tril(torch.ones(t, t, dtype=torch.bool))[None, None]


def padding_pairs(mask):
    """Real query × real key: neither padded queries nor padded keys count."""
    m = mask.bool()
    return m[:, None, :, None] & m[:, None, None, :]


def assert_close_all(got, ref):
    assert set(got) == set(ref)
    for layer in ref:
        torch.testing.assert_close(got[layer], ref[layer], atol=1e-4, rtol=1e-5)


def differs(a, b):
    return any(not torch.allclose(a[l], b[l]) for l in a)


def plant_hot_pairs(model, ids, mask, side):
    """Make padded pairs the largest logits of layer 0, head 0, so a probe that counts them fails.

    With u, v the top singular pair of M = W_q,0^T W_k,0 (query input u, key input v gives the
    largest q·k), the pad token is v (a key) under left padding and u (a query) under right
    padding, and the real token next to the padding is the partner, at the same position so
    RoPE cancels. Positions here give pads the position of that neighbour.
    """
    a = model.model.layers[0].self_attn
    d = a.head_dim
    m = a.q_proj.weight[:d].T @ a.k_proj.weight[:d]
    u_, _, vh = torch.linalg.svd(m)
    u, v = u_[:, 0], vh[0]
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[1], emb[2] = u, v
        emb[0] = v if side == "left" else u
    ids = ids.clone()
    real = mask.bool()
    for row in range(ids.shape[0]):
        cols = real[row].nonzero().flatten()
        if len(cols) < ids.shape[1]:
            ids[row, cols[0] if side == "left" else cols[-1]] = 1 if side == "left" else 2
    return ids


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch,kv", [("llama", 4), ("llama", 2), ("qwen2", 4), ("qwen2", 1)])
def test_probe_matches_full_matrix_reference_with_padding(arch, kv, side, monkeypatch):
    monkeypatch.setitem(qk_max.CHUNK_ELEMENTS, "cpu", 3 * 4 * 12 * 5)  # 5 query rows per chunk
    model = tiny(arch, kv)
    ids, mask = padded_batch(side=side)
    ids = plant_hot_pairs(model, ids, mask, side)
    pos = positions(mask)
    full = reference_logits(model, ids, pos, mask)
    t = ids.shape[1]
    ref = masked_max(full, causal(t) & padding_pairs(mask))
    # the padding matters for these inputs: counting padded pairs changes the answer
    assert differs(ref, masked_max(full, causal(t).expand(3, 1, t, t)))
    if side == "right":  # ... including padded queries, which the 4-D mask lets attend
        assert differs(ref, masked_max(full, causal(t) & mask.bool()[:, None, None, :]))
    assert_close_all(measure(model, ids, mask), ref)


def test_probe_without_padding_uses_causal_rule():
    model = tiny("llama", 2)
    ids, _ = padded_batch(pad=(0, 0))
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    full = reference_logits(model, ids, pos)
    ref = masked_max(full, causal(ids.shape[1]))
    assert differs(ref, masked_max(full, torch.ones_like(causal(ids.shape[1]))))
    assert_close_all(measure(model, ids), ref)  # no mask reaches the attention here: is_causal


def test_probe_respects_packed_sequence_mask():
    # two sequences packed in one row: transformers builds a block-diagonal causal mask
    model = tiny("qwen2", 2)
    ids, _ = padded_batch(pad=(0,), t=12)
    pos = torch.cat([torch.arange(7), torch.arange(5)])[None]
    full = reference_logits(model, ids, pos)
    seq = torch.tensor([0] * 7 + [1] * 5)
    valid = causal(12) & (seq[:, None] == seq[None, :])[None, None]
    ref = masked_max(full, valid)
    assert differs(ref, masked_max(full, causal(12)))
    assert_close_all(measure(model, ids, position_ids=pos), ref)


def test_chunking_bounds_the_logit_tensor_and_keeps_the_max(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 300, 32, generator=g), torch.randn(2, 2, 300, 32, generator=g)
    full = max_qk_logit(q, k, None, 0.2, True, kv_groups=2, chunk_elements=1 << 30)
    sizes, matmul = [], torch.matmul

    def spy(a, b):
        out = matmul(a, b)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch, "matmul", spy)
    budget = 2 * 4 * 300 * 7
    chunked = max_qk_logit(q, k, None, 0.2, True, kv_groups=2, chunk_elements=budget)
    monkeypatch.undo()
    assert len(sizes) == -(-300 // 7) and max(sizes) <= budget
    torch.testing.assert_close(full, chunked)
    explicit = (q @ repeat_kv(k, 2).transpose(-1, -2) * 0.2).masked_fill(~causal(300), -torch.inf).amax(dim=(0, 2, 3))
    torch.testing.assert_close(full, explicit)


def test_mask_forms_bool_float_and_no_mask():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 4, 6, 8, generator=g)
    k[0, :, 0] = 50.0  # a key only query rows of batch 0 may reach; the masks below hide it
    allowed = causal(6).expand(2, 1, 6, 6).clone()
    allowed[0, :, :, 0] = False
    additive = torch.zeros(2, 1, 6, 6).masked_fill(~allowed, torch.finfo(torch.float32).min)
    minus_inf = torch.zeros(2, 1, 6, 6).masked_fill(~allowed, -torch.inf)
    logits = q @ k.transpose(-1, -2) * 0.5
    ref = logits.masked_fill(~allowed, -torch.inf).amax(dim=(0, 2, 3))
    for mask in (allowed, additive, minus_inf):
        torch.testing.assert_close(max_qk_logit(q, k, mask, 0.5, True), ref)
    # a single decoding query without a mask sees every cached key
    torch.testing.assert_close(max_qk_logit(q[:, :, -1:], k, None, 0.5, True), logits[:, :, -1:].amax(dim=(0, 2, 3)))
    # non-causal attention without a mask sees every pair
    torch.testing.assert_close(max_qk_logit(q, k, None, 0.5, False), logits.amax(dim=(0, 2, 3)))
    # a head with no attended pair at all reports -inf, never a masked value
    assert torch.isinf(max_qk_logit(q, k, torch.zeros(2, 1, 6, 6, dtype=torch.bool), 0.5, True)).all()


def test_without_mask_longer_keys_follow_sdpa_upper_left_rule():
    # transformers' SDPA path, with no mask and more keys than queries (static-cache prefill),
    # attends with j <= i; the empty cache slots past the queries must not count
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 2, 4, 8, generator=g), torch.randn(1, 2, 10, 8, generator=g)
    k[:, :, 4:] = 100.0
    got = max_qk_logit(q, k, None, 1.0, True)
    ref = (q @ k[:, :, :4].transpose(-1, -2)).masked_fill(~causal(4), -torch.inf).amax(dim=(0, 2, 3))
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("kv", [4, 2])
def test_outputs_and_gradients_match_stock_sdpa(kv):
    ids, mask = padded_batch(side="left")
    grads, outs = [], []
    for attn, probing in ((QK_PROBE_ATTENTION, True), (QK_PROBE_ATTENTION, False), ("sdpa", False)):
        model = tiny("qwen2", kv, seed=3, attn=attn)
        with probe_qk(model, enabled=probing):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
        (logits * mask[..., None]).square().sum().backward()
        outs.append(logits.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for other_out, other_grads in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(outs[0], other_out, atol=1e-5, rtol=1e-5)
        assert set(grads[0]) == set(other_grads)
        for n, gr in grads[0].items():
            torch.testing.assert_close(gr, other_grads[n], atol=1e-4, rtol=1e-4, msg=n)


def test_probing_only_inside_the_context_and_running_max():
    model = tiny("llama", 2)
    ids, mask = padded_batch()
    model(input_ids=ids, attention_mask=mask)
    assert read_max_logits(model) == {}
    first = measure(model, ids[:1], mask[:1])
    second = measure(model, ids[1:], mask[1:])
    with torch.no_grad(), probe_qk(model):
        model(input_ids=ids[:1], attention_mask=mask[:1], position_ids=positions(mask[:1]))
        model(input_ids=ids[1:], attention_mask=mask[1:], position_ids=positions(mask[1:]))
    both = read_max_logits(model, reset=False)
    assert differs(first, second)
    for layer in both:
        torch.testing.assert_close(both[layer], torch.maximum(first[layer], second[layer]))
    assert set(read_max_logits(model)) == {0, 1}  # reset=False kept them; this read resets
    assert read_max_logits(model) == {}
    model(input_ids=ids, attention_mask=mask)  # after the block: off again
    assert all(getattr(m, "qk_max_logit", None) is None for m in model.modules())


def test_nested_probe_restores_the_outer_state():
    model = tiny()
    attn = model.model.layers[0].self_attn
    with probe_qk(model):
        with probe_qk(model, enabled=False):
            assert not attn.qk_probe_enabled
        assert attn.qk_probe_enabled
    assert not attn.qk_probe_enabled


def test_registration_is_idempotent_and_registers_the_mask():
    register_qk_probe()
    register_qk_probe()
    assert ALL_ATTENTION_FUNCTIONS[QK_PROBE_ATTENTION] is qk_probe_attention_forward
    # without it transformers would build no padding mask for this implementation
    assert QK_PROBE_ATTENTION in ALL_MASK_ATTENTION_FUNCTIONS


def test_overall_max_logit():
    assert overall_max_logit({0: torch.tensor([1.0, 5.0]), 3: torch.tensor([2.0, -1.0])}) == 5.0
    assert overall_max_logit({}) == float("-inf")
