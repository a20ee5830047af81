"""The `code` environment: write a Python function; reward from unit tests run in the sandbox.

Completions are function bodies that continue the prompt (the signature and docstring), as in
HumanEval. `verify` runs prompt + completion and the tests in one sandboxed process through the
harness (`harness.py`); the score is the fraction of tests passed, `passed` means all of them.
"""

from __future__ import annotations

import numpy as np

from envs.base import Task, Verdict, strip_self_verdict
from envs.code.generator import LEVELS, make_task
from envs.code.harness import build_program, new_nonce, read_report
from envs.code.humaneval import humaneval_tasks
from envs.sandbox import run_command
from envs.split import HeldoutSplit, stable_hash
from envs.sandbox.runner import PYTHON


class CodeEnv:
    name = "code"
    parallel_verify = True  # each check is its own sandboxed process

    def __init__(
        self,
        levels=(1, 2, 3),
        eval_size: int = 128,
        eval_seed: int = 4321,
        heldout_fraction: float = 0.1,
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        allow_unisolated: bool = False,
    ):
        bad = [lv for lv in levels if lv not in LEVELS]
        if bad or not levels:
            raise ValueError(f"code levels must be among {sorted(LEVELS)}, got {list(levels)}")
        self.levels = tuple(levels)
        self.eval_size, self.eval_seed = eval_size, eval_seed
        self.split = HeldoutSplit(heldout_fraction)
        self.timeout_s, self.memory_mb, self.allow_unisolated = timeout_s, memory_mb, allow_unisolated

    def _draw(self, rng: np.random.Generator, heldout: bool) -> Task:
        while True:
            level = self.levels[int(rng.integers(len(self.levels)))]
            prompt, body, tests, entry = make_task(level, rng)
            # the split is by problem (prompt), not by test inputs
            if self.split.contains(prompt) == heldout:
                return Task(
                    id=f"code/{stable_hash(prompt + ''.join(tests)):016x}",
                    env=self.name,
                    prompt=prompt,
                    payload={"entry_point": entry, "tests": tests, "canonical": body, "level": level, "source": "procedural"},
                )

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._draw(rng, heldout=False) for _ in range(n)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        rng = np.random.default_rng(self.eval_seed)
        return [self._draw(rng, heldout=True) for _ in range(self.eval_size if n is None else n)]

    def humaneval(self) -> list[Task]:
        return list(humaneval_tasks())

    def oracle(self, task: Task) -> str:
        return task.payload["canonical"]

    def verify(self, task: Task, completion: str) -> Verdict:
        nonce = new_nonce()
        program = build_program(task.prompt + strip_self_verdict(completion), task.payload["tests"], task.payload["entry_point"])
        result = run_command(
            [PYTHON, "-I", "-B", "/work/main.py"],
            files={"main.py": program},
            stdin=nonce + "\n",
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            allow_unisolated=self.allow_unisolated,
        )
        kind, passed, total = read_report(result.stdout, nonce)
        details = {"sandbox_status": result.status, "wall_s": round(result.wall_s, 4)}
        if kind == "result":
            ok = passed == total and total > 0
            return Verdict(ok, passed / total if total else 0.0, True, f"{passed}/{total} tests passed", {**details, "passed": passed, "total": total})
        reason = {"syntax": "syntax error", "loaderr": "solution failed to load", "missing": f"no test report ({result.status})"}[kind]
        return Verdict(False, 0.0, kind != "syntax", reason, details)
