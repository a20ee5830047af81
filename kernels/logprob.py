"""Per-token log-probability and entropy of the next-token distribution, straight from hidden states.

An RL loss needs, for every generated token i with final hidden state h_i and target t_i,

    z_i = h_i Wᵀ / T                      (logits at sampling temperature T)
    logprob_i = z_{i,t_i} - logsumexp(z_i)
    entropy_i = -Σ_v p_{i,v} log p_{i,v}   (p_i = softmax(z_i))

Written directly (`naive_logprobs`), autograd keeps several [N, V] float tensors alive at once
(logits, log-softmax, softmax, their products and gradients): at 8k tokens and a 32k vocabulary
each is 1 GiB. `chunked_logprobs` walks the tokens `chunk_size` rows at a time and keeps only
three numbers per token for backward (logsumexp, entropy, target); backward recomputes each
chunk's logits. Peak memory is then one chunk's [C, V] (and a scratch of that size) plus the
[V, D] weight gradient, at the price of one extra [N, V, D] matmul (four instead of three),
which the cache-sized chunks more than win back on CPU: at vocabulary 32k, hidden 512, 1k-8k
tokens, 17%-2% of the naive peak memory in 0.96x-0.76x its time (`benchmarks/kernels.py`).

The per-row softmax work (scale, logsumexp, target pick, entropy; and the logit gradient) is
either torch ops (`TorchRows`) or two fused Triton kernels (`kernels.logprob_triton`); the
matmuls are torch's (cuBLAS / MKL) in both cases.
"""

from __future__ import annotations

from typing import Protocol

import torch

from kernels.backend import use_triton

# Logit elements per chunk (rows = budget // V) by device type: 4 Mi fp32 = 16 MiB per [C, V]
# buffer stays near the CPU caches; a GPU prefers fewer, larger launches.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 26}


