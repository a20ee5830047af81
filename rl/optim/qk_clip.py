"""QK-Clip (Kimi K2 report): keep attention logits bounded by rescaling W_q and W_k per head.

After an optimizer step, for each head h whose max pre-softmax logit S_max^h (measured in the
forward pass by `policies.qk_probe`) exceeds τ, with γ_h = τ / S_max^h:

- multi-head attention: W_q rows of head h and W_k rows of head h are each scaled by sqrt(γ_h),
  so the head's logits q·k scale by γ_h and its max becomes τ;
- grouped-query attention: a key head is shared by several query heads, and scaling it would
  touch heads under τ; we scale only the query rows of head h by γ_h (same logit effect).

Biases of q/k (Qwen2) scale with their rows, since q = W_q x + b_q must scale as a whole. Heads
at or under τ are left bit-identical. Optimizer state (Muon momentum) is not touched.
"""

from __future__ import annotations

import math

import torch

from policies.qk_probe import attention_modules


@torch.no_grad()
def qk_clip(model: torch.nn.Module, max_logits: dict[int, torch.Tensor], tau: float) -> dict[str, float]:
    clipped, worst = 0, 0.0
    for attn in attention_modules(model):
        logits = max_logits.get(attn.layer_idx)
        if logits is None:
            continue
        worst = max(worst, float(logits.max()))
        head_dim = attn.head_dim
        groups = getattr(attn, "num_key_value_groups", 1)
        for h, s in enumerate(logits.tolist()):
            if not s > tau:
                continue
            gamma = tau / s
            rows = slice(h * head_dim, (h + 1) * head_dim)
            if groups == 1:
                _scale_rows(attn.q_proj, rows, math.sqrt(gamma))
                _scale_rows(attn.k_proj, rows, math.sqrt(gamma))
            else:
                _scale_rows(attn.q_proj, rows, gamma)
            clipped += 1
    return {"clipped_heads": clipped, "max_logit": worst}


def _scale_rows(linear: torch.nn.Linear, rows: slice, factor: float) -> None:
    linear.weight[rows].mul_(factor)
    if linear.bias is not None:
        linear.bias[rows].mul_(factor)
