"""`format`: the answer could be read in the env's format, right or wrong.

    r = 1 if verdict.parsed else 0

A shaping term for the start of training (the policy first learns to answer in a form the
checker reads); usually annealed to 0 so that it cannot be farmed with well-formed nonsense.
"""

from __future__ import annotations

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode


@register_reward("format")
def format_reward(episode: Episode, task: Task, verdict: Verdict) -> float:
    """1 if the verifier could parse the answer, else 0."""
    return 1.0 if verdict.parsed else 0.0
