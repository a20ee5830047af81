"""Built-in reward components. Each docstring gives the formula."""

from __future__ import annotations

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode


@register_reward("outcome")
def outcome(episode: Episode, task: Task, verdict: Verdict, *, partial_credit: bool = False) -> float:
    """r = 1 if the verifier passed the answer else 0; with `partial_credit`, the verifier's score in [0, 1]."""
    if partial_credit:
        return float(min(1.0, max(0.0, verdict.score)))
    return 1.0 if verdict.passed else 0.0


@register_reward("format")
def format_reward(episode: Episode, task: Task, verdict: Verdict) -> float:
    """r = 1 if the answer could be read in the env's format (right or wrong) else 0."""
    return 1.0 if verdict.parsed else 0.0
