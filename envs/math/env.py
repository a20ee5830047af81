"""The `math` environment: generated problems, an exact verifier, an oracle, a held-out split."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from envs.base import Task, Verdict, strip_self_verdict
from envs.math.answer import aligned_digit_credit, answers_equal
from envs.math.generator import FIXED_WIDTH_LEVELS, LEVELS, format_fixed_width, format_number, make_problem
from envs.split import HeldoutSplit, HeldoutStream, stable_hash


class MathEnv:
    """Arithmetic and algebra with exact answers.

    A problem is held out by a stable hash of its prompt (`envs.split`); `sample`
    rejects held-out problems, `eval_tasks` draws only them, so training never sees an
    evaluation problem.
    """

    name = "math"

    def __init__(self, levels=(1, 2, 3), eval_size: int = 256, eval_seed: int = 1234, heldout_fraction: float = 0.1, fixed_width: bool = False):
        bad = [lv for lv in levels if lv not in LEVELS]
        if bad or not levels:
            raise ValueError(f"math levels must be among {LEVELS}, got {list(levels)}")
        if fixed_width and any(lv not in FIXED_WIDTH_LEVELS for lv in levels):
            raise ValueError(f"math fixed_width applies to levels {list(FIXED_WIDTH_LEVELS)} only, got levels {list(levels)}")
        self.levels = tuple(levels)
        self.width = max(levels) if fixed_width else None  # one width for every level: one digit layout to learn
        self.eval_size = eval_size
        self.eval_seed = eval_seed
        self.split = HeldoutSplit(heldout_fraction)
        self._eval_stream = HeldoutStream(lambda rng, i: self._draw(rng, heldout=True), eval_seed)

    def is_heldout(self, prompt: str) -> bool:
        return self.split.contains(prompt)

    def _task(self, prompt: str, answer: Fraction, level: int, seed: int = 0) -> Task:
        return Task(
            id=f"math/{stable_hash(prompt):016x}",
            env=self.name,
            prompt=prompt,
            payload={"answer": format_number(answer), "level": level},
            seed=seed,
        )

    def _draw(self, rng: np.random.Generator, heldout: bool) -> Task:
        while True:
            level = self.levels[int(rng.integers(len(self.levels)))]
            prompt, answer = make_problem(level, rng, self.width)
            if self.is_heldout(prompt) == heldout:
                return self._task(prompt, answer, level)

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._draw(rng, heldout=False) for _ in range(n)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        """The first `n` held-out problems of a fixed-seed stream: i.i.d. from the same level mix
        as training (so small levels, with few distinct held-out problems, repeat)."""
        return self._eval_stream.first(self.eval_size if n is None else n)

    def verify(self, task: Task, completion: str) -> Verdict:
        completion = strip_self_verdict(completion)  # the policy's verdict on its answer is not part of it
        expected = Fraction(task.payload["answer"])
        passed, parsed = answers_equal(completion, expected)
        reason = "correct" if passed else ("wrong answer" if parsed else "unreadable answer")
        score = 1.0 if passed else 0.0
        if parsed and not passed and self.width is not None:
            # a wrong fixed-width answer scores the share of digits in place: always below 1, so
            # only the exact value earns the full reward (`outcome` uses it with partial_credit)
            score = aligned_digit_credit(completion, format_fixed_width(expected, self.width))
        return Verdict(passed=passed, score=score, parsed=parsed, reason=reason)

    def oracle(self, task: Task) -> str:
        if self.width is not None:
            return format_fixed_width(Fraction(task.payload["answer"]), self.width)
        return task.payload["answer"]

    def alphabet(self) -> str:
        return "0123456789+-*/=x; "

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        rng = np.random.default_rng(seed)
        return [t.prompt + self.oracle(t) for t in self.sample(n, rng)]
