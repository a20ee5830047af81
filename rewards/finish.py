"""`finish` (PARL r_finish, Kimi K2.5): pay for sub-tasks actually completed, against spurious parallelism.

    r = (number of usable sub-agents) / (number of sub-agents created)      (0 with none)

A sub-agent (a sub-episode `sub`) is usable when all of these hold:
- `sub.finish_reason == "stop"`: it ended by itself, not by "length" (budget), "error" or "timeout";
- `sub.completion_text.strip()` is non-empty: it returned something;
- its env verdict (`sub.verdict`, a dict) does not flag it: `usable` is not False, and none of
  `error`, `timeout`, `off_task` is truthy.

Why it stops farming of `instantiation` (λ1, λ2 in `r = λ1·r_parallel + λ2·r_finish + r_outcome`):
adding m sub-agents that return nothing to an episode whose k >= 1 sub-agents are all usable
takes r_finish from 1 to k/(k+m), a loss of λ2·m/(k+m), while r_parallel gains at most
λ1·min(m, cap-k)/cap, which is <= λ1·m/(k+m) for every k, m, cap. So with λ2 >= λ1, spurious
sub-agents never raise the total of an honest decomposition. An episode that already has failed
sub-agents loses less per extra one, and with k = 0 r_finish is 0 either way and cannot help:
see `instantiation`'s `usable_only`.
"""

from __future__ import annotations

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode

UNUSABLE_FLAGS = ("error", "timeout", "off_task")


def is_usable(sub: Episode) -> bool:
    """Whether a sub-agent finished its sub-task with a usable result (criteria in the module docstring)."""
    v = sub.verdict or {}
    return (
        sub.finish_reason == "stop"
        and bool(sub.completion_text.strip())
        and v.get("usable", True) is not False
        and not any(v.get(flag) for flag in UNUSABLE_FLAGS)
    )


@register_reward("finish")
def finish(episode: Episode, task: Task, verdict: Verdict) -> float:
    """Fraction of created sub-agents that are usable; 0 with no sub-agent."""
    subs = episode.sub_episodes
    return sum(is_usable(s) for s in subs) / len(subs) if subs else 0.0
