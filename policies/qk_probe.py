"""Attention that can report each head's largest pre-softmax logit (for QK-Clip).

`register_qk_probe()` adds the attention implementation `QK_PROBE_ATTENTION` to transformers.
It computes attention with `transformers`' own SDPA path (same GQA handling, masks, `is_causal`
and scaling, so outputs and gradients are those of `attn_implementation="sdpa"`). Inside
`probe_qk(model)` it also records, for every query head h of every attention module,

    S_max^h = max over batch b and attended pairs (i, j) of  scaling * q_{b,h,i} · k_{b,g(h),j}

where g(h) = h // (num_heads / num_kv_heads) is the key head that query head h reads (GQA).
"Attended" means the pair takes part in the softmax: the 4-D mask allows it, or, without a
mask, j <= i for causal attention. Query rows that may not attend to their own position are
padding and do not count either (see `_valid_pairs`). The logits are computed under no_grad,
query chunk by query chunk, so the [B, H, T, T] matrix never exists at once.

The running maximum over forward passes lives on each attention module as `qk_max_logit`
(float32 [num_heads]); `read_max_logits` collects it by layer and resets it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

QK_PROBE_ATTENTION = "swarmrl_sdpa_probe"
# Upper bound on the elements of one chunk of logits (B·H·rows·K floats) by device type: 16 MiB
# of fp32 stays in CPU caches (measured ~2x faster than 256 MiB chunks); a GPU prefers fewer,
# larger launches.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 26}


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


@torch.no_grad()
def max_qk_logit(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, Hkv, K, D]
    attention_mask: torch.Tensor | None,  # None | bool [B|1, 1|H, Q, K] (True: attend) | float additive
    scaling: float,
    is_causal: bool,
    kv_groups: int = 1,
    chunk_elements: int | None = None,
) -> torch.Tensor:  # float32 [H]
    """Per query head, max of `scaling * q·k` over the pairs that attend; -inf if none does.

    Query heads are grouped by the key head they share, so keys are never repeated in memory;
    each chunk holds at most `chunk_elements` logits (default: `CHUNK_ELEMENTS` for the device),
    and at least one query row.
    """
    b, h, q_len, d = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    if h != hkv * kv_groups:
        raise ValueError(f"{h} query heads do not split into {hkv} key heads × {kv_groups}")
    key_t = key.float().transpose(-1, -2)  # [B, Hkv, D, K]
    budget = chunk_elements or CHUNK_ELEMENTS.get(query.device.type, 1 << 24)
    rows = max(1, budget // max(1, b * h * k_len))
    out = torch.full((h,), float("-inf"), device=query.device)
    for start in range(0, q_len, rows):
        q = query[:, :, start : start + rows].float()
        n = q.shape[2]
        # query head h = g * kv_groups + r reads key head g (transformers' repeat_kv order)
        logits = torch.matmul(q.reshape(b, hkv, kv_groups * n, d), key_t).view(b, h, n, k_len) * scaling
        valid = _valid_pairs(attention_mask, start, n, q_len, k_len, is_causal, query.device)
        if valid is not None:
            logits.masked_fill_(~valid, float("-inf"))
        out = torch.maximum(out, logits.amax(dim=(0, 2, 3)))
    return out


def _valid_pairs(mask, start, rows, q_len, k_len, is_causal, device) -> torch.Tensor | None:
    """Bool [., ., rows, K] of the (query, key) pairs SDPA attends to for query rows start:start+rows."""
    if mask is None:
        # Mirrors sdpa_attention_forward: without a mask, a single query attends to every key,
        # and several queries use torch's upper-left causal rule j <= i (with a longer key
        # tensor, as in a static-cache prefill, the keys past q_len are empty slots).
        if not is_causal or q_len == 1:
            return None
        qi = torch.arange(start, start + rows, device=device)[:, None]
        return (torch.arange(k_len, device=device)[None, :] <= qi)[None, None]
    mask = mask.expand(mask.shape[0], mask.shape[1], q_len, k_len)
    part = mask[:, :, start : start + rows]
    valid = part if part.dtype == torch.bool else part > torch.finfo(part.dtype).min / 2
    if q_len == k_len:
        # Query i is token i. A query that may not attend to its own token is padding (right
        # padding can still see the real tokens before it): its output is never used, so its
        # logits must not trigger QK-Clip. With a cache the query/key alignment is not known
        # here; fully masked rows (left padding) drop out by the mask alone.
        own = torch.arange(start, start + rows, device=device).view(1, 1, -1, 1)
        diag = valid.gather(-1, own.expand(valid.shape[0], valid.shape[1], -1, 1))
        valid = valid & diag
    return valid


def attention_modules(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The attention modules QK-Clip can act on: q_proj, k_proj and a layer index."""
    for m in model.modules():
        if hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "layer_idx"):
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
