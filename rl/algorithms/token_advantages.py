"""Token-level, group-relative advantages from per-token rewards (dense verifier credit).

Where the verifier scores each token on its own (the i-th digit of a fixed-width answer is right
or wrong whatever the other digits are), a sequence-level advantage gives a wrong digit the same
sign as the right digits around it. Normalising each token position within its group instead
gives every position its own baseline: the digit the whole group gets right carries no signal,
the digit they disagree on carries all of it.
"""

from __future__ import annotations

import torch


def position_grpo(
    rewards: torch.Tensor,  # [N, T] per-token rewards, completion tokens left-aligned
    mask: torch.Tensor,  # [N, T] 1 where completion i has a token at position t
    group_ids: torch.Tensor,  # [N] completions of one prompt share an id
    eps: float = 1e-6,
) -> torch.Tensor:  # [N, T]
    """GRPO per token position: A[i,t] = (r[i,t] - mean_g[t]) / (std_g[t] + eps).

    mean_g[t] and std_g[t] (unbiased, as `grpo`) are over the members of i's group that have a
    token at position t. Positions held by fewer than two members, or with zero variance, get 0;
    so do padding positions.
    """
    _, inv = torch.unique(group_ids, return_inverse=True)  # [N] dense group index
    g = int(inv.max()) + 1 if inv.numel() else 0
    m = mask.double()
    r = rewards.double() * m
    shape = (g, rewards.shape[1])
    count = torch.zeros(shape, dtype=torch.float64).index_add_(0, inv, m)[inv]  # [N, T]
    total = torch.zeros(shape, dtype=torch.float64).index_add_(0, inv, r)[inv]
    sq = torch.zeros(shape, dtype=torch.float64).index_add_(0, inv, r * r)[inv]
    mean = total / count.clamp(min=1)
    var = ((sq - count * mean * mean) / (count - 1).clamp(min=1)).clamp(min=0)
    std = var.sqrt()
    adv = (rewards.double() - mean) / (std + eps)
    ok = (count > 1) & (std > 1e-12) & mask.bool()
    return torch.where(ok, adv, torch.zeros_like(adv)).to(rewards.dtype)
