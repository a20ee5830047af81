"""`outcome`: the verifier's judgement of the final answer.

    r = 1 if verdict.passed else 0
    r = verdict.score ∈ [0, 1]            with partial_credit=True (e.g. fraction of unit tests passed)

A non-finite `verdict.score` is a verifier bug: it raises (the scorer counts it as an error)
rather than being clamped into a plausible-looking reward.
"""

from __future__ import annotations

import math

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode


@register_reward("outcome")
def outcome(episode: Episode, task: Task, verdict: Verdict, partial_credit: bool = False) -> float:
    """1 if the verifier passed the answer else 0; with `partial_credit`, the verifier's score clipped to [0, 1]."""
    if not partial_credit:
        return 1.0 if verdict.passed else 0.0
    score = float(verdict.score)
    if not math.isfinite(score):
        raise ValueError(f"verdict.score must be finite for partial credit, got {verdict.score!r}")
    return min(1.0, max(0.0, score))
