"""Which implementation of a kernel runs: Triton on CUDA tensors, plain torch everywhere else.

Triton compiles for GPUs only. On a machine without one, its interpreter (`TRITON_INTERPRET=1`
in the environment before the kernels are defined) runs the same kernels on CPU tensors with
numpy: far too slow for training, but it is how the tests check the Triton code on CPU.
Triton is an optional dependency: nothing here imports it, so the package works without it.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """True when Triton kernels would run in its CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def use_triton(tensor: torch.Tensor, backend: str) -> bool:
    """Whether a kernel called on `tensor` with `backend` ("auto" | "torch" | "triton") runs Triton.

    "auto" picks Triton for CUDA tensors when it is installed and torch otherwise (on CPU the
    interpreter would be orders of magnitude slower than torch). "triton" insists, and says why
    when it cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "torch":
        return False
    if backend == "auto":
        return tensor.is_cuda and triton_installed()
    if not triton_installed():
        raise RuntimeError("backend='triton' needs the triton package (pip install -e .[test] installs it)")
    if not (tensor.is_cuda or triton_interpreting()):
        raise RuntimeError(
            f"Triton kernels run on CUDA tensors; this one is on {tensor.device}. "
            "For CPU tensors set TRITON_INTERPRET=1 before the kernels are imported (slow; for tests)."
        )
    return True
