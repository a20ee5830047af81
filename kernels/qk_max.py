"""Per-head maximum pre-softmax attention logit, for QK-Clip, without the [B, H, Q, K] matrix.

For query head h (reading key head g(h) = h // kv_groups under GQA),

    S_max^h = max over batch b and attended pairs (i, j) of  scaling · q_{b,h,i} · k_{b,g(h),j}

"Attended" follows transformers' SDPA attention (the semantics of `policies.qk_probe`):
  - with a 4-D mask ([B|1, 1|H, Q, K]; bool True = attend, or float additive where a value at
    or below half the dtype's minimum means masked), the mask alone decides; query i is token
    K - Q + i (Q == K: token i; Q < K: the first K - Q keys are a KV cache in front of the
    queries), and a query that may not attend to its own token is padding and does not count
    at all;
  - without a mask, causal attention with Q > 1 uses torch's upper-left rule j ≤ i (keys past
    Q are empty cache slots); non-causal attention, or a single query, attends to every key.
Heads with no attended pair give -inf.

`qk_max_logit_reference` materialises the full logits; `qk_max_logit_chunked` walks query rows
so that one chunk holds at most `chunk_elements` logits (and stops at the causal frontier when
there is no mask); `kernels.qk_max_triton` keeps each [BLOCK_Q, BLOCK_K] tile in registers.
`qk_max_logit` dispatches (Triton on CUDA, chunked torch elsewhere) and has the signature of
`policies.qk_probe.max_qk_logit`.
"""

from __future__ import annotations

import torch

from kernels.backend import use_triton

# Upper bound on the logits in one chunk (B·H·rows·K floats) by device type: 16 MiB of fp32
# stays near the CPU caches; a GPU prefers fewer, larger launches.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 26}


def qk_max_logit_reference(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, Hkv, K, D]
    attention_mask: torch.Tensor | None,  # None | bool [B|1, 1|H, Q, K] | float additive
    scaling: float,
    is_causal: bool,
    kv_groups: int = 1,
) -> torch.Tensor:  # float32 [H]
    """The definition, computed on the full [B, H, Q, K] logits with repeated key heads."""
    _check_heads(query, key, kv_groups)
    q_len, k_len = query.shape[2], key.shape[2]
    k = key.float().repeat_interleave(kv_groups, dim=1)  # [B, H, K, D]
    logits = query.float() @ k.transpose(-1, -2) * scaling  # [B, H, Q, K]
    valid = valid_pairs(attention_mask, 0, q_len, q_len, k_len, is_causal, query.device)
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    return logits.amax(dim=(0, 2, 3))


@torch.no_grad()
def qk_max_logit_chunked(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, Hkv, K, D]
    attention_mask: torch.Tensor | None,
    scaling: float,
    is_causal: bool,
    kv_groups: int = 1,
    chunk_elements: int | None = None,
) -> torch.Tensor:  # float32 [H]
    """The reference, query chunk by query chunk; keys are grouped, never repeated in memory.

    Each chunk holds at most `chunk_elements` logits (default `CHUNK_ELEMENTS[device]`) and at
    least one query row.
    """
    _check_heads(query, key, kv_groups)
    b, h, q_len, d = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    key_t = key.float().transpose(-1, -2)  # [B, Hkv, D, K]
    budget = chunk_elements or CHUNK_ELEMENTS.get(query.device.type, 1 << 22)
    rows = max(1, budget // max(1, b * h * k_len))
    # Without a mask, causal queries start..start+rows-1 see keys 0..start+rows-1 only.
    frontier = attention_mask is None and is_causal and q_len > 1
    out = torch.full((h,), float("-inf"), device=query.device)
    for start in range(0, q_len, rows):
        q = query[:, :, start : start + rows].float()
        n = q.shape[2]
        keys = min(k_len, start + n) if frontier else k_len
        # query head h = g * kv_groups + r reads key head g (transformers' repeat_kv order)
        logits = torch.matmul(q.reshape(b, hkv, kv_groups * n, d), key_t[..., :keys])  # [B, Hkv, G·n, keys]
        logits = logits.view(b, h, n, keys).mul_(scaling)
        valid = valid_pairs(attention_mask, start, n, q_len, k_len, is_causal, query.device)
        if valid is not None:
            logits.masked_fill_(~valid[..., :keys], float("-inf"))
        out = torch.maximum(out, logits.amax(dim=(0, 2, 3)))
    return out


def qk_max_logit(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, Hkv, K, D]
    attention_mask: torch.Tensor | None,
    scaling: float,
    is_causal: bool,
    kv_groups: int = 1,
    chunk_elements: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:  # float32 [H]
    """S_max per query head: Triton on CUDA, `qk_max_logit_chunked` elsewhere (see `kernels.backend`)."""
    if use_triton(query, backend):
        from kernels.qk_max_triton import qk_max_logit_triton

        _check_heads(query, key, kv_groups)
        return qk_max_logit_triton(query, key, attention_mask, scaling, is_causal, kv_groups)
    return qk_max_logit_chunked(query, key, attention_mask, scaling, is_causal, kv_groups, chunk_elements)


def valid_pairs(mask, start, rows, q_len, k_len, is_causal, device) -> torch.Tensor | None:
    """Bool [., ., rows, K] of the pairs attended by query rows start:start+rows; None: all are."""
    if mask is None:
        if not is_causal or q_len == 1:
            return None
        qi = torch.arange(start, start + rows, device=device)[:, None]
        return (torch.arange(k_len, device=device)[None, :] <= qi)[None, None]
    mask = mask.expand(mask.shape[0], mask.shape[1], q_len, k_len)
    valid = attends(mask[:, :, start : start + rows])
    if q_len <= k_len:
        own = torch.arange(start, start + rows, device=device).view(1, 1, -1, 1) + (k_len - q_len)
        valid = valid & valid.gather(-1, own.expand(valid.shape[0], valid.shape[1], -1, 1))
    return valid


def attends(mask: torch.Tensor) -> torch.Tensor:
    """Bool of the same shape: True where a bool or additive float mask lets attention through."""
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def _check_heads(query: torch.Tensor, key: torch.Tensor, kv_groups: int) -> None:
    if query.shape[1] != key.shape[1] * kv_groups:
        raise ValueError(f"{query.shape[1]} query heads do not split into {key.shape[1]} key heads × {kv_groups}")
