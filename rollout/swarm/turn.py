"""What one orchestrator turn does: parse it, run its own tool calls, collect its assignments.

The assignments become `SubagentSpec`s for the stage; their results are filled in later (the
runtime runs every episode's stage in one sharded call), so an observation is a list of items,
each either text or the index of a pending assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from envs.actions import Answer, Assign, ParseError, Spawn, ToolCall, parse_turn
from rollout.swarm.budgets import Budgets
from rollout.swarm.subagent import SubagentSpec


@dataclass
class TurnOutcome:
    items: list[Union[str, int]] = field(default_factory=list)  # observation items; int = index into `specs`
    specs: list[SubagentSpec] = field(default_factory=list)
    answer: str | None = None


def execute_turn(
    text: str, roles: dict[str, str], call_tool: Callable[[str, str], str], stage: int, budgets: Budgets, parent: str = "", group: int = 0
) -> TurnOutcome:
    """Run the actions of `text` in order. `roles` (name → instructions) persists across turns.

    Malformed turns, unknown sub-agents and assignments over `max_subagents_per_stage` become
    `err ...` / `TASK fail` observation items; nothing here raises.
    """
    out = TurnOutcome()
    try:
        actions = parse_turn(text)
    except ParseError as e:
        out.items.append(f"err {e}")
        return out
    for action in actions:
        if isinstance(action, Spawn):
            roles[action.name] = action.instructions
        elif isinstance(action, ToolCall):
            out.items.append(call_tool(action.tool, action.arg))
        elif isinstance(action, Assign):
            for name in action.names:
                if name not in roles:
                    out.items.append(f"err no agent {name}")
                elif len(out.specs) >= budgets.max_subagents_per_stage:
                    out.items.append(f"{action.task} fail")
                else:
                    out.items.append(len(out.specs))
                    out.specs.append(SubagentSpec(name, roles[name], action.task, stage, parent, group))
        elif isinstance(action, Answer):
            out.answer = action.text
    if not out.items and out.answer is None:
        out.items.append("ok")
    return out
