"""QK-Clip on multi-head latent attention (DeepSeek-V3 MLA), and the q_proj/k_proj path unchanged.

Max logits are recomputed here from the module's own projections (query, latent key, shared
rotary key, RoPE), not through the probe or QK-Clip code, on the inputs each attention module saw.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, DeepseekV2Config, DeepseekV3Config, LlamaConfig, Qwen2Config
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds3

from policies.mla import HALF, is_mla, mla_head_parts
from policies.qk_probe import QK_PROBE_ATTENTION, attention_modules, probe_qk, read_max_logits, register_qk_probe
from rl.optim import qk_clip

VOCAB, HEADS, NOPE, ROPE, V, LATENT = 40, 4, 16, 8, 12, 16
# (layer, head): factor on the head's q_nope and k_nope rows, factor² on its q_pe rows: both
# terms of the head's logits grow by factor².
HOT = {(0, 1): 30.0, (1, 2): 20.0}
WARM = {(1, 0): 4.0}  # raised, but kept under tau


def tiny_mla(version=3, q_lora=None, interleave=False, seed=0):
    register_qk_probe()
    common = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, q_lora_rank=q_lora, kv_lora_rank=LATENT,
        qk_rope_head_dim=ROPE, qk_nope_head_dim=NOPE, v_head_dim=V, first_k_dense_replace=2, n_routed_experts=4,
        n_group=1, topk_group=1, num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=0,
    )
    cfg = DeepseekV3Config(rope_interleave=interleave, **common) if version == 3 else DeepseekV2Config(**common)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=QK_PROBE_ATTENTION).float()


def mla_layers(model):
    return [layer.self_attn for layer in model.model.layers]


def heat(model, heads: dict, rotary_key_gain=6.0):
    """Raise chosen heads' logits; make the shared rotary key large so the RoPE term matters."""
    with torch.no_grad():
        for attn in mla_layers(model):
            attn.kv_a_proj_with_mqa.weight[LATENT:] *= rotary_key_gain
        for (layer, head), factor in heads.items():
            for linear, rows, share in mla_head_parts(mla_layers(model)[layer], head):
                linear.weight[rows] *= factor if share == HALF else factor**2


