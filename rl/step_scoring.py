"""One step's verdicts, rewards and advantages, as tensors: steps 3-4 of the loop.

    verify     each completion against its task (the env's checker; code in the sandbox)
    score      reward components weighted by their schedule at this step
    advantage  group-relative (`algorithm.advantage`), per token with `algorithm.verdict_credit`
    keep       groups whose rewards differ (`algorithm.dynamic_sampling`)

Shapes: N episodes of the step; `groups[i]` is episode i's task index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.base import Task, Verdict
from envs.registry import verify_batch
from rewards.schedule import RewardsConfig
from rewards.scoring import score_batch
from rl.algorithms import get_advantage, nonzero_variance_groups
from rl.batch import TrainBatch, build_batch
from rl.config import AlgorithmConfig
from rl.verdict_credit import verdict_token_advantages
from rollout.episode import Episode, RewardBreakdown


@dataclass
class ScoredStep:
    verdicts: list[Verdict]  # [N]
    breakdowns: list[RewardBreakdown]  # [N] each reward component and the weighted total
    rewards: torch.Tensor  # [N] total reward
    advantages: torch.Tensor  # [N] of the completion (of its answer under verdict credit)
    token_advantages: list[list[float] | None] | None  # [N] per trained token, where verdict credit splits them
    keep: torch.Tensor  # [N] bool: trained on
    metrics: dict[str, float]

    @property
    def kept(self) -> list[int]:
        return [i for i, k in enumerate(self.keep.tolist()) if k]


def score_step(
    env, tasks: list[Task], episodes: list[Episode], rewards: RewardsConfig, algorithm: AlgorithmConfig, step: int, tokenizer, verify_workers: int
) -> ScoredStep:
    """Verify, score and credit the step's episodes (`episodes[i].group` indexes `tasks`)."""
    own_tasks = [tasks[e.group] for e in episodes]
    verdicts = verify_batch(env, own_tasks, [e.completion_text for e in episodes], verify_workers)
    scored = score_batch(episodes, own_tasks, verdicts, rewards, step)
    total = torch.tensor([b.total for b in scored.breakdowns], dtype=torch.float32)  # [N]
    groups = torch.tensor([e.group for e in episodes], dtype=torch.long)  # [N]
    advantage_fn = get_advantage(algorithm.advantage)
    advantages, token_advantages = advantage_fn(total, groups), None
    if algorithm.verdict_credit:  # the answer and the verdict on it credited apart
        advantages, token_advantages = verdict_token_advantages(episodes, scored.breakdowns, groups, advantage_fn, tokenizer)
    keep = nonzero_variance_groups(total, groups) if algorithm.dynamic_sampling else torch.ones_like(total, dtype=torch.bool)
    metrics = {
        **scored.metrics,
        "reward/mean": float(total.mean()),
        "train/pass_rate": float(np.mean([v.passed for v in verdicts])),
        "train/kept_fraction": float(keep.float().mean()),
    }
    return ScoredStep(verdicts, scored.breakdowns, total, advantages, token_advantages, keep, metrics)


def training_batch(episodes: list[Episode], scored: ScoredStep, pad_token_id: int, image_processor=None) -> TrainBatch:
    """The kept episodes as the learner's padded tensors, with their advantages."""
    kept = scored.kept
    token_advantages = None if scored.token_advantages is None else [scored.token_advantages[i] for i in kept]
    return build_batch([episodes[i] for i in kept], scored.advantages[kept].tolist(), pad_token_id, image_processor, token_advantages)


def record_on_episodes(episodes: list[Episode], scored: ScoredStep) -> None:
    """Verdict, reward and advantage onto each episode, for its Parquet row."""
    for e, v, r, a in zip(episodes, scored.verdicts, scored.breakdowns, scored.advantages.tolist()):
        e.verdict = {"passed": v.passed, "score": v.score, "parsed": v.parsed, "reason": v.reason}
        e.reward = r
        e.advantage = a
