"""Triton Newton-Schulz: the symmetric products X Xᵀ and b·A + c·A Aᵀ on upper-triangle tiles only.

Both m × m products of a Newton-Schulz step are symmetric, so only the tiles (i, j) with i ≤ j
are computed and each off-diagonal tile is also written, transposed, at (j, i): for t tiles per
side that is t(t+1)/2 tile products instead of t², close to half the work of the two Gram
matmuls. The remaining product a·X + B·X is not symmetric and goes to torch (cuBLAS).
Importing this module needs triton; `kernels.newton_schulz` imports it only when it is chosen.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from kernels.backend import triton_interpreting

# Tile side of the m × m output and depth of one step along the contracted dimension.
# tl.dot needs both ≥ 16.
BLOCK = 64
BLOCK_K = 32

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _sym_gram_kernel(
    y_ptr, out_ptr, pairs_ptr, M, K,
    stride_yb, stride_ym, stride_yk, stride_ob, stride_om, stride_on,
    alpha, beta,
    ADD_INPUT: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[b] = alpha · Y Yᵀ (+ beta · Y, Y square and symmetric, when ADD_INPUT) on tile pair p.

    Program (p, b) reads its tile coordinates (i, j), i ≤ j, from `pairs`, computes the tile
    (i, j) and stores it there and, transposed, at (j, i). IEEE: exact float32 products, not
    TF32. UPCAST: 16-bit operands go through float32 (exact, as their products are), for
    Triton's interpreter, whose `tl.dot` multiplies bfloat16 bit patterns as integers.
    """
    p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ti = tl.load(pairs_ptr + 2 * p)
    tj = tl.load(pairs_ptr + 2 * p + 1)
    rows = ti * BLOCK + tl.arange(0, BLOCK)
    cols = tj * BLOCK + tl.arange(0, BLOCK)
    y = y_ptr + b * stride_yb
    acc = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        lhs = tl.load(y + rows[:, None] * stride_ym + ks[None, :] * stride_yk,
                      mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)  # Y[rows, ks]
        rhs = tl.load(y + ks[:, None] * stride_yk + cols[None, :] * stride_ym,
                      mask=(ks[:, None] < K) & (cols[None, :] < M), other=0.0)  # Y[cols, ks]ᵀ
        if UPCAST:
            lhs = lhs.to(tl.float32)
            rhs = rhs.to(tl.float32)
        if IEEE or UPCAST:
            acc = tl.dot(lhs, rhs, acc, input_precision="ieee")
        else:
            acc = tl.dot(lhs, rhs, acc)
    acc = acc * alpha
    inside = (rows[:, None] < M) & (cols[None, :] < M)
    if ADD_INPUT:
        acc += beta * tl.load(y + rows[:, None] * stride_ym + cols[None, :] * stride_yk, mask=inside, other=0.0).to(tl.float32)
    tile = acc.to(out_ptr.dtype.element_ty)
    o = out_ptr + b * stride_ob
    tl.store(o + rows[:, None] * stride_om + cols[None, :] * stride_on, tile, mask=inside)
    if ti != tj:
        tl.store(o + cols[:, None] * stride_om + rows[None, :] * stride_on, tl.trans(tile),
                 mask=(cols[:, None] < M) & (rows[None, :] < M))


@functools.lru_cache(maxsize=64)
def _upper_tile_pairs(tiles: int, device: torch.device) -> torch.Tensor:  # int32 [P, 2]
    """(i, j) with i ≤ j for a side of `tiles` tiles; cached: ten launches per Newton-Schulz call."""
    i, j = torch.triu_indices(tiles, tiles)
    return torch.stack([i, j], dim=1).to(torch.int32).contiguous().to(device)


def sym_gram(
    y: torch.Tensor,  # [B, M, K]
    out: torch.Tensor,  # [B, M, M]
    alpha: float = 1.0,
    beta: float = 0.0,
    add_input: bool = False,
    block: int = BLOCK,
    block_k: int = BLOCK_K,
) -> torch.Tensor:
    """out ← alpha · Y Yᵀ (+ beta · Y when `add_input`; then Y must be square and symmetric)."""
    bsz, m, k = y.shape
    if add_input and m != k:
        raise ValueError("add_input needs a square Y")
    pairs = _upper_tile_pairs(triton.cdiv(m, block), y.device)
    grid = (pairs.shape[0], bsz)
    _sym_gram_kernel[grid](
        y, out, pairs, m, k,
        y.stride(0), y.stride(1), y.stride(2), out.stride(0), out.stride(1), out.stride(2),
        alpha, beta,
        ADD_INPUT=add_input, IEEE=y.dtype == torch.float32, UPCAST=y.dtype != torch.float32 and triton_interpreting(),
        BLOCK=block, BLOCK_K=block_k,
    )
    return out


def newton_schulz_triton(
    grad: torch.Tensor,  # [B, m, n]
    ns_coefficients: tuple[float, float, float],
    ns_steps: int,
    eps: float,
    dtype: torch.dtype,
    block: int = BLOCK,
    block_k: int = BLOCK_K,
) -> torch.Tensor:  # [B, m, n] in `dtype`
    """`kernels.newton_schulz.newton_schulz_reference` with the symmetric products in Triton."""
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype}")
    a, b, c = ns_coefficients
    x = grad.to(dtype)
    tall = x.shape[1] > x.shape[2]
    if tall:
        x = x.mT
    x = (x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)).contiguous()  # [B, m, n]
    bsz, m, _ = x.shape
    gram = torch.empty(bsz, m, m, dtype=dtype, device=x.device)  # A
    poly = torch.empty_like(gram)  # B
    for _ in range(ns_steps):
        sym_gram(x, gram, block=block, block_k=block_k)  # A = X Xᵀ
        sym_gram(gram, poly, alpha=c, beta=b, add_input=True, block=block, block_k=block_k)  # B = c·A Aᵀ + b·A
        x = torch.baddbmm(x, poly, x, beta=a)  # a·X + B·X
    return x.mT if tall else x
