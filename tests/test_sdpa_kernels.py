"""`kernels.sdpa.attention_kernels`: cuDNN's attention off inside the block on CUDA, the other
fused kernels and the math kernel still allowed, everything put back after; no-op elsewhere."""

from __future__ import annotations

import pytest
import torch

from kernels.sdpa import attention_kernels


def _flags() -> dict[str, bool]:
    b = torch.backends.cuda
    return {"cudnn": b.cudnn_sdp_enabled(), "flash": b.flash_sdp_enabled(), "efficient": b.mem_efficient_sdp_enabled(), "math": b.math_sdp_enabled()}


def test_cuda_excludes_cudnn_only_and_restores():
    before = _flags()
    assert before["cudnn"]  # PyTorch's default: every kernel allowed
    with attention_kernels("cuda"):
        assert _flags() == {**before, "cudnn": False}
    assert _flags() == before
    with pytest.raises(ValueError):
        with attention_kernels(torch.device("cuda", 0)):
            raise ValueError("inside")
    assert _flags() == before  # put back when the block raises too


def test_cpu_changes_nothing():
    before = _flags()
    with attention_kernels("cpu"):
        assert _flags() == before
        q = torch.randn(1, 2, 3, 8)
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert out.shape == q.shape and _flags() == before
