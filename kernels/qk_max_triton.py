"""Triton per-head max QK logit: each [BLOCK_Q, BLOCK_K] tile of logits lives only in registers.

One program takes BLOCK_Q query rows of one (batch, head), loops over key tiles (stopping at
the diagonal for an unmasked causal pass), and writes the maximum over its rows; torch reduces
those partial maxima over batch and query blocks. The mask is read in place, bool or additive
float, with broadcast dimensions as zero strides, so nothing of size [Q, K] is allocated.
Importing this module needs triton; `kernels.qk_max` imports it only when it is chosen.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.backend import triton_interpreting
from kernels.qk_max import attends

BLOCK_Q = 64
BLOCK_K = 64

# What decides which pairs count (constexpr MODE).
ALL_PAIRS, CAUSAL, MASKED = 0, 1, 2


@triton.jit
def _qk_max_kernel(
    q_ptr, k_ptr, mask_ptr, row_ok_ptr, out_ptr,
    H, Q, K, D, kv_groups, scaling, threshold,
    sqb, sqh, sqq, sqd, skb, skh, skk, skd,
    smb, smh, smq, smk, srb, srh, srq,
    MODE: tl.constexpr, ROW_OK: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[b·H + h, pid_q] = max of scaling · q_i · k_j over this block's attended pairs (-inf if none).

    MODE: ALL_PAIRS, CAUSAL (j ≤ i) or MASKED (mask > threshold). ROW_OK: rows whose flag is 0
    (padding queries) do not count. IEEE: exact float32 products, not TF32. UPCAST: 16-bit
    operands go through float32 (exact, as their products are), for Triton's interpreter, whose
    `tl.dot` multiplies bfloat16 bit patterns as integers.
    """
    pid_q = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    g = h // kv_groups  # the key head query head h reads
    qi = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    ds = tl.arange(0, BLOCK_D)
    row_valid = qi < Q
    q = tl.load(q_ptr + b * sqb + h * sqh + qi[:, None] * sqq + ds[None, :] * sqd,
                mask=row_valid[:, None] & (ds[None, :] < D), other=0.0)  # [BLOCK_Q, BLOCK_D]
    if UPCAST:
        q = q.to(tl.float32)
    if ROW_OK:
        ok = tl.load(row_ok_ptr + b * srb + h * srh + qi * srq, mask=row_valid, other=0)
        row_valid = row_valid & (ok != 0)
    best = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    k_end = K
    if MODE == 1:
        k_end = tl.minimum(K, (pid_q + 1) * BLOCK_Q)
    for k0 in range(0, k_end, BLOCK_K):
        kj = k0 + tl.arange(0, BLOCK_K)
        kt = tl.load(k_ptr + b * skb + g * skh + kj[None, :] * skk + ds[:, None] * skd,
                     mask=(kj[None, :] < K) & (ds[:, None] < D), other=0.0)  # [BLOCK_D, BLOCK_K]
        if UPCAST:
            kt = kt.to(tl.float32)
        if IEEE or UPCAST:
            s = tl.dot(q, kt, input_precision="ieee")
        else:
            s = tl.dot(q, kt)
        s = s * scaling  # [BLOCK_Q, BLOCK_K] float32
        valid = row_valid[:, None] & (kj[None, :] < K)
        if MODE == 1:
            valid = valid & (kj[None, :] <= qi[:, None])
        if MODE == 2:
            m = tl.load(mask_ptr + b * smb + h * smh + qi[:, None] * smq + kj[None, :] * smk, mask=valid, other=0)
            valid = valid & (m.to(tl.float32) > threshold)
        best = tl.maximum(best, tl.max(tl.where(valid, s, float("-inf")), axis=1))
    tl.store(out_ptr + bh * tl.num_programs(0) + pid_q, tl.max(best, axis=0))


def qk_max_logit_triton(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, Hkv, K, D]
    attention_mask: torch.Tensor | None,  # None | bool [B|1, 1|H, Q, K] | float additive
    scaling: float,
    is_causal: bool,
    kv_groups: int = 1,
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
) -> torch.Tensor:  # float32 [H]
    """`kernels.qk_max.qk_max_logit_reference`, tile by tile (same semantics, see there)."""
    b, h, q_len, d = query.shape
    k_len = key.shape[2]
    dummy = torch.zeros(1, dtype=torch.uint8, device=query.device)
    mask, row_ok, threshold = dummy, dummy, 0.0
    mask_strides, row_strides = (0, 0, 0, 0), (0, 0, 0)
    own_token_rule = attention_mask is not None and q_len <= k_len
    if attention_mask is not None:
        mode = MASKED
        full = attention_mask.expand(b, h, q_len, k_len)  # a view: broadcast dims get stride 0
        if full.dtype == torch.bool:
            mask = full.view(torch.uint8)  # same bytes; "attend" is then > 0
        else:
            mask, threshold = full, torch.finfo(full.dtype).min / 2
        mask_strides = full.stride()
        if own_token_rule:
            # A query that may not attend to its own token is padding (see kernels.qk_max).
            row_ok = attends(attention_mask.expand(attention_mask.shape[0], attention_mask.shape[1], q_len, k_len)
                             .diagonal(offset=k_len - q_len, dim1=-2, dim2=-1)).to(torch.uint8)  # [B|1, 1|H, Q]
            row_ok = row_ok.expand(b, h, q_len)
            row_strides = row_ok.stride()
    elif is_causal and q_len > 1:
        mode = CAUSAL
    else:
        mode = ALL_PAIRS
    n_qblocks = triton.cdiv(q_len, block_q)
    if b * h * n_qblocks == 0:
        return torch.full((h,), float("-inf"), device=query.device)
    partial = torch.empty(b * h, n_qblocks, dtype=torch.float32, device=query.device)
    _qk_max_kernel[(n_qblocks, b * h)](
        query, key, mask, row_ok, partial,
        h, q_len, k_len, d, kv_groups, float(scaling), float(threshold),
        *query.stride(), *key.stride(), *mask_strides, *row_strides,
        MODE=mode, ROW_OK=own_token_rule,
        IEEE=query.dtype == torch.float32,
        UPCAST=query.dtype != torch.float32 and triton_interpreting(),
        BLOCK_Q=block_q, BLOCK_K=block_k, BLOCK_D=max(16, triton.next_power_of_2(d)),
    )
    return partial.view(b, h, n_qblocks).amax(dim=(0, 2))
