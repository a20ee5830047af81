"""The `dataset` environment: rows of a Parquet or JSONL file, graded by the math or code verifier
or by a grader the user writes.

A row is a task: its prompt column is the task text, its answer column the ground truth. The
held-out split is either a second file (`eval_path`, or HumanEval's 164 problems) or a stable
hash of each prompt (`envs.split`), as for the generated envs, so training never samples an
evaluation row. `sample` draws training rows uniformly with replacement; `eval_tasks(n)` is the
first `n` held-out rows in file order.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from envs.base import Task, Verdict, strip_self_verdict
from envs.dataset.custom_grader import load_grader
from envs.dataset.rows import HUMANEVAL, DatasetError, read_rows, required_columns
from envs.math.grade import final_answer, grade_answer, parse_ground_truth
from envs.split import HeldoutSplit, stable_hash

_GSM_FINAL = re.compile(r"^\s*####\s*(.*?)\s*$", re.M)


class DatasetEnv:
    name = "dataset"

    def __init__(
        self,
        path: str,
        *,
        prompt_key: str = "question",
        answer_key: str = "answer",
        verifier: str = "math",
        eval_path: str | None = None,
        solution_key: str | None = None,
        entry_point_key: str = "entry_point",
        level_key: str | None = None,
        levels=(1, 2, 3),
        eval_size: int = 256,
        heldout_fraction: float = 0.1,
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        allow_unisolated: bool = False,
    ):
        self.prompt_key, self.answer_key, self.verifier = prompt_key, answer_key, verifier
        self.solution_key, self.entry_point_key, self.level_key = solution_key, entry_point_key, level_key
        self.eval_size = eval_size
        self.parallel_verify = verifier != "math"  # sandboxed checks and user graders may be slow
        self._grader: Callable | None = load_grader(verifier) if verifier not in ("math", "code") else None
        self._code = None
        if verifier == "code":
            from envs.code import CodeEnv

            self._code = CodeEnv(timeout_s=timeout_s, memory_mb=memory_mb, allow_unisolated=allow_unisolated)
        columns = required_columns(prompt_key, answer_key, verifier, entry_point_key, solution_key, level_key)
        rows = self._keep_levels(read_rows(path, columns), levels, path)
        if eval_path == HUMANEVAL:
            train, heldout = rows, None
        elif eval_path is not None:
            train = rows
            heldout = self._keep_levels(read_rows(eval_path, [c for c in columns if c != solution_key]), levels, eval_path)
        else:
            split = HeldoutSplit(heldout_fraction)
            train = [r for r in rows if not split.contains(str(r[prompt_key]))]
            heldout = [r for r in rows if split.contains(str(r[prompt_key]))]
            if not train or not heldout:
                which = "training" if not train else "held-out"
                raise DatasetError(f"{path}: the hash split (heldout_fraction={heldout_fraction}) leaves no {which} rows of {len(rows)}; add rows or set env.eval_path")
        self.train_tasks = [self._task(r) for r in train]
        if heldout is None:
            from envs.code.humaneval import humaneval_tasks

            self.heldout = [Task(id=t.id, env=self.name, prompt=t.prompt, payload={**t.payload, "row": {}}) for t in humaneval_tasks()]
        else:
            self.heldout = [self._task(r) for r in heldout]

    def _keep_levels(self, rows: list[dict], levels, path: str) -> list[dict]:
        if self.level_key is None:
            return rows
        kept = [r for r in rows if int(r[self.level_key]) in set(levels)]
        if not kept:
            raise DatasetError(f"{path}: no row has a {self.level_key!r} in env.levels {list(levels)}")
        return kept

    def _task(self, row: dict[str, Any]) -> Task:
        prompt = str(row[self.prompt_key])
        payload: dict[str, Any] = {"answer": row[self.answer_key], "row": row}
        if self.level_key is not None:
            payload["level"] = int(row[self.level_key])
        if self.verifier == "code":
            payload.update(entry_point=row[self.entry_point_key], tests=[str(row[self.answer_key]) + "\ncheck(candidate)\n"])
        return Task(id=f"dataset/{stable_hash(prompt + str(row[self.answer_key])):016x}", env=self.name, prompt=prompt, payload=payload)

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [self.train_tasks[int(i)] for i in rng.integers(len(self.train_tasks), size=n)]

    def eval_tasks(self, n: int | None = None) -> list[Task]:
        return list(self.heldout[: self.eval_size if n is None else n])

    def verify(self, task: Task, completion: str) -> Verdict:
        completion = strip_self_verdict(completion)
        if self.verifier == "math":
            answer = final_answer(completion)
            passed = answer is not None and grade_answer(completion, str(task.payload["answer"]))
            reason = "correct" if passed else ("wrong answer" if answer is not None else "no final answer")
            return Verdict(passed=passed, score=float(passed), parsed=answer is not None, reason=reason)
        if self.verifier == "code":
            return self._code.verify(task, completion)
        return _user_verdict(self._grader(completion, task.payload["row"]))

    def oracle(self, task: Task) -> str:
        """The row's worked solution: `solution_key`; else a GSM8K answer's worked lines closed by
        `The answer is \\boxed{x}.` (math), or `canonical_solution` / the shipped one (code)."""
        row = task.payload["row"]
        if self.solution_key is not None:
            return str(row[self.solution_key])
        if self.verifier == "math":
            return gsm_completion(str(task.payload["answer"]))
        if self.verifier == "code":
            canonical = task.payload.get("canonical") or row.get("canonical_solution")
            if canonical:
                return str(canonical)
        raise DatasetError(f"env dataset has no solutions to fine-tune on for verifier {self.verifier!r}: set env.solution_key, or sft.enabled: false")


def gsm_completion(answer: str) -> str:
    """A GSM8K answer (`worked lines ... #### 72`, or a bare value) as the completion a policy is
    taught: the worked lines, then `The answer is \\boxed{72}.`"""
    if _GSM_FINAL.search(answer):
        from envs.dataset.word_problems import solution_to_completion  # not at import: `python -m envs.dataset.word_problems` would warn

        return solution_to_completion(answer)
    return f"The answer is \\boxed{{{parse_ground_truth(answer)}}}."


def _user_verdict(result: Any) -> Verdict:
    """A user grader's bool or float as a verdict; anything else is the grader's fault and raises
    (`verify_batch` scores it 0 and counts it)."""
    if isinstance(result, (bool, np.bool_)):
        return Verdict(passed=bool(result), score=float(result), parsed=True, reason="correct" if result else "wrong answer")
    if isinstance(result, (int, float, np.floating, np.integer)) and 0.0 <= float(result) <= 1.0:
        score = float(result)
        return Verdict(passed=score == 1.0, score=score, parsed=True, reason=f"graded {score:.3g}")
    raise TypeError(f"a dataset grader must return a bool or a float in [0, 1], got {result!r}")
