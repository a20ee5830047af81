"""QK-Clip (Kimi K2 report): keep attention logits bounded by rescaling W_q and W_k per head.

After an optimizer step, for each head h whose max pre-softmax logit S_max^h (measured in the
step's forward passes by `policies.qk_probe`) exceeds τ, with γ_h = τ / S_max^h:

- multi-head attention (num_kv_heads == num_heads): the rows h·d:(h+1)·d of W_q and of W_k
  (d = head_dim) are each scaled by sqrt(γ_h). RoPE is a rotation, so q_h and k_h scale by
  sqrt(γ_h), every logit of head h scales by γ_h and its max becomes exactly τ.
- grouped-query attention: key head g is shared by the query heads g·G ... (g+1)·G - 1. Scaling
  its W_k rows would also shrink the logits of sibling heads that are under τ, which QK-Clip
  must leave alone, so only query head h's W_q rows are scaled, by γ_h (same effect on head h).
- multi-head latent attention (DeepSeek-V2/V3, `policies/mla.py`): head h's non-rotary query and key
  rows (q_nope, k_nope) by sqrt(γ_h) each, its rotary query rows (q_pe) by γ_h; the rotary key
  is one head shared by all query heads and is left alone, as the shared GQA key is.

q/k biases (Qwen2) scale with their rows: q = W_q x + b_q scales as a whole only if both do.
Under LoRA (`policies.lora`) a head's query is (W_q + s·B·A)[rows] x: the rows of the base W_q
and of B are scaled alike, which scales exactly those rows of the merged weight the workers serve.
Heads at or under τ are left bit-identical. Optimizer state (Muon momentum) is not touched,
as in the report: only the weights are rescaled.

Under FSDP2 (N ranks, each with its own micro-batches and its own rows of every weight):
`reduce_max_logits` first takes each head's max over the ranks (an all-reduce MAX), so every rank
clips the same heads by the same γ; `qk_clip` then scales each head's rows where they live, on
the rank(s) whose shard holds them (DTensor Shard(0): rank r holds rows [r·c, (r+1)·c), c =
ceil(R / N)). No weight moves between ranks.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from policies.lora import output_row_tensors
from policies.mla import FULL, HALF, is_mla, mla_head_parts
from policies.qk_probe import attention_modules
from rl.optim.sharded_muon import is_row_sharded, shard_rows


@torch.no_grad()
def reduce_max_logits(
    model: torch.nn.Module, max_logits: dict[int, torch.Tensor], group: dist.ProcessGroup | None = None
) -> dict[int, torch.Tensor]:
    """{layer_idx: [num_heads]} with each head's max over all ranks of `group` (default: the world).

    Returns `max_logits` itself when torch.distributed is not initialised or has one rank.
    Otherwise collective: every rank must call it, after its forward passes and before
    `qk_clip`. A rank may lack layers (it recorded nothing there); the result holds every layer
    that any rank recorded, the same on all ranks. Layers are matched through the model's
    attention modules, so each rank may pass its dict in any order.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return max_logits
    layers = sorted({attn.layer_idx for attn in attention_modules(model)})
    unknown = set(max_logits) - set(layers)
    if unknown:
        raise ValueError(f"max logits for layers {sorted(unknown)}, which are not attention layers of the model")
    recorded = list(max_logits.values())
    device = recorded[0].device if recorded else next(model.parameters()).device  # nccl needs CUDA tensors
    # Heads per layer first: a rank that recorded nothing for a layer cannot know its width.
    heads = torch.tensor([max_logits[k].numel() if k in max_logits else 0 for k in layers], device=device)  # [L]
    dist.all_reduce(heads, op=dist.ReduceOp.MAX, group=group)
    widths = heads.tolist()
    flat = torch.full((sum(widths),), float("-inf"), dtype=torch.float32, device=device)  # [Σ heads]: -inf = nothing seen
    for layer, chunk in zip(layers, flat.split(widths)):
        if layer in max_logits:
            chunk.copy_(max_logits[layer].reshape(-1))
    dist.all_reduce(flat, op=dist.ReduceOp.MAX, group=group)
    return {layer: chunk.clone() for layer, chunk, width in zip(layers, flat.split(widths), widths) if width}


@torch.no_grad()
def qk_clip(model: torch.nn.Module, max_logits: dict[int, torch.Tensor], tau: float) -> dict[str, float]:
    """Clip in place the heads with S_max^h > tau; `max_logits` is {layer_idx: [num_heads]}.

    Returns {"clipped_heads": heads rescaled, "max_logit": the largest S_max before clipping}.
    Non-finite maxima are skipped: γ = 0 would erase the head rather than bound it.
    """
    if not tau > 0:
        raise ValueError(f"QK-Clip threshold tau must be positive, got {tau}")
    clipped, worst = 0, float("-inf")
    for attn in attention_modules(model):
        logits = max_logits.get(attn.layer_idx)
        if logits is None:
            continue
        for h, s in enumerate(logits.tolist()):
            worst = max(worst, s)
            if not (math.isfinite(s) and s > tau):
                continue
            gamma = tau / s
            factor = {HALF: math.sqrt(gamma), FULL: gamma}
            for linear, rows, share in head_parts(attn, h):
                _scale_rows(linear, rows, factor[share])
            clipped += 1
    return {"clipped_heads": clipped, "max_logit": worst}


def head_parts(attn: torch.nn.Module, head: int) -> list[tuple[torch.nn.Linear, slice, str]]:
    """[(linear, rows, HALF | FULL)]: the rows that carry query head `head`'s logits, by module type."""
    if is_mla(attn):
        return mla_head_parts(attn, head)
    d = attn.head_dim
    rows = slice(head * d, (head + 1) * d)
    if getattr(attn, "num_key_value_groups", 1) > 1:  # shared key head: the query takes all of γ
        return [(attn.q_proj, rows, FULL)]
    return [(attn.q_proj, rows, HALF), (attn.k_proj, rows, HALF)]


def _scale_rows(linear: torch.nn.Module, rows: slice, factor: float) -> None:
    for tensor in output_row_tensors(linear):  # weight, bias, and a LoRA layer's B too
        here = _local_rows(tensor, rows) if isinstance(tensor, DTensor) else tensor[rows]
        if here is not None:
            here.mul_(factor)


def _local_rows(tensor: DTensor, rows: slice) -> torch.Tensor | None:
    """The part of global `rows` that this rank's shard of `tensor` holds, as a view of the
    shard (None if it holds none of them)."""
    if not is_row_sharded(tensor):
        raise NotImplementedError(f"QK-Clip scales rows of DTensors sharded as (Shard(0),) on a 1-D mesh, got {tuple(tensor.placements)}")
    mesh = tensor.device_mesh
    start, stop = shard_rows(tensor.shape[0], mesh.get_local_rank(0), mesh.size(0))
    lo, hi = max(rows.start, start), min(rows.stop, stop)
    if lo >= hi:
        return None
    return tensor.to_local()[lo - start : hi - start]
