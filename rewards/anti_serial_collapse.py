"""`anti_serial_collapse`: pay for a short critical path relative to all the work done (PARL).

With the stage structure of `rewards.critical_path`:

    r = 1 - critical_steps / total_steps          (0 when total_steps == 0)

r ∈ [0, 1): 0 for fully serial work (no stage has two sub-agents working at once), approaching 1
as the work spreads over many parallel sub-agents. With `gate_on_outcome` (default) r = 0 unless
the answer passed, so parallel nonsense earns nothing.

`usable_only` (default False, the formula as specified) counts only usable sub-agents (see
`rewards.finish.is_usable`) in both sums. Without it, a policy that answers correctly can raise r
by spawning many trivial one-step sub-agents in one stage: each adds 1 to total_steps and nothing
to critical_steps. With it, only sub-agents that returned a usable result count as parallel work.
"""

from __future__ import annotations

from envs.base import Task, Verdict
from rewards.critical_path import critical_steps, stages_of, total_steps
from rewards.finish import is_usable
from rewards.registry import register_reward
from rollout.episode import Episode


@register_reward("anti_serial_collapse")
def anti_serial_collapse(
    episode: Episode, task: Task, verdict: Verdict, gate_on_outcome: bool = True, usable_only: bool = False
) -> float:
    """1 - critical_steps / total_steps of the episode's stages; 0 if gated and the answer failed."""
    if gate_on_outcome and not verdict.passed:
        return 0.0
    stages = stages_of(episode, include=is_usable if usable_only else None)
    total = total_steps(stages)
    return 1.0 - critical_steps(stages) / total if total else 0.0
