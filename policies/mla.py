"""Where a head's query and key live in multi-head latent attention (MLA, DeepSeek-V2/V3).

MLA builds head h's query and key from four pieces:

    q_h = [q_nope_h ; q_pe_h]     rows of q_proj (or q_b_proj under a query LoRA), per head
                                  [qk_nope_head_dim rows, then qk_rope_head_dim rows]
    k_h = [k_nope_h ; k_pe]       k_nope_h: rows of kv_b_proj, per head [qk_nope_head_dim rows of
                                  key, then v_head_dim rows of value]; k_pe: the last
                                  qk_rope_head_dim rows of kv_a_proj_with_mqa, ONE rotary key
                                  shared by every head

so the logit is q_nope_h·k_nope_h + RoPE(q_pe_h)·RoPE(k_pe). To scale head h's logits by γ
without touching any other head, QK-Clip (Kimi K2 report) scales q_nope_h and k_nope_h by
sqrt(γ) each and q_pe_h by γ; the shared k_pe is left alone, since scaling it would change
every head. RoPE is a rotation, so scaling q_pe_h before it scales the rotary term by γ.

The layout above is checked by hand per transformers class, so modules are recognised by type
(their class or a base class is in `MLA_CLASSES`), not by the names of their attributes: an
unknown attention that happens to have a `kv_b_proj` may lay its rows out differently.
"""

from __future__ import annotations

import torch

# (module, class) of attention implementations with the layout described above.
MLA_CLASSES = frozenset(
    {
        ("transformers.models.deepseek_v2.modeling_deepseek_v2", "DeepseekV2Attention"),
        ("transformers.models.deepseek_v3.modeling_deepseek_v3", "DeepseekV3Attention"),
    }
)

# How much of γ a piece takes: its rows are multiplied by sqrt(γ) (HALF) or by γ (FULL).
HALF, FULL = "half", "full"


def is_mla(module: torch.nn.Module) -> bool:
    """True for a known MLA attention class or a subclass of one (no import of the classes)."""
    return any((c.__module__, c.__qualname__) in MLA_CLASSES for c in type(module).__mro__)


def mla_head_parts(attn: torch.nn.Module, head: int) -> list[tuple[torch.nn.Linear, slice, str]]:
    """[(linear, rows, share)] that QK-Clip scales for query head `head` of an MLA module."""
    nope, rope, v = attn.qk_nope_head_dim, attn.qk_rope_head_dim, attn.v_head_dim
    heads = attn.num_heads
    q = attn.q_proj if getattr(attn, "q_proj", None) is not None else attn.q_b_proj
    dq, dkv = nope + rope, nope + v
    if q.out_features != heads * dq or attn.kv_b_proj.out_features != heads * dkv:
        raise ValueError(
            f"{type(attn).__name__} layer {attn.layer_idx}: projections of {q.out_features} and "
            f"{attn.kv_b_proj.out_features} rows do not match {heads} heads of ({nope}+{rope}, {nope}+{v})"
        )
    if not 0 <= head < heads:
        raise IndexError(f"head {head} out of range for {heads} heads")
    q0, kv0 = head * dq, head * dkv
    return [
        (q, slice(q0, q0 + nope), HALF),  # q_nope_h
        (attn.kv_b_proj, slice(kv0, kv0 + nope), HALF),  # k_nope_h (the value rows after it stay)
        (q, slice(q0 + nope, q0 + dq), FULL),  # q_pe_h: carries all of γ for the rotary term
    ]
