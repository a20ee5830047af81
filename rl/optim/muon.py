"""Muon with batched Newton-Schulz, computed in the precision the device is fast at.

`torch.optim.Muon` orthogonalises one matrix at a time, in bfloat16. On a GPU that is right.
On a CPU without bfloat16 matrix units it is not: bfloat16 matmuls fall back to a slow path,
and one step of the quickstart's 4-layer model took seconds instead of milliseconds. This
subclass keeps Muon's update rule, hyper-parameters and state (`momentum_buffer`, so
checkpoints and `isinstance` checks are unchanged) and changes only how the orthogonal factor
is computed: every same-shape matrix in one batched call (`kernels.newton_schulz`), in
`ns_dtype` ("auto": bfloat16 on CUDA, float32 elsewhere).
"""

from __future__ import annotations

import torch

from kernels.newton_schulz import orthogonalize
from torch.optim._muon import _adjust_lr


def resolve_ns_dtype(ns_dtype: str, device: torch.device) -> torch.dtype:
    if ns_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if ns_dtype in ("bfloat16", "float32"):
        return getattr(torch, ns_dtype)
    raise ValueError(f"ns_dtype must be 'auto', 'bfloat16' or 'float32', got {ns_dtype!r}")


class BatchedMuon(torch.optim.Muon):
    def __init__(self, params, *, ns_dtype: str = "auto", **kwargs):
        super().__init__(params, **kwargs)
        resolve_ns_dtype(ns_dtype, torch.device("cpu"))  # validate now, not at the first step
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            bufs: list[torch.Tensor] = []
            self._init_group(group, params, grads, bufs)
            if not params:
                continue
            momentum = group["momentum"]
            updates = []
            for grad, buf in zip(grads, bufs):
                buf.lerp_(grad, 1 - momentum)
                updates.append(grad.lerp(buf, momentum) if group["nesterov"] else buf)
            dtype = resolve_ns_dtype(self.ns_dtype, params[0].device)
            ortho = orthogonalize(updates, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype=dtype)
            lr = float(group["lr"])
            for p, o in zip(params, ortho):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(o.to(p.dtype), alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss
