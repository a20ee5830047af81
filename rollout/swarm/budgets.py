"""Budgets of a PARL episode (filled from the experiment's `parl:` section).

New tokens per turn (orchestrator and sub-agents) are `SamplingParams.max_new_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollout.turn_loop import LoopBudgets


@dataclass(frozen=True)
class Budgets:
    max_stages: int = 4  # orchestrator turns; each turn is one stage
    max_subagents_per_stage: int = 8  # assignments beyond it return a failure observation unrun
    max_subagent_steps: int = 3  # sub-agent turns; a sub-agent that has not answered by then fails
    max_total_tokens: int = 256  # orchestrator transcript (prompt + turns + observations)
    max_subagent_tokens: int = 96  # one sub-agent's transcript
    tool_workers: int = 16  # tool calls run at once, per process (the driver's orchestrators, each worker's sub-agents)
    tool_timeout_s: float = 30.0  # a tool call (sub-agent) or a turn's own calls (orchestrator) running longer: `err timeout`
    lockstep_s: float = 1.0  # how long a round's episodes wait for each other's tool calls (rollout.turn_loop)

    def loop(self, max_turns: int, max_total_tokens: int) -> LoopBudgets:
        """The turn loop's budgets for one kind of agent (orchestrator or sub-agent)."""
        return LoopBudgets(max_turns=max_turns, max_total_tokens=max_total_tokens, tool_timeout_s=self.tool_timeout_s, lockstep_s=self.lockstep_s)
