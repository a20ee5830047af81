"""PARL rewards (Kimi K2.5): pay for real parallel decomposition, not for spawning.

Episode structure: the orchestrator's assistant turns carry `Turn.stage`; each sub-agent is a
sub-episode with `Episode.stage` (the stage that spawned it) whose steps are its assistant turns.

- critical_steps(stages) = Σ_stages (orchestrator_steps + max_i subagent_steps_i): the latency
  of the episode when the sub-agents of a stage run in parallel.
- instantiation (r_parallel) = min(n, cap) / cap for n sub-agents created; 0 with none.
- finish (r_finish) = usable sub-agents / created sub-agents; 0 with none. Usable: finished by
  stopping (not by error or budget), returned a non-empty result, and not flagged unusable or
  off-task by the env (`verdict["usable"] is False`).
- anti_serial_collapse = 1 - critical_steps / total_steps (total = every orchestrator and
  sub-agent step), 0 when nothing ran; gated on a correct outcome by default, so parallel
  nonsense earns nothing. A fully serial episode scores 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode


def _steps(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {x!r}")
    return x


def critical_steps(stages: Sequence[tuple[float, Sequence[float]]]) -> float:
    """Σ over stages of (orchestrator_steps + max(subagent_steps, default 0))."""
    total = 0
    for orch, subs in stages:
        total += _steps(orch, "orchestrator_steps") + max((_steps(s, "subagent_steps") for s in subs), default=0)
    return total


def stages_of(episode: Episode) -> list[tuple[int, list[int]]]:
    """The (orchestrator_steps, [subagent_steps]) of every stage, in stage order."""
    orch: dict[int, int] = defaultdict(int)
    subs: dict[int, list[int]] = defaultdict(list)
    for t in episode.turns:
        if t.role == "assistant":
            orch[t.stage] += 1
    for sub in episode.sub_episodes:
        subs[sub.stage].append(sum(1 for t in sub.turns if t.role == "assistant"))
    return [(orch[s], subs[s]) for s in sorted(set(orch) | set(subs))]


def total_steps(episode: Episode) -> int:
    return sum(o + sum(s) for o, s in stages_of(episode))


def is_usable(sub: Episode) -> bool:
    return (
        sub.finish_reason == "stop"
        and bool(sub.completion_text.strip())
        and sub.verdict.get("usable", True) is not False
        and not sub.verdict.get("error")
    )


@register_reward("instantiation")
def instantiation(episode: Episode, task: Task, verdict: Verdict, *, cap: int = 4) -> float:
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    return min(len(episode.sub_episodes), cap) / cap


@register_reward("finish")
def finish(episode: Episode, task: Task, verdict: Verdict) -> float:
    subs = episode.sub_episodes
    return sum(is_usable(s) for s in subs) / len(subs) if subs else 0.0


@register_reward("anti_serial_collapse")
def anti_serial_collapse(episode: Episode, task: Task, verdict: Verdict, *, gate_on_outcome: bool = True) -> float:
    if gate_on_outcome and not verdict.passed:
        return 0.0
    stages = stages_of(episode)
    total = sum(o + sum(s) for o, s in stages)
    return 1.0 - critical_steps(stages) / total if total else 0.0
