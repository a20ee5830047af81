"""The `tool_math` environment: multi-digit products answered with the help of a `python` tool.

An episode is a few one-line turns in the project's action syntax (`envs.syntax`, parsed
by `envs.actions`), run by the turn loop (`rollout.tool_rollout`):

    437*861=                  <- task prompt
    $437*861                  <- turn 0: python tool call (runs in the sandbox)
    >376257                   <- observation (never trained on)
    =376257                   <- turn 1: answer, ends the episode

or, without the tool, the answer at once (`=376257`). `verify` reads the last `=` line of the
policy's own turns (observations are not part of the completion), so copying the tool's result
into the answer is the policy's job.

`tools`: the tools the env offers, `("python",)` or `()`; without them a call is answered
`err no tool` and the demonstrations never call one (the no-tool baseline of the same task).
"""

from __future__ import annotations

import numpy as np

from envs import syntax as S
from envs.actions import final_answer, tool_step
from envs.base import Step, Task, Verdict, strip_self_verdict
from envs.split import HeldoutSplit, HeldoutStream, stable_hash
from envs.tool_math.generator import LEVELS, draw
from envs.tool_math.python_tool import run_python_tool

TOOLS = ("python",)


class ToolMathEnv:
    name = "tool_math"
    parallel_verify = False  # verification is a string comparison; the tool calls are sandboxed

    def __init__(
        self,
        levels=(1, 2, 3),
        eval_size: int = 256,
        eval_seed: int = 1234,
        heldout_fraction: float = 0.1,
        tools=TOOLS,
        tool_fraction: float = 0.5,
        timeout_s: float = 2.0,
        memory_mb: int = 256,
        allow_unisolated: bool = False,
    ):
        bad = [lv for lv in levels if lv not in LEVELS]
        if bad or not levels:
            raise ValueError(f"tool_math levels must be among {LEVELS}, got {list(levels)}")
        unknown = [t for t in tools if t not in TOOLS]
        if unknown:
            raise ValueError(f"tool_math tools must be among {list(TOOLS)}, got {list(tools)}")
        self.levels = tuple(levels)
        self.tools = tuple(tools)
        self.tool_fraction = tool_fraction if self.tools else 0.0
        self.eval_size = eval_size
        self.timeout_s, self.memory_mb, self.allow_unisolated = timeout_s, memory_mb, allow_unisolated
        self.split = HeldoutSplit(heldout_fraction)
        self._eval_stream = HeldoutStream(lambda rng, i: self._draw(rng, heldout=True), eval_seed)

    # ------------------------------------------------------------------ tasks

    def _draw(self, rng: np.random.Generator, heldout: bool) -> Task:
        while True:
            level = self.levels[int(rng.integers(len(self.levels)))]
            expr, value = draw(level, rng)
            prompt = f"{expr}=\n"
            if self.split.contains(prompt) == heldout:
                return Task(
                    id=f"tool_math/{stable_hash(prompt):016x}",
                    env=self.name,
                    prompt=prompt,
                    payload={"expression": expr, "answer": str(value), "level": level},
                )

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._draw(rng, heldout=False) for _ in range(n)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        return self._eval_stream.first(self.eval_size if n is None else n)

    # ------------------------------------------------------------------ verifier

    def verify(self, task: Task, completion: str) -> Verdict:
        text = final_answer(strip_self_verdict(completion))
        if text is None:
            return Verdict(passed=False, score=0.0, parsed=False, reason="no answer")
        answer = text.strip()
        if not answer.lstrip("-").isdigit():
            return Verdict(passed=False, score=0.0, parsed=False, reason="unreadable answer")
        passed = int(answer) == int(task.payload["answer"])
        return Verdict(passed=passed, score=float(passed), parsed=True, reason="correct" if passed else "wrong answer")

    # ------------------------------------------------------------------ tools

    def call_tool(self, tool: str, arg: str) -> str:
        """The observation text of one tool call (no exception escapes)."""
        if tool not in self.tools:
            return "err no tool"
        return run_python_tool(arg, timeout_s=self.timeout_s, memory_mb=self.memory_mb, allow_unisolated=self.allow_unisolated)

    def step(self, task: Task, action_text: str) -> Step:
        """One turn: a tool call (its result is the observation) or the answer."""
        return tool_step(action_text, self.call_tool)

    # ------------------------------------------------------------------ demonstrations

    def oracle(self, task: Task) -> str:
        return S.ANSWER + task.payload["answer"] + "\n"

    def tool_transcript(self, task: Task) -> str:
        """Call the tool on the expression, then answer with its result."""
        return f"{S.PYTHON}{task.payload['expression']}\n{S.observation([task.payload['answer']])}" + self.oracle(task)

    def demonstrations(self, n: int, rng: np.random.Generator) -> list[dict]:
        """`n` SFT examples from the training split, `tool_fraction` of them with a tool call
        (observation lines untrained), the rest answering at once."""
        out = []
        for task in self.sample(n, rng):
            completion = self.tool_transcript(task) if rng.random() < self.tool_fraction else self.oracle(task)
            segments = [[line, not line.startswith(S.OBSERVATION)] for line in completion.splitlines(keepends=True)]
            out.append({"prompt": task.prompt, "completion": completion, "segments": segments})
        return out

    def alphabet(self) -> str:
        return "0123456789+-*=$>\n "