def naive_logprobs(
    hidden: torch.Tensor,  # [..., D]
    weight: torch.Tensor,  # [V, D]
    targets: torch.Tensor,  # [...] int
    *,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:  # float32 [...], float32 [...]
    """The reference: full [N, V] logits and log-softmax, differentiated by autograd."""
    logits = (hidden @ weight.t()).float() / temperature  # [..., V]
    logp = torch.log_softmax(logits, dim=-1)  # [..., V]
    logprobs = logp.gather(-1, targets.unsqueeze(-1).long()).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logprobs, entropy


def chunked_logprobs(
    hidden: torch.Tensor,  # [..., D]
    weight: torch.Tensor,  # [V, D]
    targets: torch.Tensor,  # [...] int
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:  # float32 [...], float32 [...]
    """`naive_logprobs` (same values and gradients) without the [N, V] tensors.

    `chunk_size` is rows per chunk (default: `CHUNK_ELEMENTS[device] // V`, at least 1).
    `backend`: "auto" (Triton on CUDA, torch elsewhere), "torch" or "triton"; see `kernels.backend`.
    Targets must lie in [0, V); mask ignored positions in the loss, not here.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden size {hidden.shape[-1]} does not match weight {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden is {hidden.dtype} but weight is {weight.dtype}")
    lead = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])  # [N, D]
    t = targets.reshape(-1).long()  # [N]
    vocab = weight.shape[0]
    rows = chunk_size or max(1, CHUNK_ELEMENTS.get(h.device.type, 1 << 22) // vocab)
    if use_triton(h, backend):
        from kernels.logprob_triton import TritonRows

        ops: RowOps = TritonRows()
    else:
        ops = TorchRows()
    logprobs, entropy = _ChunkedLogprobs.apply(h, weight, t, float(temperature), int(rows), ops)
    return logprobs.view(lead), entropy.view(lead)


class RowOps(Protocol):
    """The softmax work on one chunk of raw logits `h_c Wᵀ` ([C, V], the matmul's dtype).

    Both methods may overwrite `logits` (a chunk of a buffer that the caller reuses) and
    `scratch` (from `scratch_buffer`, allocated once per pass for the same reason: on CPU,
    repeated [C, V] allocations fragment the heap and raise the resident peak).
    """

    def scratch_buffer(self, rows: int, vocab: int, device: torch.device) -> torch.Tensor | None:
        """The work space `forward` and `grad` need for chunks of up to `rows` rows, if any."""
        ...

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, inv_t: float, scratch: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logprob, entropy, logsumexp), float32 [C] each, of the rows of `logits * inv_t`."""
        ...

    def grad(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        inv_t: float,
        lse: torch.Tensor,
        entropy: torch.Tensor,
        g_logprob: torch.Tensor,
        g_entropy: torch.Tensor,
        scratch: torch.Tensor | None,
    ) -> torch.Tensor:
        """d(loss)/d(raw logits) [C, V] in the logits' dtype."""
        ...


class TorchRows:
    """`RowOps` in torch ops, in place on the chunk and one float32 [C, V] scratch."""

    def scratch_buffer(self, rows, vocab, device):
        return torch.empty(rows, vocab, dtype=torch.float32, device=device)

    def forward(self, logits, targets, inv_t, scratch):
        z = logits.float().mul_(inv_t)  # [C, V] (in place for float32 logits)
        zmax = z.amax(dim=-1, keepdim=True)  # [C, 1]
        z.sub_(zmax)  # shifted logits, all ≤ 0
        z_t = z.gather(1, targets[:, None]).squeeze(1)  # [C]
        e = torch.exp(z, out=scratch[: z.shape[0]])  # [C, V]
        s = e.sum(-1)  # [C]
        log_s = s.log()
        ez = e.mul_(z).sum(-1)  # Σ e^z z over the shifted logits
        # entropy = -Σ p log p = log S - Σ e^z z / S  (p = e^z / S, log p = z - log S)
        return z_t - log_s, log_s - ez / s, zmax.squeeze(1) + log_s

    def grad(self, logits, targets, inv_t, lse, entropy, g_logprob, g_entropy, scratch):
        # With log p = z - lse:  d logprob/dz = onehot(t) - p,  d entropy/dz = -p (log p + entropy);
        # z = raw / T adds the factor 1/T.
        logp = logits.float().mul_(inv_t).sub_(lse[:, None])  # [C, V]
        p = torch.exp(logp, out=scratch[: logp.shape[0]])  # [C, V]
        g = logp.add_(entropy[:, None]).mul_(g_entropy[:, None]).add_(g_logprob[:, None]).mul_(p).neg_()
        g.scatter_add_(1, targets[:, None], g_logprob[:, None])
        return g.mul_(inv_t).to(logits.dtype)


class _ChunkedLogprobs(torch.autograd.Function):
    """Forward and backward chunk by chunk over rows; backward recomputes the chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, rows, ops):
        # hidden [N, D], weight [V, D], targets [N] int64
        n = hidden.shape[0]
        inv_t = 1.0 / temperature
        logprob = torch.empty(n, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty_like(logprob)
        lse = torch.empty_like(logprob)
        buf = _logits_buffer(n, rows, weight)  # [rows, V], reused by every chunk
        scratch = ops.scratch_buffer(buf.shape[0], buf.shape[1], buf.device)
        for s in range(0, n, rows):
            h = hidden[s : s + rows]  # [C, D]
            logits = torch.mm(h, weight.t(), out=buf[: h.shape[0]])  # [C, V]
            logprob[s : s + rows], entropy[s : s + rows], lse[s : s + rows] = ops.forward(logits, targets[s : s + rows], inv_t, scratch)
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.inv_t, ctx.rows, ctx.ops = inv_t, rows, ops
        return logprob, entropy

    @staticmethod
    def backward(ctx, g_logprob, g_entropy):
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[:2]
        if g_logprob is None:
            g_logprob = torch.zeros_like(lse)
        if g_entropy is None:
            g_entropy = torch.zeros_like(lse)
        g_logprob, g_entropy = g_logprob.float(), g_entropy.float()
        rows, n = ctx.rows, hidden.shape[0]
        grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_h else None
        grad_w = None
        if need_w:
            # Summed over chunks in float32 so low-precision weights do not round once per chunk.
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # [V, D]
        if need_h or need_w:
            buf = _logits_buffer(n, rows, weight)
            scratch = ctx.ops.scratch_buffer(buf.shape[0], buf.shape[1], buf.device)
            for s in range(0, n, rows):
                h = hidden[s : s + rows]  # [C, D]
                logits = torch.mm(h, weight.t(), out=buf[: h.shape[0]])  # [C, V]
                g = ctx.ops.grad(logits, targets[s : s + rows], ctx.inv_t, lse[s : s + rows], entropy[s : s + rows],
                                 g_logprob[s : s + rows], g_entropy[s : s + rows], scratch)  # [C, V]
                if need_h:
                    torch.mm(g, weight, out=grad_h[s : s + rows])
                if need_w:
                    if weight.dtype == torch.float32:
                        grad_w.addmm_(g.t(), h)
                    else:
                        grad_w.add_(g.t() @ h)
                del g
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None, None


def _logits_buffer(n: int, rows: int, weight: torch.Tensor) -> torch.Tensor:  # [min(rows, N), V]
    """One allocation for all chunks of a pass (see `RowOps`)."""
    return torch.empty(min(rows, n), weight.shape[0], dtype=weight.dtype, device=weight.device)
