"""Length-shaping rewards.

- `length` (Kimi k1.5, group reward): within the completions of one task, with
  λ_i = 0.5 - (len_i - min_len) / (max_len - min_len), a correct completion scores λ_i and a
  wrong one min(0, λ_i); all lengths equal → 0 for everyone. Among correct answers the shorter
  ones gain; a wrong answer never gains from being short.
- `overlong` (DAPO soft overlong punishment, sample reward): 0 up to `max_len - cache_len`
  tokens, then linear down to -1 at `max_len`, -1 beyond.
"""

from __future__ import annotations

import math
from typing import Sequence

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode


def _check_length(x: float, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number, got {x!r}")
    if x < 0:
        raise ValueError(f"{what} must be >= 0, got {x!r}")
    return float(x)


def kimi_length_reward(lengths: Sequence[float], correct: Sequence[bool]) -> list[float]:
    """Kimi k1.5 length reward for one group of completions (see module docstring)."""
    if len(lengths) != len(correct):
        raise ValueError(f"lengths ({len(lengths)}) and correct ({len(correct)}) differ in size")
    lens = [_check_length(x, "length") for x in lengths]
    if not lens:
        return []
    lo, hi = min(lens), max(lens)
    if hi == lo:
        return [0.0] * len(lens)
    out = []
    for n, ok in zip(lens, correct):
        lam = 0.5 - (n - lo) / (hi - lo)
        out.append(lam if ok else min(0.0, lam))
    return out


def overlong_penalty(length: float, max_len: float, cache_len: float) -> float:
    """DAPO soft overlong punishment: 0, then linear to -1 over the last `cache_len` tokens, -1 beyond."""
    n, hi, cache = _check_length(length, "length"), _check_length(max_len, "max_len"), _check_length(cache_len, "cache_len")
    if cache > hi:
        raise ValueError(f"cache_len ({cache}) must not exceed max_len ({hi})")
    free = hi - cache
    if n <= free:
        return 0.0
    if n >= hi:
        return -1.0
    return -(n - free) / cache


@register_reward("length", kind="group")
def length(episodes: list[Episode], tasks: list[Task], verdicts: list[Verdict]) -> list[float]:
    return kimi_length_reward([len(e.completion_ids) for e in episodes], [v.passed for v in verdicts])


@register_reward("overlong")
def overlong(episode: Episode, task: Task, verdict: Verdict, *, max_len: int = 512, cache_len: int = 128) -> float:
    return overlong_penalty(len(episode.completion_ids), max_len, cache_len)
