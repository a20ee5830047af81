"""DAPO dynamic sampling: groups whose rewards are all equal have zero advantage and no signal."""

from __future__ import annotations

import torch


def nonzero_variance_groups(rewards: torch.Tensor, group_ids: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """Bool [N]: True for samples whose group's rewards are not all equal."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    g = int(inv.max()) + 1 if inv.numel() else 0
    r = rewards.double()
    hi = torch.full((g,), -torch.inf, dtype=torch.float64).scatter_reduce(0, inv, r, "amax")
    lo = torch.full((g,), torch.inf, dtype=torch.float64).scatter_reduce(0, inv, r, "amin")
    return (hi - lo)[inv] > tol
