"""The `vision` environment: rendered images, questions with exact answers, an oracle, a held-out split."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from envs.base import Task, Verdict
from envs.split import HeldoutSplit, HeldoutStream, stable_hash
from envs.vision.answer import check
from envs.vision.render import png_bytes
from envs.vision.scenes import GENERATORS, KINDS, LEVELS, render_scene


class VisionEnv:
    """Questions about one procedurally rendered 48x48 image each.

    A task is held out by a stable hash of its scene and question (`envs.split`): `sample` never
    returns a held-out task, `eval_tasks` draws only them. Digit glyphs are split as well
    (`envs.vision.digits`): held-out numbers use handwriting training never saw.
    The prompt is the question text; the image is `task.images[0]` (PNG bytes). Where the
    image goes in the model's input is the policy's business (its processor), not the env's.
    """

    name = "vision"

    def __init__(
        self,
        levels=(1, 2),
        kinds=KINDS,
        eval_size: int = 256,
        eval_seed: int = 1234,
        heldout_fraction: float = 0.1,
    ):
        bad = [lv for lv in levels if lv not in LEVELS]
        if bad or not levels:
            raise ValueError(f"vision levels must be among {LEVELS}, got {list(levels)}")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"vision kinds must be among {KINDS}, got {list(kinds)}")
        self.levels, self.kinds = tuple(levels), tuple(kinds)
        self.eval_size, self.eval_seed = eval_size, eval_seed
        self.fraction = heldout_fraction
        self.split = HeldoutSplit(heldout_fraction)
        self._eval_stream = HeldoutStream(lambda rng, i: self._draw(rng, heldout=True, kind=self.kinds[i % len(self.kinds)]), eval_seed)

    def make_task(self, kind: str, level: int, seed: int, heldout: bool) -> tuple[Task, str]:
        """The task drawn from `seed` (deterministic) and its split key."""
        rng = np.random.default_rng(seed)
        scene, question, answer = GENERATORS[kind](level, rng, heldout=heldout, fraction=self.fraction)
        key = json.dumps({"kind": kind, "scene": scene, "question": question}, sort_keys=True)
        task = Task(
            id=f"vision/{stable_hash(key):016x}",
            env=self.name,
            prompt=question,
            payload={"answer": answer, "kind": kind, "level": level, "scene": scene},
            seed=seed,
        )
        return task, key

    def _draw(self, rng: np.random.Generator, heldout: bool, kind: str | None = None) -> Task:
        while True:
            k = kind or self.kinds[int(rng.integers(len(self.kinds)))]
            level = self.levels[int(rng.integers(len(self.levels)))]
            task, key = self.make_task(k, level, int(rng.integers(2**31)), heldout)
            if self.split.contains(key) == heldout:
                # rendered only once accepted: most held-out candidates are rejected
                return replace(task, images=(png_bytes(render_scene(task.payload["scene"])),))

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self._draw(rng, heldout=False) for _ in range(n)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        """The first `n` held-out tasks of a fixed-seed stream, the kinds cycled in turn so every
        kind gets an equal share of the evaluation."""
        return self._eval_stream.first(self.eval_size if n is None else n)

    def verify(self, task: Task, completion: str) -> Verdict:
        passed, parsed = check(completion, task.payload["kind"], task.payload["answer"])
        reason = "correct" if passed else ("wrong answer" if parsed else "unreadable answer")
        return Verdict(passed=passed, score=1.0 if passed else 0.0, parsed=parsed, reason=reason)

    def oracle(self, task: Task) -> str:
        return task.payload["answer"]
