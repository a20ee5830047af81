"""Attention that can report each head's largest pre-softmax logit (for QK-Clip).

We register an attention implementation with transformers: it computes attention exactly as
the stock SDPA path does, and, while `probe_qk(model)` is active, also records for every query
head `S_max^h = max over attended (query, key) pairs of scaling * q·k`. The logits are computed
in query chunks under no_grad, so the [B, H, T, T] matrix never exists at once.

The running maximum lives on each attention module as `qk_max_logit` (float [num_heads]);
`read_max_logits` collects it per layer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

QK_PROBE_ATTENTION = "swarmrl_sdpa_probe"
QUERY_CHUNK = 256


def register_qk_probe() -> None:
    """Make `attn_implementation=QK_PROBE_ATTENTION` available (idempotent)."""
    AttentionInterface.register(QK_PROBE_ATTENTION, qk_probe_attention_forward)
    AttentionMaskInterface.register(QK_PROBE_ATTENTION, sdpa_mask)


def qk_probe_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    if getattr(module, "qk_probe_enabled", False):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        head_max = max_qk_logit(query, key, attention_mask, scale, causal, getattr(module, "num_key_value_groups", 1))
        prev = getattr(module, "qk_max_logit", None)
        module.qk_max_logit = head_max if prev is None else torch.maximum(prev, head_max)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)


@torch.no_grad()
def max_qk_logit(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, Hkv, K, D]
    attention_mask: torch.Tensor | None,  # None | bool [B, 1, Q, K] (True: attend) | float additive
    scaling: float,
    is_causal: bool,
    kv_groups: int = 1,
    chunk: int = QUERY_CHUNK,
) -> torch.Tensor:  # [H]
    """Per-head max of `scaling * q·k` over the pairs the mask lets attend."""
    key = repeat_kv(key, kv_groups).float()
    b, h, q_len, _ = query.shape
    k_len = key.shape[2]
    out = torch.full((h,), float("-inf"), device=query.device)
    for start in range(0, q_len, chunk):
        q = query[:, :, start : start + chunk].float()
        logits = torch.matmul(q, key.transpose(-1, -2)) * scaling  # [B, H, c, K]
        valid = _valid_pairs(attention_mask, start, q.shape[2], q_len, k_len, is_causal, query.device)
        if valid is not None:
            logits = logits.masked_fill(~valid, float("-inf"))
        out = torch.maximum(out, logits.amax(dim=(0, 2, 3)))
    return out


def _valid_pairs(mask, start, rows, q_len, k_len, is_causal, device) -> torch.Tensor | None:
    if mask is not None:
        part = mask[:, :, start : start + rows, :k_len]
        valid = part if part.dtype == torch.bool else part > torch.finfo(part.dtype).min / 2
        # A padding query is one that may not attend to its own position; its logits never
        # reach a real token's output, so they must not count (nor trigger QK-Clip).
        own = torch.arange(start, start + rows, device=device) + (k_len - q_len)
        diag = valid.gather(-1, own.view(1, 1, -1, 1).expand(valid.shape[0], valid.shape[1], -1, 1))
        return valid & diag
    if not is_causal or q_len == 1:
        return None
    # No mask means plain causal attention; queries are the last q_len positions of k_len.
    qi = torch.arange(start, start + rows, device=device)[:, None] + (k_len - q_len)
    return (torch.arange(k_len, device=device)[None, :] <= qi)[None, None]


def attention_modules(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    for m in model.modules():
        if hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "layer_idx"):
            yield m


@contextmanager
def probe_qk(model: torch.nn.Module, enabled: bool = True):
    """Record per-head max logits in every forward pass inside the block."""
    mods = list(attention_modules(model))
    for m in mods:
        m.qk_probe_enabled = enabled
    try:
        yield
    finally:
        for m in mods:
            m.qk_probe_enabled = False


def read_max_logits(model: torch.nn.Module, reset: bool = True) -> dict[int, torch.Tensor]:
    """{layer_idx: [num_heads]} of the maxima recorded since the last reset."""
    found = {}
    for m in attention_modules(model):
        value = getattr(m, "qk_max_logit", None)
        if value is not None:
            found[m.layer_idx] = value.detach().clone()
            if reset:
                m.qk_max_logit = None
    return found
