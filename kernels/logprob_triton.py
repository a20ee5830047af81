"""Triton kernels for `kernels.logprob`: the per-row softmax work on one chunk of logits, fused.

`TorchRows` makes several passes over each [C, V] chunk (scale, logsumexp, subtract, exp,
product, sum; in backward as many again) and allocates a second [C, V] buffer. Here one program
per row streams its logits once in forward (online logsumexp and entropy) and once in backward,
where the logit gradient overwrites the logits in place, so the chunk needs no buffer besides
the matmul's output. Importing this module needs triton; `kernels.logprob` imports it only when
the Triton backend is chosen.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Columns per step of a row's loop; a power of two (tl.arange).
BLOCK_V = 1024
# Running maximum before any column is seen: finite, so that exp(m_old - m_new) is 1, not nan.
_NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def _forward_rows_kernel(
    logits_ptr, stride_row, targets_ptr, logprob_ptr, entropy_ptr, lse_ptr, V, inv_t,
    BLOCK: tl.constexpr,
):
    """Row r of `logits * inv_t`: logsumexp, log p(target), entropy, in one pass over V.

    Per lane it keeps m (max seen), s = Σ e^(z-m) and w = Σ e^(z-m)(z-m); the lanes merge at the
    end. Entropy = log S - W / S with the shifted w, which avoids the cancellation of
    lse - E[z] when the logits are large.
    """
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    m = tl.full([BLOCK], _NEG_BIG, tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    w = tl.zeros([BLOCK], tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        valid = cols < V
        z = tl.load(base + cols, mask=valid, other=0.0).to(tl.float32) * inv_t
        m_new = tl.maximum(m, tl.where(valid, z, _NEG_BIG))
        alpha = tl.exp(m - m_new)
        shifted = tl.where(valid, z - m_new, 0.0)
        e = tl.where(valid, tl.exp(shifted), 0.0)
        w = alpha * (w + (m - m_new) * s) + e * shifted
        s = alpha * s + e
        m = m_new
    m_row = tl.max(m, axis=0)
    scale = tl.exp(m - m_row)
    s_row = tl.sum(scale * s, axis=0)
    w_row = tl.sum(scale * (w + (m - m_row) * s), axis=0)
    lse = m_row + tl.log(s_row)
    target = tl.load(targets_ptr + row)
    z_t = tl.load(base + target).to(tl.float32) * inv_t
    tl.store(logprob_ptr + row, z_t - lse)
    tl.store(entropy_ptr + row, tl.log(s_row) - w_row / s_row)
    tl.store(lse_ptr + row, lse)


@triton.jit
def _grad_rows_kernel(
    logits_ptr, stride_row, targets_ptr, lse_ptr, entropy_ptr, g_logprob_ptr, g_entropy_ptr, V, inv_t,
    BLOCK: tl.constexpr,
):
    """Row r: overwrite raw logits with d(loss)/d(raw logits), given the saved lse and entropy.

    d logprob/dz = onehot(t) - p and d entropy/dz = -p (log p + entropy), with z = raw · inv_t.
    """
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    target = tl.load(targets_ptr + row)
    lse = tl.load(lse_ptr + row)
    ent = tl.load(entropy_ptr + row)
    g_lp = tl.load(g_logprob_ptr + row)
    g_ent = tl.load(g_entropy_ptr + row)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        valid = cols < V
        logp = tl.load(base + cols, mask=valid, other=0.0).to(tl.float32) * inv_t - lse
        p = tl.exp(logp)
        g = -p * (g_lp + g_ent * (logp + ent))
        g = tl.where(cols == target, g + g_lp, g) * inv_t
        tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=valid)


class TritonRows:
    """`kernels.logprob.RowOps` with the two kernels above (one program per row)."""

    def scratch_buffer(self, rows, vocab, device):
        return None  # the kernels stream each row and write the gradient over the logits

    def forward(self, logits, targets, inv_t, scratch):
        c, v = logits.shape
        logits = logits.contiguous()
        logprob = torch.empty(c, dtype=torch.float32, device=logits.device)
        entropy, lse = torch.empty_like(logprob), torch.empty_like(logprob)
        if c:
            _forward_rows_kernel[(c,)](logits, logits.stride(0), targets.contiguous(), logprob, entropy, lse, v, inv_t,
                                       BLOCK=min(BLOCK_V, triton.next_power_of_2(v)))
        return logprob, entropy, lse

    def grad(self, logits, targets, inv_t, lse, entropy, g_logprob, g_entropy, scratch):
        c, v = logits.shape
        logits = logits.contiguous()
        if c:
            _grad_rows_kernel[(c,)](logits, logits.stride(0), targets.contiguous(), lse.contiguous(), entropy.contiguous(),
                                    g_logprob.contiguous(), g_entropy.contiguous(), v, inv_t,
                                    BLOCK=min(BLOCK_V, triton.next_power_of_2(v)))
        return logits
