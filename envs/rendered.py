"""An env whose task prompts are rendered for the policy (a chat template), graded as the env wrote them.

The render is a plain `str -> str` function (`policies.chat.chat_renderer`), so `envs` does not
depend on `policies`. Rendering happens on the way out (`sample`, `eval_tasks`): the env's
held-out split, ids and verifiers keep working on the raw task text, which travels in the
payload and is put back before `verify` and `oracle`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np

from envs.base import Env, Task, Verdict

RAW_PROMPT = "raw_prompt"


class RenderedPrompts:
    """`env` with every task's prompt replaced by `render(prompt)`; everything else is `env`'s."""

    def __init__(self, env: Env, render: Callable[[str], str]):
        self.env, self.render = env, render
        self.name = env.name

    def _out(self, task: Task) -> Task:
        return replace(task, prompt=self.render(task.prompt), payload={**task.payload, RAW_PROMPT: task.prompt})

    def _in(self, task: Task) -> Task:
        if RAW_PROMPT not in task.payload:
            return task
        payload = {k: v for k, v in task.payload.items() if k != RAW_PROMPT}
        return replace(task, prompt=task.payload[RAW_PROMPT], payload=payload)

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._out(t) for t in self.env.sample(n, rng)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        return [self._out(t) for t in self.env.eval_tasks(n)]

    def verify(self, task: Task, completion: str) -> Verdict:
        return self.env.verify(self._in(task), completion)

    def oracle(self, task: Task) -> str:
        return self.env.oracle(self._in(task))

    def __getattr__(self, name: str) -> Any:  # parallel_verify, eval_size, ...: the env's own
        if name == "env":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.env, name)
