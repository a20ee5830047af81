"""Advantage estimators and policy losses: pure tensor functions registered by name."""

from rl.algorithms import advantages as _advantages  # noqa: F401  (registers estimators)
from rl.algorithms.advantages import dr_grpo, grpo, rloo
from rl.algorithms.dynamic_sampling import nonzero_variance_groups
from rl.algorithms.losses import aggregate, entropy_from_logits, kl_penalty, ppo_clip, tis_weights, token_logprobs
from rl.algorithms.registry import get_advantage, get_policy_loss, register_advantage, register_policy_loss

__all__ = [
    "aggregate",
    "dr_grpo",
    "entropy_from_logits",
    "get_advantage",
    "get_policy_loss",
    "grpo",
    "kl_penalty",
    "nonzero_variance_groups",
    "ppo_clip",
    "register_advantage",
    "register_policy_loss",
    "rloo",
    "tis_weights",
    "token_logprobs",
]
