"""The data types every environment speaks: a `Task` to solve and the `Verdict` of a checker.

`envs` depends on neither `rollout` nor `rl`; the `Env` protocol below only names what an
environment offers, the episode it verifies is duck-typed (anything with `.completion_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Task:
    """One problem. `payload` carries what the verifier needs (answer, tests, theorem)."""

    id: str
    env: str
    prompt: str
    payload: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """A checker's judgement. `score` is partial credit in [0, 1]; `passed` means full marks.

    `parsed` is False when the answer could not be read in the env's format at all: the
    format reward looks at it, the outcome reward at `passed`/`score`.
    """

    passed: bool
    score: float
    parsed: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


# A completion may end with the policy's verdict on its own answer (`<verify>p=0.8</verify>`): the
# self_verification reward reads it, checkers grade the answer without it. Only a tag that closes
# the completion is the verdict; its body never contains another opening tag, so stripping it can
# never swallow answer text that stands between two tags.
SELF_VERDICT_TAG = re.compile(r"<verify>(.*?)</verify>", re.S | re.I)
_TRAILING_VERDICT = re.compile(r"\s*<verify>(?:(?!<verify>).)*?</verify>\s*$", re.S | re.I)


def strip_self_verdict(text: str) -> str:
    """`text` without its closing self-verdict tag (unchanged when it has none)."""
    return _TRAILING_VERDICT.sub("", text, count=1)


@dataclass(frozen=True)
class Step:
    """An agent env's reply to one action line: `answer` ends the episode; otherwise
    `observation` (a tool's result, or `err ...` for a malformed or failed action) is what the
    policy reads before its next turn."""

    observation: str = ""
    answer: str | None = None


@runtime_checkable
class Env(Protocol):
    """What the trainer asks of a task family.

    - `sample(n, rng)`: `n` training tasks; never returns a task of the held-out split.
    - `eval_tasks(n)`: the first `n` tasks of the held-out split, the same on every call.
    - `verify(task, completion)`: judge a completion text.
    - `oracle(task)`: a correct completion, for SFT bootstrap data and verifier tests.

    Agent envs (multi-turn, with tools: `tool_math`, and `swarm`'s sub-agents) also have
    `step(task, action_text) -> Step`: one turn of the action syntax (`envs.actions`), a tool
    call run or an answer taken, never raising. The turn loop (`rollout.turn_loop`) drives it.
    An env whose prompt shows a list of work items (`swarm`) has `items(task) -> list[str]`,
    what an orchestrator's index assignment (`@a 1-16`) points at.
    """

    name: str

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]: ...

    def eval_tasks(self, n: int) -> list[Task]: ...

    def verify(self, task: Task, completion: str) -> Verdict: ...

    def oracle(self, task: Task) -> str: ...
