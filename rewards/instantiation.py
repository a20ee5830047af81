"""`instantiation` (PARL r_parallel, Kimi K2.5): pay for creating sub-agents, against serial collapse.

With n = number of sub-agents the orchestrator created (`len(episode.sub_episodes)`):

    r = min(n, cap) / cap          (0 with no sub-agent, 1 from `cap` on)

On its own this is farmable by spawning useless sub-agents; it is meant to be weighted together
with `finish` (which pays only for usable results, see its docstring for when that suffices) and
annealed to 0 over training (λ1 in `r = λ1·r_parallel + λ2·r_finish + r_outcome`).

`finish` cannot counter farming from an episode with no usable sub-agent at all: r_finish is 0
both with no sub-agents and with only failed ones, so spawning m empty sub-agents there still
earns λ1·min(m, cap)/cap. `usable_only=True` (n = usable sub-agents, `rewards.finish.is_usable`)
closes that; the default counts every created sub-agent, as in the report.
"""

from __future__ import annotations

import numbers
from typing import Annotated

from pydantic import Field

from envs.base import Task, Verdict
from rewards.finish import is_usable
from rewards.registry import register_reward
from rollout.episode import Episode


@register_reward("instantiation")
def instantiation(
    episode: Episode, task: Task, verdict: Verdict, cap: Annotated[int, Field(ge=1)] = 4, usable_only: bool = False
) -> float:
    """min(n_subagents, cap) / cap (n counts only usable sub-agents with `usable_only`)."""
    if isinstance(cap, bool) or not isinstance(cap, numbers.Integral) or cap < 1:
        raise ValueError(f"cap must be an integer >= 1, got {cap!r}")
    subs = episode.sub_episodes
    n = sum(is_usable(s) for s in subs) if usable_only else len(subs)
    return min(n, cap) / cap
