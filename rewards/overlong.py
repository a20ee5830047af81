"""`overlong` (sample reward): DAPO soft overlong punishment.

With L = completion tokens, L_max = max_len and L_cache = cache_len:

    r = 0                                      L <= L_max - L_cache
    r = -(L - (L_max - L_cache)) / L_cache     L_max - L_cache < L < L_max
    r = -1                                     L >= L_max

so r ∈ [-1, 0], non-increasing in L. At L = L_max the -1 branch wins (with cache_len = 0 this is
a hard penalty on truncated answers). Reference: DAPO (Yu et al. 2025), "Overlong Reward
Shaping". `max_len` should be the rollout's `max_new_tokens`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rewards.validation import finite_count
from rollout.episode import Episode


def overlong_penalty(length: float, max_len: float, cache_len: float) -> float:
    """DAPO soft overlong punishment of a completion of `length` tokens (formula in the module docstring)."""
    n = finite_count(length, "length")
    hi = finite_count(max_len, "max_len")
    cache = finite_count(cache_len, "cache_len")
    if hi <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len!r}")
    if cache > hi:
        raise ValueError(f"cache_len ({cache_len!r}) must not exceed max_len ({max_len!r})")
    if n >= hi:
        return -1.0
    free = hi - cache
    if n <= free:
        return 0.0
    return -(n - free) / cache


@register_reward("overlong")
def overlong(
    episode: Episode,
    task: Task,
    verdict: Verdict,
    max_len: Annotated[int, Field(gt=0)] = 512,
    cache_len: Annotated[int, Field(ge=0)] = 128,
) -> float:
    """DAPO soft overlong punishment of the episode's completion tokens."""
    return overlong_penalty(len(episode.completion_ids), max_len, cache_len)
