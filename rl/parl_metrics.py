"""Per-step PARL metrics for MLflow: the shape of the orchestrators' work, averaged over episodes.

- `parl/critical_steps`, `parl/total_steps`: `rewards.critical_path` of each episode tree;
- `parl/subagents`: sub-agents per episode; `parl/usable_subagents`: share of them that returned
  a result (`rewards.finish.is_usable`);
- `parl/own_tool_calls`: tool calls the orchestrator made itself (serial collapse shows here);
- `parl/stages`: orchestrator turns per episode; `parl/answered`: share of episodes that answered;
- `parl/wall_s`: rollout wall-clock per episode.
"""

from __future__ import annotations

import numpy as np

from envs.actions import ParseError, ToolCall, parse_turn
from rewards.critical_path import critical_steps, stages_of, total_steps
from rewards.finish import is_usable
from rollout.episode import Episode


def own_tool_calls(episode: Episode) -> int:
    n = 0
    for t in episode.turns:
        if t.role == "assistant":
            try:
                n += sum(isinstance(a, ToolCall) for a in parse_turn(t.text))
            except ParseError:
                pass
    return n


def parl_metrics(episodes: list[Episode], prefix: str = "parl/") -> dict[str, float]:
    if not episodes:
        return {}
    subs = [s for e in episodes for s in e.sub_episodes]
    return {
        f"{prefix}critical_steps": float(np.mean([critical_steps(stages_of(e)) for e in episodes])),
        f"{prefix}total_steps": float(np.mean([total_steps(stages_of(e)) for e in episodes])),
        f"{prefix}subagents": len(subs) / len(episodes),
        f"{prefix}usable_subagents": float(np.mean([is_usable(s) for s in subs])) if subs else 0.0,
        f"{prefix}own_tool_calls": float(np.mean([own_tool_calls(e) for e in episodes])),
        f"{prefix}stages": float(np.mean([sum(t.role == "assistant" for t in e.turns) for e in episodes])),
        f"{prefix}answered": float(np.mean([e.finish_reason == "stop" for e in episodes])),
        f"{prefix}wall_s": float(np.mean([e.timings.get("rollout_s", 0.0) for e in episodes])),
    }
