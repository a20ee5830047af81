"""`length` (group reward): the Kimi k1.5 length penalty.

Within the G completions of one task, with len_i the number of completion tokens,

    λ_i = 0.5 - (len_i - min_len) / (max_len - min_len)
    r_i = λ_i              if completion i is correct
    r_i = min(0, λ_i)      otherwise
    r_i = 0 for all        when max_len == min_len

so r ∈ [-0.5, 0.5]; among correct answers shorter ones gain, and a wrong answer never gains from
being short (only loses from being long). Reference: Kimi k1.5 technical report (2025), "Length Penalty".
"""

from __future__ import annotations

from typing import Sequence

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rewards.validation import finite_count
from rollout.episode import Episode


def kimi_length_reward(lengths: Sequence[float], correct: Sequence[bool]) -> list[float]:
    """Kimi k1.5 length reward of one group: `lengths[i]` tokens, `correct[i]` the outcome."""
    if len(lengths) != len(correct):
        raise ValueError(f"lengths ({len(lengths)}) and correct ({len(correct)}) differ in size")
    lens = [finite_count(x, f"lengths[{i}]") for i, x in enumerate(lengths)]
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


@register_reward("length", kind="group")
def length(episodes: list[Episode], tasks: list[Task], verdicts: list[Verdict]) -> list[float]:
    """Kimi k1.5 length reward over the completions of one task; length = completion tokens."""
    return kimi_length_reward([len(e.completion_ids) for e in episodes], [v.passed for v in verdicts])
