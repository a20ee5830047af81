"""Per-step metrics of tool-using episodes for MLflow, averaged over episodes.

- `tools/calls`: tool calls per episode (the policy's `$...` lines, run or refused);
- `tools/errors`: observations that are errors (`err ...`: a failed program, a timeout, a
  malformed line, a call over budget) per episode;
- `tools/turns`: policy turns per episode; `tools/answered`: share of episodes that answered.
"""

from __future__ import annotations

import numpy as np

from envs import syntax as S
from envs.actions import ParseError, ToolCall, parse_subagent_turn
from rollout.episode import Episode


def tool_calls(episode: Episode) -> int:
    n = 0
    for t in episode.turns:
        if t.role == "assistant":
            try:
                n += isinstance(parse_subagent_turn(t.text), ToolCall)
            except ParseError:
                pass
    return n


def tool_errors(episode: Episode) -> int:
    return sum(t.role == "tool" and t.text.startswith(S.OBSERVATION + "err") for t in episode.turns)


def tool_metrics(episodes: list[Episode], prefix: str = "tools/") -> dict[str, float]:
    if not episodes:
        return {}
    return {
        f"{prefix}calls": float(np.mean([tool_calls(e) for e in episodes])),
        f"{prefix}errors": float(np.mean([tool_errors(e) for e in episodes])),
        f"{prefix}turns": float(np.mean([sum(t.role == "assistant" for t in e.turns) for e in episodes])),
        f"{prefix}answered": float(np.mean([e.finish_reason == "stop" for e in episodes])),
    }
