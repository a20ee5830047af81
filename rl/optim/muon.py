"""Muon with batched Newton-Schulz, computed in the precision the device is fast at.

`torch.optim.Muon` orthogonalises one matrix at a time, in bfloat16. On a GPU that is right.
On a CPU without bfloat16 matrix units it is not: bfloat16 matmuls fall back to a slow path,
and one step of the quickstart's 4-layer model took seconds instead of milliseconds. This
subclass keeps Muon's update rule, hyper-parameters and state (`momentum_buffer`, so
checkpoints and `isinstance` checks are unchanged) and changes only how the orthogonal factor
is computed: every same-shape matrix in one batched call (`kernels.newton_schulz`), in
`ns_dtype` ("auto": bfloat16 on CUDA, float32 elsewhere).

Under FSDP2 (`fully_shard`) the parameters, gradients and momentum buffers are DTensors split
by rows over the ranks. Momentum, weight decay and the update then run on this rank's rows;
only the orthogonalisation needs whole matrices, and `rl.optim.sharded_muon` computes it
(each matrix gathered on one owner rank, orthogonalised there, its rows sent back). The
learning-rate adjustment uses the matrix's global shape, so the step is the unsharded one.
"""

from __future__ import annotations

import time

import torch

from kernels.newton_schulz import orthogonalize
from rl.optim.sharded_muon import OwnedWork, check_row_sharded, ns_rounds, sharded_orthogonalize
from torch.distributed.tensor import DTensor
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
        self.last_owned = OwnedWork()  # the matrices this rank orthogonalised in the last step
        # this thread's CPU seconds (`time.thread_time`) in the orthogonalisation of the last step:
        # `orthogonalize` alone, or under FSDP2 all of `sharded_orthogonalize` (the packing and
        # unpacking of its all-to-alls included, the wait for the other ranks not: a blocked thread
        # uses no CPU). Meaningful with torch_threads=1, where the matmuls run on this thread.
        self.last_ns_seconds = 0.0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_owned = OwnedWork()
        self.last_ns_seconds = 0.0
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            bufs: list[torch.Tensor] = []
            self._init_group(group, params, grads, bufs)
            if not params:
                continue
            if any(isinstance(p, DTensor) for p in params):
                self._sharded_step(group, params, grads, bufs)
                continue
            self.last_owned += OwnedWork(len(params), sum(p.numel() for p in params))
            momentum = group["momentum"]
            updates = []
            for grad, buf in zip(grads, bufs):
                buf.lerp_(grad, 1 - momentum)
                updates.append(grad.lerp(buf, momentum) if group["nesterov"] else buf)
            dtype = resolve_ns_dtype(self.ns_dtype, params[0].device)
            t0 = time.thread_time()
            ortho = orthogonalize(updates, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype=dtype)
            self.last_ns_seconds += time.thread_time() - t0
            lr = float(group["lr"])
            for p, o in zip(params, ortho):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(o.to(p.dtype), alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss

    def _sharded_step(self, group: dict, params: list[DTensor], grads: list[DTensor], bufs: list[DTensor]) -> None:
        """The step above for row-sharded DTensors: elementwise work on this rank's rows, the
        orthogonalisation shared out over the ranks (`sharded_orthogonalize`, collective)."""
        check_row_sharded(grads)  # the parameters are checked by sharded_orthogonalize
        check_row_sharded(bufs)  # zeros_like(grad) makes it so; a plain buffer loaded from elsewhere would not be
        momentum, lr = group["momentum"], float(group["lr"])
        dtype = resolve_ns_dtype(self.ns_dtype, params[0].device)
        # a few matrices at a time: the gathered blocks, the results and their padded copies exist
        # for one round only, so the step's extra memory is a few matrices, not the whole model's
        for bucket in ns_rounds([tuple(p.shape) for p in params], params[0].device_mesh.size(0)):
            updates = []  # this rank's rows, each [rows_i, n_i]
            for i in bucket:
                g, b = grads[i].to_local(), bufs[i].to_local()
                b.lerp_(g, 1 - momentum)
                updates.append(g.lerp(b, momentum) if group["nesterov"] else b)
            t0 = time.thread_time()
            ortho, work = sharded_orthogonalize([params[i] for i in bucket], updates, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)
            self.last_ns_seconds += time.thread_time() - t0
            self.last_owned += work
            del updates
            for i, o in zip(bucket, ortho):
                p = params[i]
                local = p.to_local()  # a view of this rank's rows: in-place ops update the parameter
                local.mul_(1 - lr * group["weight_decay"])
                local.add_(o.to(p.dtype), alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))  # global shape
