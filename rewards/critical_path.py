"""The stage structure of a PARL episode and its critical path (Kimi K2.5, PARL).

An orchestrator works in stages: in stage s it takes some steps, and the sub-agents it created
in stage s run in parallel. Read from an `Episode`:

- orchestrator steps of stage s = its assistant turns with `Turn.stage == s`;
- each sub-agent is a sub-episode with `Episode.stage == s` (the stage that created it); its
  steps are its own assistant turns (sub-agents are frozen and do not spawn, so deeper
  sub-episodes are not read);
- stages with orchestrator turns or sub-agents are kept, in increasing stage index.

Latency in steps, when the sub-agents of a stage run in parallel:

    critical_steps = Σ_stages (S_orchestrator(s) + max_i S_subagent_i(s))     (max of none = 0)
    total_steps    = Σ_stages (S_orchestrator(s) + Σ_i S_subagent_i(s))

so orchestrator steps <= critical_steps <= total_steps, with equality on the right exactly when
no stage runs two sub-agents with steps at once (fully serial work).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Sequence

from rewards.validation import finite_count
from rollout.episode import Episode

Stages = Sequence[tuple[float, Sequence[float]]]


def critical_steps(stages: Stages) -> float:
    """Σ over `stages` of (orchestrator_steps + max(subagent_steps, default 0)).

    `stages` is a sequence of `(orchestrator_steps, [subagent_steps, ...])`. Steps must be finite
    and >= 0 (ValueError otherwise). Integers in give an integer out.
    """
    total = 0
    for orch, subs in _checked(stages):
        total += orch + max(subs, default=0)
    return total


def total_steps(stages: Stages) -> float:
    """Σ over `stages` of (orchestrator_steps + Σ subagent_steps): all work, serial or not."""
    total = 0
    for orch, subs in _checked(stages):
        total += orch + sum(subs)
    return total


def assistant_steps(episode: Episode) -> int:
    return sum(1 for t in episode.turns if t.role == "assistant")


def stages_of(episode: Episode, include: Callable[[Episode], bool] | None = None) -> list[tuple[int, list[int]]]:
    """`(orchestrator_steps, [subagent_steps, ...])` of every stage of `episode`, in stage order.

    `include` selects the sub-agents that count (default: all of them).
    """
    orch: dict[int, int] = defaultdict(int)
    subs: dict[int, list[int]] = defaultdict(list)
    for t in episode.turns:
        if t.role == "assistant":
            orch[t.stage] += 1
    for sub in episode.sub_episodes:
        if include is None or include(sub):
            subs[sub.stage].append(assistant_steps(sub))
    return [(orch[s], subs[s]) for s in sorted(set(orch) | set(subs))]


def _checked(stages: Iterable) -> Iterable[tuple[float, list[float]]]:
    """Each stage as (orchestrator_steps, [subagent_steps]), every count checked finite and >= 0."""
    for k, stage in enumerate(stages):
        try:
            orch, subs = stage
            subs = list(subs)
        except (TypeError, ValueError):
            raise ValueError(f"stage {k} must be (orchestrator_steps, [subagent_steps, ...]), got {stage!r}") from None
        finite_count(orch, f"stage {k}: orchestrator_steps")
        for j, x in enumerate(subs):
            finite_count(x, f"stage {k}: subagent_steps[{j}]")
        yield orch, subs
