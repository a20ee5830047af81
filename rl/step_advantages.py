"""Step 4 of the loop: advantages of a step's episodes and the groups kept for the learner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from envs.base import Verdict
from rl.algorithms import group_has_signal, nonzero_variance_groups
from rl.token_credit import token_advantages
from rollout.episode import Episode


@dataclass
class StepAdvantages:
    per_episode: list[float]  # one per episode (the token mean with token credit): Parquet, logs
    for_learner: list  # per episode: a float, or with token credit one float per completion token
    keep: torch.Tensor  # [N] bool: the episode's group carries signal (dynamic sampling)


def step_advantages(algorithm, episodes: list[Episode], verdicts: list[Verdict], advantage_fn: Callable, tokenizer) -> StepAdvantages:
    """Group-relative advantages from the episodes' scored rewards (`algorithm.advantage`), or per
    token from the verifier's character credit (`algorithm.token_credit`); with
    `algorithm.dynamic_sampling`, groups without signal are marked for dropping."""
    rewards = torch.tensor([e.reward.total for e in episodes], dtype=torch.float32)  # [N]
    groups = torch.tensor([e.group for e in episodes], dtype=torch.long)  # [N]
    if algorithm.token_credit:
        per_token = token_advantages(episodes, verdicts, tokenizer)
        signal = torch.tensor([any(x != 0 for x in a) for a in per_token], dtype=torch.bool)
        keep = group_has_signal(signal, groups) if algorithm.dynamic_sampling else torch.ones_like(signal)
        return StepAdvantages([sum(a) / max(len(a), 1) for a in per_token], per_token, keep)
    adv = advantage_fn(rewards, groups).tolist()
    keep = nonzero_variance_groups(rewards, groups) if algorithm.dynamic_sampling else torch.ones_like(rewards, dtype=torch.bool)
    return StepAdvantages(adv, adv, keep)
