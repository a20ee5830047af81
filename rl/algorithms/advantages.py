"""Outcome-level, group-relative advantage estimators.

Every function maps `rewards: [N]` and `group_ids: [N]` (completions of one prompt share an id;
ids need not be sorted or contiguous, groups may differ in size) to advantages `[N]`, one per
completion, broadcast over its tokens by the loss.
"""

from __future__ import annotations

import torch

from rl.algorithms.registry import register_advantage


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample group size, group sum and group sum of squares, each [N]."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # [N] dense group index
    g = int(inv.max()) + 1 if inv.numel() else 0
    r = rewards.double()
    count = torch.zeros(g, dtype=torch.float64).index_add_(0, inv, torch.ones_like(r))
    total = torch.zeros(g, dtype=torch.float64).index_add_(0, inv, r)
    sq = torch.zeros(g, dtype=torch.float64).index_add_(0, inv, r * r)
    return count[inv], total[inv], sq[inv]


@register_advantage("grpo")
def grpo(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (DeepSeekMath): A_i = (r_i - mean_g) / (std_g + eps).

    std_g is the unbiased (n-1) sample standard deviation, as in TRL's GRPOTrainer
    (`torch.std`). Groups of one, or with zero variance, get A = 0.
    """
    n, s, sq = _group_stats(rewards, group_ids)  # [N] each
    mean = s / n
    var = ((sq - n * mean * mean) / (n - 1).clamp(min=1)).clamp(min=0)
    std = var.sqrt()
    adv = (rewards.double() - mean) / (std + eps)
    adv = torch.where((n > 1) & (std > 1e-12), adv, torch.zeros_like(adv))
    return adv.to(rewards.dtype)


@register_advantage("dr_grpo")
def dr_grpo(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): A_i = r_i - mean_g, no std division."""
    n, s, _ = _group_stats(rewards, group_ids)
    adv = rewards.double() - s / n
    return torch.where(n > 1, adv, torch.zeros_like(adv)).to(rewards.dtype)


@register_advantage("rloo")
def rloo(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): A_i = r_i - mean_{j≠i} r_j = n/(n-1) · (r_i - mean_g)."""
    n, s, _ = _group_stats(rewards, group_ids)
    r = rewards.double()
    adv = r - (s - r) / (n - 1).clamp(min=1)
    return torch.where(n > 1, adv, torch.zeros_like(adv)).to(rewards.dtype)
