"""The action syntax of every agent episode (PARL orchestrators and sub-agents, tool envs) and its strict parser.

Every turn of an agent is one line (generation stops at the newline). A line holds one or more
actions separated by `;`, each a one-character keyword followed by its arguments:

    +NAME INSTR          spawn: define sub-agent NAME (1-3 of [a-z0-9], first a letter) with
                         instructions INSTR (free text)
    @NAME[,NAME] TASK    assign: run one instance of each named sub-agent on TASK; in envs
                         whose prompt shows a list of items (swarm), TASK may point at them
                         by 1-based index instead of copying them: `@a 3`, `@a 1-16` (one
                         instance per item of the range)
    ?QUERY               search tool
    #EXPR                calculator tool (integers, + - * and parentheses)
    $CODE                python tool: one line of Python without `;`, run in the sandbox
                         (envs that offer it; elsewhere the observation is `err no tool`)
    =ANSWER              answer; must be the last action of its line, ends the episode

Orchestrator example (one stage of three sub-agents, then the answer):

    age kob tam ril                       <- task prompt
    +a age;@a kob;@a tam;@a ril           <- turn 0: spawn + three assignments = stage 0
    >kob 42;tam 17;ril 55                 <- observation: one result per assignment
    =kob 42,tam 17,ril 55                 <- turn 1: answer

Serial collapse is the orchestrator doing the look-ups itself: `?kob`, `>age 42 pin 17`, ...

A sub-agent sees only `INSTR TASK` (`age kob`) and may use its tools and `=`, one action per
turn (it cannot spawn). Its answer text is its result. A tool env's policy (`tool_math`) takes
turns of the same form (`parse_subagent_turn`): `$437*861`, then `=376257`.

Anything else raises `ParseError`; the runtime turns it into an error observation
(`>err <reason>`) and the episode goes on. Parsing never raises anything but `ParseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from envs import syntax as S
from envs.base import Step

NAME = re.compile(r"[a-z][a-z0-9]{0,2}")
ITEM_REF = re.compile(r"(\d{1,3})(?:-(\d{1,3}))?")
MAX_ACTIONS = 16


class ParseError(ValueError):
    """A malformed turn; the message is short, it becomes an observation."""


@dataclass(frozen=True)
class Spawn:
    name: str
    instructions: str


@dataclass(frozen=True)
class Assign:
    names: tuple[str, ...]
    task: str


@dataclass(frozen=True)
class ToolCall:
    tool: str  # "search" | "calc" | "python"
    arg: str


@dataclass(frozen=True)
class Answer:
    text: str


Action = Union[Spawn, Assign, ToolCall, Answer]
TOOLS = {S.SEARCH: "search", S.CALC: "calc", S.PYTHON: "python"}


def parse_turn(line: str) -> list[Action]:
    """An orchestrator turn: one or more actions."""
    line = line.rstrip("\n")
    if "\n" in line:
        raise ParseError("one line per turn")
    if not line.strip():
        raise ParseError("empty turn")
    items = line.split(S.SEP)
    if len(items) > MAX_ACTIONS:
        raise ParseError(f"over {MAX_ACTIONS} actions")
    actions = [_action(item) for item in items]
    for a in actions[:-1]:
        if isinstance(a, Answer):
            raise ParseError("answer not last")
    return actions


def parse_subagent_turn(line: str) -> Action:
    """A sub-agent turn: exactly one tool call or answer."""
    actions = parse_turn(line)
    if len(actions) != 1:
        raise ParseError("one action per turn")
    if isinstance(actions[0], (Spawn, Assign)):
        raise ParseError("cannot spawn")
    return actions[0]


def _action(item: str) -> Action:
    if not item:
        raise ParseError("empty action")
    key, rest = item[0], item[1:]
    if key == S.ANSWER:
        if not rest.strip():
            raise ParseError("empty answer")
        return Answer(rest.strip())
    if key in TOOLS:
        if not rest.strip():
            raise ParseError("empty tool arg")
        return ToolCall(TOOLS[key], rest.strip())
    if key == S.SPAWN:
        name, _, instr = rest.partition(" ")
        if not NAME.fullmatch(name):
            raise ParseError("bad name")
        if not instr.strip():
            raise ParseError("no instructions")
        return Spawn(name, instr.strip())
    if key == S.ASSIGN:
        names, _, task = rest.partition(" ")
        parts = tuple(names.split(","))
        if not all(NAME.fullmatch(n) for n in parts):
            raise ParseError("bad name")
        if not task.strip():
            raise ParseError("no task")
        if item_refs(task.strip()) == range(0):
            raise ParseError("bad range")
        return Assign(parts, task.strip())
    raise ParseError("unknown action")


def item_refs(task: str) -> range | None:
    """The 1-based item indices an assignment's task points at (`3` → 3, `2-5` → 2..5), an empty
    range for a malformed one (`0`, `5-2`), None when the task is text, not an index."""
    m = ITEM_REF.fullmatch(task)
    if m is None:
        return None
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else first
    return range(first, last + 1) if 1 <= first <= last else range(0)


def is_tool_call(text: str) -> bool:
    """Whether a single-agent turn is a well-formed tool call (the one kind of turn whose step
    may be slow: runtimes run those beside the loop)."""
    try:
        return isinstance(parse_subagent_turn(text), ToolCall)
    except ParseError:
        return False


def tool_step(text: str, call_tool) -> Step:
    """`Env.step` of a single agent with tools: one action per turn, a tool call or an answer.
    A malformed turn (or a spawn) is the observation `err <reason>`."""
    try:
        action = parse_subagent_turn(text)
    except ParseError as e:
        return Step(observation=f"err {e}")
    if isinstance(action, Answer):
        return Step(answer=action.text)
    return Step(observation=call_tool(action.tool, action.arg))


def final_answer(transcript: str) -> str | None:
    """The text of the last answer action in `transcript` (its lines, each `;`-separated actions), or None."""
    for line in reversed(transcript.splitlines()):
        for action in reversed(line.split(S.SEP)):
            if action.startswith(S.ANSWER):
                return action[len(S.ANSWER) :]
    return None
