"""Which fused attention kernels the `hf` engine's decoding may use on a GPU: all but cuDNN's.

In bf16 on Hopper, PyTorch's scaled_dot_product_attention prefers cuDNN's kernel, and cuDNN
builds an execution plan the first time it meets an input shape. Decoding meets a new shape at
every step (one more key to attend over), and RL's prompts change every step, so the engine would
pay for plans over and over. Measured on an H200 (`benchmarks/sdpa_kernels.py`'s first run;
gpu_check's c1/c2 rows agree), a random Qwen2.5-0.5B-shaped model, 128 completions of 128 tokens:
the first bf16 decode under PyTorch's choice ran at 991 tok/s; afterwards, at the same shapes,
5,155 tok/s with cuDNN excluded, 5,339 with cuDNN alone (its plans then cached) and 6,002 in fp32
(where cuDNN does not apply). Only the attention's shape changes from one step to the next, and
only cuDNN keeps per-shape state, hence the exclusion; the benchmark now runs the two choices at
new and at cached shapes side by side. Without cuDNN, PyTorch takes flash or memory-efficient
attention where their constraints hold and the math kernel otherwise (a query of one token for
each decoding step: cheap).

The learner keeps PyTorch's choice: its forwards and backwards over long rows are where a fused
kernel matters most, and that trade has not been measured yet (the benchmark's learner rows).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# read at each use, so a benchmark can put cuDNN back to measure what it costs
CUDA_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@contextmanager
def attention_kernels(device: torch.device | str) -> Iterator[None]:
    """Restrict SDPA to `CUDA_KERNELS` inside the block on a CUDA device; elsewhere nothing changes."""
    with sdpa_kernel(CUDA_KERNELS) if torch.device(device).type == "cuda" else nullcontext():
        yield
