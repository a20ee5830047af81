"""MuonClip's optimizer half: Muon on hidden matrices, AdamW on everything else.

Muon (Jordan et al. 2024; Moonlight, Liu et al. 2025) orthogonalises the momentum of each 2-D
weight with a quintic Newton-Schulz iteration. We use `torch.optim.Muon` with
`adjust_lr_fn="match_rms_adamw"` (update RMS matched to AdamW's, 0.2·sqrt(max(A, B)), so the
AdamW learning-rate range carries over). Embeddings, the output head, norms and biases are not
hidden linear maps and stay on AdamW, as in the Kimi K2 report. QK-Clip (`qk_clip.py`) runs
after each step.
"""

from __future__ import annotations

from typing import Any

import torch


def _is_hidden_matrix(name: str, p: torch.nn.Parameter, head_ids: set[int]) -> bool:
    return p.ndim == 2 and id(p) not in head_ids and "embed" not in name


class MuonClip:
    """Muon + AdamW as one optimizer: `step`, `zero_grad`, `state_dict`, `load_state_dict`."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], assignment: dict[str, str]):
        self.optimizers = optimizers
        self.assignment = assignment  # parameter name → "muon" | "adamw"

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(f"optimizer state has parts {sorted(state)}, expected {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])

    def params_of(self, kind: str) -> list[str]:
        return [n for n, k in self.assignment.items() if k == kind]


def build_optimizer(
    model: torch.nn.Module,
    *,
    name: str = "muonclip",
    lr: float = 0.02,
    adamw_lr: float = 3e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> MuonClip:
    """`muonclip`: Muon(lr) on hidden 2-D matrices + AdamW(adamw_lr) elsewhere; `adamw`: AdamW(adamw_lr) on all."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_ids = {id(head.weight)} if head is not None else set()
    if name == "adamw":
        assignment = {n: "adamw" for n, _ in named}
    elif name == "muonclip":
        assignment = {n: "muon" if _is_hidden_matrix(n, p, head_ids) else "adamw" for n, p in named}
    else:
        raise ValueError(f"unknown optimizer {name!r}; known: muonclip, adamw")
    opts: dict[str, torch.optim.Optimizer] = {}
    muon_params = [p for n, p in named if assignment[n] == "muon"]
    adamw_params = [p for n, p in named if assignment[n] == "adamw"]
    if muon_params:
        opts["muon"] = torch.optim.Muon(
            muon_params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, adjust_lr_fn="match_rms_adamw"
        )
    if adamw_params:
        opts["adamw"] = torch.optim.AdamW(adamw_params, lr=adamw_lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return MuonClip(opts, assignment)
