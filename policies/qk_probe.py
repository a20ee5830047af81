"""Attention that can report each head's largest pre-softmax logit (for QK-Clip).

`register_qk_probe()` adds the attention implementation `QK_PROBE_ATTENTION` to transformers.
It computes attention with `transformers`' own SDPA path (same GQA handling, masks, `is_causal`
and scaling, so outputs and gradients are those of `attn_implementation="sdpa"`). Inside
`probe_qk(model)` it also records, for every query head h of every attention module,

    S_max^h = max over batch b and attended pairs (i, j) of  scaling * q_{b,h,i} · k_{b,g(h),j}

where g(h) = h // (num_heads / num_kv_heads) is the key head that query head h reads (GQA).
"Attended" means the pair takes part in the softmax: the 4-D mask allows it, or, without a
mask, j <= i for causal attention. Query rows that may not attend to their own position are
padding and do not count either (see `kernels.qk_max.valid_pairs`). The logits are computed under
no_grad by `kernels.qk_max` (query chunks on CPU, tiles in Triton on GPU), so the [B, H, T, T]
matrix never exists at once.

The running maximum over forward passes lives on each attention module as `qk_max_logit`
(float32 [num_heads]); `read_max_logits` collects it by layer and resets it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from kernels.qk_max import qk_max_logit as max_qk_logit  # Triton on CUDA, chunked torch on CPU
from policies.mla import is_mla
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

QK_PROBE_ATTENTION = "swarmrl_sdpa_probe"


def register_qk_probe() -> None:
    """Make `attn_implementation=QK_PROBE_ATTENTION` available; calling it again changes nothing."""
    AttentionInterface.register(QK_PROBE_ATTENTION, qk_probe_attention_forward)
    # Without a mask function under the same name, transformers builds no mask at all for an
    # unknown implementation, and padding would silently be attended to.
    AttentionMaskInterface.register(QK_PROBE_ATTENTION, sdpa_mask)


def qk_probe_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, Hkv, K, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, plus the per-head max logit while probing is on."""
    if getattr(module, "qk_probe_enabled", False):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        groups = getattr(module, "num_key_value_groups", 1)
        head_max = max_qk_logit(query, key, attention_mask, scale, causal, groups)
        prev = getattr(module, "qk_max_logit", None)
        module.qk_max_logit = head_max if prev is None else torch.maximum(prev, head_max)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)


def attention_modules(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The attention modules QK-Clip can act on: q_proj, k_proj and a layer index, or a known
    multi-head latent attention class (`policies.mla`)."""
    for m in model.modules():
        if (hasattr(m, "q_proj") and hasattr(m, "k_proj") or is_mla(m)) and hasattr(m, "layer_idx"):
            yield m


@contextmanager
def probe_qk(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Record per-head max logits in every forward pass inside the block (nests: restores on exit)."""
    mods = list(attention_modules(model))
    before = [getattr(m, "qk_probe_enabled", False) for m in mods]
    for m in mods:
        m.qk_probe_enabled = enabled
    try:
        yield
    finally:
        for m, was in zip(mods, before):
            m.qk_probe_enabled = was


def read_max_logits(model: torch.nn.Module, reset: bool = True) -> dict[int, torch.Tensor]:
    """{layer_idx: float32 [num_heads]} of the maxima recorded since the last reset."""
    found = {}
    for m in attention_modules(model):
        value = getattr(m, "qk_max_logit", None)
        if value is not None:
            found[m.layer_idx] = value.detach().clone()
            if reset:
                m.qk_max_logit = None
    return found


def overall_max_logit(max_logits: dict[int, torch.Tensor]) -> float:
    """max_l max_h S_max^{l,h}, the number to log; -inf when nothing was recorded."""
    return max((float(v.max()) for v in max_logits.values() if v.numel()), default=float("-inf"))
