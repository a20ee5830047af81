"""QK-Clip (Kimi K2 report): keep attention logits bounded by rescaling W_q and W_k per head.

After an optimizer step, for each head h whose max pre-softmax logit S_max^h (measured in the
step's forward passes by `policies.qk_probe`) exceeds τ, with γ_h = τ / S_max^h:

- multi-head attention (num_kv_heads == num_heads): the rows h·d:(h+1)·d of W_q and of W_k
  (d = head_dim) are each scaled by sqrt(γ_h). RoPE is a rotation, so q_h and k_h scale by
  sqrt(γ_h), every logit of head h scales by γ_h and its max becomes exactly τ.
- grouped-query attention: key head g is shared by the query heads g·G ... (g+1)·G - 1. Scaling
  its W_k rows would also shrink the logits of sibling heads that are under τ, which QK-Clip
  must leave alone, so only query head h's W_q rows are scaled, by γ_h (same effect on head h).

q/k biases (Qwen2) scale with their rows: q = W_q x + b_q scales as a whole only if both do.
Heads at or under τ are left bit-identical. Optimizer state (Muon momentum) is not touched,
as in the report: only the weights are rescaled.
"""

from __future__ import annotations

import math

import torch

from policies.qk_probe import attention_modules


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
        d = attn.head_dim
        shared_keys = getattr(attn, "num_key_value_groups", 1) > 1
        for h, s in enumerate(logits.tolist()):
            worst = max(worst, s)
            if not (math.isfinite(s) and s > tau):
                continue
            gamma = tau / s
            rows = slice(h * d, (h + 1) * d)
            if shared_keys:
                _scale_rows(attn.q_proj, rows, gamma)
            else:
                _scale_rows(attn.q_proj, rows, math.sqrt(gamma))
                _scale_rows(attn.k_proj, rows, math.sqrt(gamma))
            clipped += 1
    return {"clipped_heads": clipped, "max_logit": worst}


def _scale_rows(linear: torch.nn.Linear, rows: slice, factor: float) -> None:
    linear.weight[rows].mul_(factor)
    if linear.bias is not None:
        linear.bias[rows].mul_(factor)
