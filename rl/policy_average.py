"""An exponential moving average of the policy's weights: the policy a run evaluates and keeps
when `train.eval_ema` is set.

Muon's update has a fixed size whatever the gradient's, so late in a run the trained weights keep
moving around a good point instead of settling on it: on the quickstart, two checkpoints 40
steps apart at the lowest lr measured 71.7% and 69.7% held-out pass@1 (16 samples per problem),
and their plain average 72.7%. The average follows the trained weights with a lag of about
1 / (1 - decay) steps; rollouts keep sampling from the trained weights, so the learning signal
is unchanged.
"""

from __future__ import annotations

import torch

# The weights version the workers report while they hold the average: never a learner version,
# so a rollout batch sampled from it counts as too stale (`rl.staleness`) and is not trained on.
AVERAGE_VERSION = -2


class PolicyAverage:
    """`avg ← decay · avg + (1 - decay) · θ` after every update, on every floating-point tensor
    of the model's state dict (integer buffers are copied)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            avg = self.weights[k]
            if avg.is_floating_point():
                avg.lerp_(v.detach(), 1.0 - self.decay)
            else:
                avg.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.weights

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = self.weights.keys() - state.keys()
        if missing:
            raise KeyError(f"policy average state lacks {sorted(missing)[:3]}")
        for k, v in state.items():
            self.weights[k].copy_(v)
