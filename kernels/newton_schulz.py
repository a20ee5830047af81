"""Muon's quintic Newton-Schulz orthogonalisation, batched over a stack of same-shape matrices.

For G (m × n) Muon wants the orthogonal factor U Vᵀ of G = U S Vᵀ. Five steps of

    X ← X / ||X||_F                        (all singular values ≤ 1)
    A ← X Xᵀ                              (m × m, symmetric)
    B ← b A + c A²                        (symmetric too: A² = A Aᵀ)
    X ← a X + B X

with (a, b, c) = (3.4445, -4.7750, 2.0315) push every singular value of X into roughly
[0.7, 1.2] (not exactly 1: the coefficients trade accuracy for speed, which Muon tolerates).
Tall matrices (m > n) are transposed first so that A is the smaller Gram matrix.

`torch.optim.Muon` runs this one matrix at a time; a transformer has a handful of distinct
shapes (q, k, v, o, gate, up, down) repeated once per layer, so stacking the same-shape matrices
turns ~7·L small iterations into 7 batched ones (`orthogonalize`). The arguments are named
after Muon's own (`ns_coefficients`, `ns_steps`, `eps`), so an optimizer that holds Muon's param
groups can pass them straight through. The Triton version (`kernels.newton_schulz_triton`)
computes the two symmetric products on the upper-triangle tiles only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from kernels.backend import use_triton

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


def newton_schulz_reference(
    grad: torch.Tensor,  # [B, m, n]
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    ns_steps: int = NS_STEPS,
    eps: float = EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:  # [B, m, n] in `dtype`
    """Each matrix of the stack as `torch.optim.Muon` orthogonalises it, in batched torch ops.

    Computed in `dtype` (Muon's is bfloat16; the Frobenius norm is taken in it too, as Muon does).
    On a CPU without bfloat16 matrix units float32 is far faster (about 35x for Qwen2-0.5B
    shapes on an AVX2 machine, `benchmarks/kernels.py`) and closer to the exact iteration.
    """
    if grad.ndim != 3:
        raise ValueError(f"expected a stack of matrices [B, m, n], got shape {tuple(grad.shape)}")
    a, b, c = ns_coefficients
    x = grad.to(dtype)
    tall = x.shape[1] > x.shape[2]
    if tall:
        x = x.mT  # [B, n, m]: the Gram matrix below is the smaller one
    x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.mT  # [B, m, m]
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # [B, m, m]: b·A + c·A²
        x = torch.baddbmm(x, poly, x, beta=a)  # [B, m, n]: a·X + B·X
    return x.mT if tall else x


def newton_schulz(
    grad: torch.Tensor,  # [B, m, n] or [m, n]
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    ns_steps: int = NS_STEPS,
    eps: float = EPS,
    dtype: torch.dtype = torch.bfloat16,
    backend: str = "auto",
) -> torch.Tensor:  # same shape, in `dtype`
    """Orthogonalise a matrix or a stack of same-shape matrices; Triton on CUDA, torch elsewhere."""
    if ns_steps >= 100:
        raise ValueError("ns_steps must be below 100")  # as torch.optim.Muon
    if len(ns_coefficients) != 3:
        raise ValueError("ns_coefficients must be three numbers (a, b, c)")
    single = grad.ndim == 2
    stack = grad.unsqueeze(0) if single else grad
    if use_triton(stack, backend):
        from kernels.newton_schulz_triton import newton_schulz_triton

        out = newton_schulz_triton(stack, ns_coefficients, ns_steps, eps, dtype)
    else:
        out = newton_schulz_reference(stack, ns_coefficients, ns_steps, eps, dtype)
    return out.squeeze(0) if single else out


def orthogonalize(
    matrices: Sequence[torch.Tensor],  # each [m_i, n_i]
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    ns_steps: int = NS_STEPS,
    eps: float = EPS,
    dtype: torch.dtype = torch.bfloat16,
    backend: str = "auto",
) -> list[torch.Tensor]:  # each [m_i, n_i] in `dtype`, in the input order
    """`newton_schulz` of every matrix, one batched call per distinct (shape, device)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(matrices):
        if m.ndim != 2:
            raise ValueError(f"matrix {i} has shape {tuple(m.shape)}; Muon orthogonalises 2-D matrices")
        groups[(tuple(m.shape), m.device)].append(i)
    out: list[torch.Tensor | None] = [None] * len(matrices)
    for idx in groups.values():
        stacked = torch.stack([matrices[i] for i in idx])  # [B, m, n]
        result = newton_schulz(stacked, ns_coefficients, ns_steps, eps, dtype, backend)
        for i, r in zip(idx, result.unbind(0)):
            out[i] = r
    return out  # type: ignore[return-value]
