"""MuonClip's optimizer half: Muon on hidden matrices, AdamW on everything else.

Muon (Jordan et al. 2024; Moonlight, Liu et al. 2025), as `torch.optim.Muon` computes it for a
2-D weight W with gradient G, momentum μ, learning rate η and weight decay λ:

    B ← μ B + (1 - μ) G                      (momentum, an EMA)
    U ← (1 - μ) G + μ B   if nesterov else B
    O ← NS_k(U / ||U||_F)                     (k quintic Newton-Schulz steps ≈ the orthogonal
                                               factor of U; bfloat16 on GPU, float32 on CPU)
    W ← (1 - η λ) W - η · 0.2 · sqrt(max(A, B)) · O      (W is A × B)

The factor 0.2 · sqrt(max(A, B)) is `adjust_lr_fn="match_rms_adamw"`: it gives the update an
RMS of about 0.2 η, AdamW's typical update RMS, so η and λ live on AdamW's scale.

Muon is for the matrices of hidden linear maps (attention and MLP projections). Embeddings, the
output head (tied or not), norms, biases and anything not 2-D go to AdamW, as in the Kimi K2
report. QK-Clip (`qk_clip.py`) runs after each step.
"""

from __future__ import annotations

from typing import Any

import torch

from rl.optim.muon import BatchedMuon

OPTIMIZERS = ("muonclip", "adamw")


class MuonAdamW:
    """Several torch optimizers over disjoint parameters, driven as one. It does not clip:
    QK-Clip is the learner's step after it (`rl.optim.qk_clip`, the same call in RL and SFT),
    since it needs the forward pass's max logits, which an optimizer never sees.

    `optimizers` maps a part name ("muon", "adamw") to its optimizer; `assignment` maps every
    trainable parameter name to its part.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], assignment: dict[str, str]):
        self.optimizers = optimizers
        self.assignment = assignment

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """All parts' groups (the dicts themselves: an LR schedule may write `lr` into them)."""
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def params_of(self, part: str) -> list[str]:
        """Names of the parameters `part` ("muon" | "adamw") updates."""
        return [n for n, k in self.assignment.items() if k == part]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {part: opt.state_dict() for part, opt in self.optimizers.items()}
        # torch keys optimizer state by parameter position; the names let a load check that
        # positions mean the same parameters.
        state["param_names"] = {part: self.params_of(part) for part in self.optimizers}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parts = {k: v for k, v in state.items() if k != "param_names"}
        if set(parts) != set(self.optimizers):
            raise ValueError(f"optimizer state has parts {sorted(parts)}, expected {sorted(self.optimizers)}")
        names = state.get("param_names")
        if names is not None:
            for part in self.optimizers:
                if list(names[part]) != self.params_of(part):
                    raise ValueError(f"optimizer state for {part!r} was saved for other parameters")
        for part, opt in self.optimizers.items():
            opt.load_state_dict(parts[part])


def split_params(model: torch.nn.Module) -> dict[str, str]:
    """{name: "muon" | "adamw"} for the trainable parameters of `model` (tied ones once)."""
    adamw_only = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            adamw_only.update(id(p) for p in module.parameters(recurse=False))
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            adamw_only.update(id(p) for p in module.parameters(recurse=False))
    return {
        n: "muon" if p.ndim == 2 and id(p) not in adamw_only else "adamw"
        for n, p in model.named_parameters()
        if p.requires_grad
    }


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
    ns_dtype: str = "auto",
) -> MuonAdamW:
    """The learner's optimizer.

    `name="muonclip"`: Muon(lr, momentum, nesterov, ns_steps, match_rms_adamw) on hidden 2-D
    matrices and AdamW(adamw_lr, betas, eps) on the rest. `name="adamw"`: AdamW(adamw_lr,
    betas, eps) on every parameter, so switching optimizers keeps the AdamW settings.
    `weight_decay` is decoupled in both. `eps` is AdamW's; Muon keeps its own Newton-Schulz
    normalisation epsilon (1e-7). `ns_dtype` is the Newton-Schulz precision ("auto": bfloat16
    on CUDA, float32 on CPU; see `rl/optim/muon.py`).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    assignment = split_params(model)
    if name == "adamw":
        assignment = dict.fromkeys(assignment, "adamw")
    params = dict(model.named_parameters())
    muon = [params[n] for n, part in assignment.items() if part == "muon"]
    adamw = [params[n] for n, part in assignment.items() if part == "adamw"]
    opts: dict[str, torch.optim.Optimizer] = {}
    if muon:
        opts["muon"] = BatchedMuon(
            muon,
            ns_dtype=ns_dtype,
            lr=lr,
            weight_decay=weight_decay,  # torch's default is 0.1: always pass ours
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            adjust_lr_fn="match_rms_adamw",
        )
    if adamw:
        opts["adamw"] = torch.optim.AdamW(adamw, lr=adamw_lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return MuonAdamW(opts, assignment)
