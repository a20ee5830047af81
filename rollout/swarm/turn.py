"""What one orchestrator turn does: parse it, run its own tool calls, collect its assignments.

The assignments become `SubagentSpec`s for the stage; their results are filled in later (the
runtime runs every episode's stage in one sharded call), so an observation is a list of items,
each text, the index of a pending assignment, or what `call_tool` returned for a tool call
(the runtime's starts the call in a thread pool and returns its `Future`).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

from envs.actions import Answer, Assign, ParseError, Spawn, ToolCall, item_refs, parse_turn
from rollout.swarm.budgets import Budgets
from rollout.swarm.subagent import SubagentSpec


@dataclass
class TurnOutcome:
    items: list[Union[str, int, Future]] = field(default_factory=list)  # observation items; int = index into `specs`, Future = a running tool call
    specs: list[SubagentSpec] = field(default_factory=list)
    answer: str | None = None


def execute_turn(
    text: str,
    roles: dict[str, str],
    call_tool: Callable[[str, str], Union[str, Future]],
    stage: int,
    budgets: Budgets,
    parent: str = "",
    group: int = 0,
    items: Sequence[str] = (),
) -> TurnOutcome:
    """Run the actions of `text` in order. `roles` (name → instructions) persists across turns.

    `items` is the list the task prompt shows (`SwarmEnv.items`): an assignment whose task is an
    index or a range (`@a 1-16`) runs one instance per item, on the item itself, so a wide stage
    costs the orchestrator a few tokens instead of a copy of every name. Malformed turns, unknown
    sub-agents, indices past the list and assignments over `max_subagents_per_stage` become
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
            refs = item_refs(action.task) if items else None
            if refs is not None and refs.stop - 1 > len(items):
                out.items.append(f"err no item {refs.stop - 1}")
                continue
            tasks = [action.task] if refs is None else [items[k - 1] for k in refs]
            for name in action.names:
                if name not in roles:
                    out.items.append(f"err no agent {name}")
                    continue
                for task in tasks:
                    if len(out.specs) >= budgets.max_subagents_per_stage:
                        out.items.append(f"{task} fail")
                    else:
                        out.items.append(len(out.specs))
                        out.specs.append(SubagentSpec(name, roles[name], task, stage, parent, group))
        elif isinstance(action, Answer):
            out.answer = action.text
    if not out.items and out.answer is None:
        out.items.append("ok")
    return out
