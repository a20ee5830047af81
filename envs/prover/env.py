"""The `prover` environment: prove theorems about nat; a real Coq checks every proof."""

from __future__ import annotations

import numpy as np

from envs.base import Task, Verdict, strip_self_verdict
from envs.prover.checker import check
from envs.prover.generator import LEVELS, make_theorem
from envs.split import HeldoutSplit, stable_hash




class ProverEnv:
    name = "prover"
    parallel_verify = True

    def __init__(self, levels=(1, 2, 3), eval_size: int = 64, eval_seed: int = 99, heldout_fraction: float = 0.1, timeout_s: float = 10.0, memory_mb: int = 1024, allow_unisolated: bool = False):
        if not levels or any(lv not in LEVELS for lv in levels):
            raise ValueError(f"prover levels must be among {LEVELS}, got {list(levels)}")
        self.levels = tuple(levels)
        self.eval_size, self.eval_seed = eval_size, eval_seed
        self.split = HeldoutSplit(heldout_fraction)
        self.timeout_s, self.memory_mb, self.allow_unisolated = timeout_s, memory_mb, allow_unisolated

    def _draw(self, rng: np.random.Generator, heldout: bool) -> Task:
        while True:
            level = self.levels[int(rng.integers(len(self.levels)))]
            theorem, proof = make_theorem(level, rng, 0)
            # the split is by statement, not by theorem name
            if self.split.contains(theorem.split(":", 1)[1]) == heldout:
                return Task(id=f"prover/{stable_hash(theorem):016x}", env=self.name, prompt=theorem + "\nProof.\n", payload={"theorem": theorem, "oracle": proof, "level": level})

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._draw(rng, False) for _ in range(n)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        rng = np.random.default_rng(self.eval_seed)
        return [self._draw(rng, True) for _ in range(self.eval_size if n is None else n)]

    def oracle(self, task: Task) -> str:
        return task.payload["oracle"]

    def verify(self, task: Task, completion: str) -> Verdict:
        # a trailing self-verdict (<verify>...</verify>) is for the self_verification reward, not Coq
        completion = strip_self_verdict(completion)
        return check(task.payload["theorem"], completion, timeout_s=self.timeout_s, memory_mb=self.memory_mb, allow_unisolated=self.allow_unisolated)