def capture_inputs(model, ids):
    """{layer: (hidden_states, (cos, sin))} as each attention module received them."""
    seen, hooks = {}, []
    for attn in mla_layers(model):
        def hook(mod, args, kwargs, idx=attn.layer_idx):
            x = kwargs.get("hidden_states", args[0] if args else None)
            seen[idx] = (x.detach().clone(), tuple(t.detach().clone() for t in kwargs["position_embeddings"]))
        hooks.append(attn.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    return seen


def project(attn, x, cos, sin):
    """(q_nope, q_pe, k_nope, k_pe, v) of a DeepSeek-V3 MLA module, RoPE applied; [B, H|1, T, d]."""
    b, t, _ = x.shape
    q = attn.q_proj(x) if attn.q_proj is not None else attn.q_b_proj(attn.q_a_layernorm(attn.q_a_proj(x)))
    q = q.view(b, t, HEADS, NOPE + ROPE).transpose(1, 2)
    q_nope, q_pe = q[..., :NOPE], q[..., NOPE:]
    latent, k_pe = attn.kv_a_proj_with_mqa(x).split([LATENT, ROPE], dim=-1)
    kv = attn.kv_b_proj(attn.kv_a_layernorm(latent)).view(b, t, HEADS, NOPE + V).transpose(1, 2)
    k_nope, v = kv[..., :NOPE], kv[..., NOPE:]
    k_pe = k_pe.view(b, 1, t, ROPE)
    rope = ds3.apply_rotary_pos_emb_interleave if attn.config.rope_interleave else ds3.apply_rotary_pos_emb
    q_pe, k_pe = rope(q_pe, k_pe, cos, sin)
    return q_nope, q_pe, k_nope, k_pe, v


@torch.no_grad()
def max_logits_by_hand(model, inputs) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per layer: (max causal logit per head, the rotary term's share at that max)."""
    maxima, rotary_share = {}, {}
    for attn in mla_layers(model):
        x, (cos, sin) = inputs[attn.layer_idx]
        q_nope, q_pe, k_nope, k_pe, _ = project(attn, x, cos, sin)
        nope_part = q_nope @ k_nope.transpose(-1, -2) * attn.scaling
        rope_part = q_pe @ k_pe.transpose(-1, -2) * attn.scaling  # k_pe broadcasts over heads
        logits = nope_part + rope_part
        t = logits.shape[-1]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        logits = logits.masked_fill(~causal, float("-inf"))
        flat = logits.transpose(0, 1).reshape(HEADS, -1)
        best = flat.argmax(dim=1)
        maxima[attn.layer_idx] = flat.max(dim=1).values
        share = rope_part.transpose(0, 1).reshape(HEADS, -1).gather(1, best[:, None]).squeeze(1)
        rotary_share[attn.layer_idx] = share / maxima[attn.layer_idx]
    return maxima, rotary_share


def probed(model, ids):
    """What the learner hands QK-Clip: the probe's per-layer maxima over one forward pass."""
    with probe_qk(model), torch.no_grad():
        model(input_ids=ids)
    return read_max_logits(model, reset=True)


def tokens(b=3, t=14, seed=1):
    return torch.randint(1, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def pick_tau(before):
    hot = min(float(before[l][h]) for l, h in HOT)
    rest = max(float(before[l][h]) for l in before for h in range(HEADS) if (l, h) not in HOT)
    assert hot > 3 * rest, (hot, rest)
    return math.sqrt(hot * rest)


# ---------------------------------------------------------------- MLA


def test_mla_modules_are_found_by_type():
    model = tiny_mla()
    assert [is_mla(m) for m in mla_layers(model)] == [True, True]
    assert list(attention_modules(model)) == mla_layers(model)  # probed and clipped, though it has no k_proj

    class NotMLA(torch.nn.Module):  # same attribute names, unknown layout: left alone
        def __init__(self):
            super().__init__()
            self.kv_b_proj, self.kv_a_proj_with_mqa, self.layer_idx = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), 0

    assert not is_mla(NotMLA())

    class Derived(ds3.DeepseekV3Attention):
        pass

    assert is_mla(Derived(model.config, 0))


@pytest.mark.parametrize("q_lora,interleave", [(None, False), (24, True), (None, True)])
def test_mla_clip_brings_hot_heads_to_tau_and_leaves_the_rest(q_lora, interleave):
    model = tiny_mla(q_lora=q_lora, interleave=interleave)
    heat(model, {**HOT, **WARM})
    ids = tokens()
    inputs = capture_inputs(model, ids)
    before, rotary_share = max_logits_by_hand(model, inputs)
    for (l, h) in HOT:  # the RoPE term is a real part of the hot logits, not rounding noise
        assert abs(float(rotary_share[l][h])) > 0.1, rotary_share
    probe = probed(model, ids)
    for l in before:  # the probe's attention forward measures the same maxima on MLA
        torch.testing.assert_close(probe[l], before[l], rtol=1e-4, atol=1e-5)
    tau = pick_tau(before)
    snapshot = copy.deepcopy(model.state_dict())

    def rotary_key_and_values():
        out = {}
        for attn in mla_layers(model):
            x, (cos, sin) = inputs[attn.layer_idx]
            out[attn.layer_idx] = project(attn, x, cos, sin)[3:]
        return out

    shared_before = rotary_key_and_values()

    stats = qk_clip(model, before, tau)

    assert stats["clipped_heads"] == len(HOT)
    assert stats["max_logit"] == pytest.approx(max(float(v.max()) for v in before.values()))
    after, _ = max_logits_by_hand(model, inputs)  # same inputs: the clip's effect on each layer alone
    for l in before:
        for h in range(HEADS):
            if (l, h) in HOT:
                assert tau * (1 - 1e-4) <= float(after[l][h]) <= tau * (1 + 1e-4), (l, h, float(after[l][h]), tau)
            else:
                assert float(after[l][h]) == float(before[l][h]), (l, h)
    # the shared rotary key (and the whole latent projection) and the values are untouched
    for l, (k_pe, v) in rotary_key_and_values().items():
        assert torch.equal(k_pe, shared_before[l][0]) and torch.equal(v, shared_before[l][1]), l
    changed = {"q_proj" if q_lora is None else "q_b_proj", "kv_b_proj"}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if not (parts[-2] in changed and parts[2] in {str(l) for l, _ in HOT}):
            assert torch.equal(tensor, snapshot[name]), f"{name} must be untouched"


def test_mla_clip_scales_each_piece_by_its_share_of_gamma():
    model = tiny_mla()
    attn = model.model.layers[0].self_attn
    q, kv = attn.q_proj.weight.clone(), attn.kv_b_proj.weight.clone()
    qk_clip(model, {0: torch.tensor([1.0, 400.0, 2.0, 3.0]), 1: torch.zeros(HEADS)}, 100.0)
    dq, dkv, h = NOPE + ROPE, NOPE + V, 1
    # gamma = 1/4: q_nope and k_nope by 1/2 each, q_pe by 1/4, the value rows and other heads by 1
    expected_q, expected_kv = q.clone(), kv.clone()
    expected_q[h * dq : h * dq + NOPE] /= 2
    expected_q[h * dq + NOPE : (h + 1) * dq] /= 4
    expected_kv[h * dkv : h * dkv + NOPE] /= 2
    torch.testing.assert_close(attn.q_proj.weight, expected_q, rtol=0, atol=0)
    torch.testing.assert_close(attn.kv_b_proj.weight, expected_kv, rtol=0, atol=0)


def test_mla_wrong_rotary_share_would_miss_tau():
    """The rule is not slack: sqrt(γ) on q_pe (as for q_nope) leaves the hot head over tau."""
    model = tiny_mla()
    heat(model, HOT)
    inputs = capture_inputs(model, tokens())
    before, _ = max_logits_by_hand(model, inputs)
    tau = pick_tau(before)
    (layer, head) = next(iter(HOT))
    gamma = tau / float(before[layer][head])
    with torch.no_grad():
        for linear, rows, _ in mla_head_parts(mla_layers(model)[layer], head):
            linear.weight[rows] *= math.sqrt(gamma)
    after, _ = max_logits_by_hand(model, inputs)
    assert abs(float(after[layer][head]) - tau) > 1e-2 * tau


def test_deepseek_v2_mla_is_clipped_by_the_same_rows():
    model = tiny_mla(version=2)
    assert all(is_mla(a) for a in mla_layers(model))
    heat(model, HOT)
    ids = tokens()
    before = probed(model, ids)
    tau = pick_tau(before)
    assert qk_clip(model, before, tau)["clipped_heads"] == len(HOT)
    # only the first layer's input is unaffected by the clip, so check the hot head there
    (layer, head) = next(iter(HOT))
    assert layer == 0
    after = probed(model, ids)
    assert tau * (1 - 1e-4) <= float(after[0][head]) <= tau * (1 + 1e-4)
    assert all(float(after[0][h]) == float(before[0][h]) for h in range(HEADS) if h != head)


def test_mla_layout_mismatch_is_refused():
    model = tiny_mla()
    attn = model.model.layers[0].self_attn
    attn.qk_rope_head_dim = ROPE + 2  # rows no longer split into heads as declared
    with pytest.raises(ValueError, match="do not match"):
        qk_clip(model, {0: torch.tensor([1.0, 400.0, 2.0, 3.0])}, 100.0)


# ---------------------------------------------------------------- q_proj/k_proj attention unchanged


@torch.no_grad()
def reference_qk_clip(model, max_logits, tau):
    """QK-Clip for q_proj/k_proj attention as it was before MLA support, kept verbatim."""
    clipped = 0
    for attn in attention_modules(model):
        logits = max_logits.get(attn.layer_idx)
        if logits is None:
            continue
        d = attn.head_dim
        shared_keys = getattr(attn, "num_key_value_groups", 1) > 1
        for h, s in enumerate(logits.tolist()):
            if not (math.isfinite(s) and s > tau):
                continue
            gamma = tau / s
            rows = slice(h * d, (h + 1) * d)
            pairs = [(attn.q_proj, gamma)] if shared_keys else [(attn.q_proj, math.sqrt(gamma)), (attn.k_proj, math.sqrt(gamma))]
            for linear, f in pairs:
                linear.weight[rows].mul_(f)
                if linear.bias is not None:
                    linear.bias[rows].mul_(f)
            clipped += 1
    return clipped


@pytest.mark.parametrize("arch,kv", [("llama", 4), ("llama", 2), ("qwen2", 4), ("qwen2", 1)])
def test_q_k_projection_path_is_bit_identical_to_before(arch, kv):
    register_qk_probe()
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = cls(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=HEADS,
              num_key_value_heads=kv, head_dim=32, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=QK_PROBE_ATTENTION).float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
    # awkward gammas (sqrt not exact in binary), several heads over tau, one exactly at it
    logits = {0: torch.tensor([137.3, 99.0, 100.0, 1e4]), 1: torch.tensor([101.7, 3.0, 733.1, 100.5])}
    reference = copy.deepcopy(model)
    n_ref = reference_qk_clip(reference, logits, 100.0)
    stats = qk_clip(model, logits, 100.0)
    assert stats["clipped_heads"] == n_ref == 5
    ref_state = reference.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ref_state[name]), name
