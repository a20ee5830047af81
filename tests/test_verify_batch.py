"""verify_batch checks each distinct (task, completion) once and keeps the batch's order."""

import threading

import pytest

from envs.math import MathEnv
from envs.registry import verify_batch


class CountingMathEnv(MathEnv):
    parallel_verify = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def verify(self, task, completion):
        with self._lock:
            self.calls.append((task.id, completion))
        return super().verify(task, completion)


def two_distinct(env):
    """Two held-out problems with different answers (the eval stream may repeat a problem)."""
    tasks = env.eval_tasks()
    a = tasks[0]
    b = next(t for t in tasks if t.id != a.id and t.payload["answer"] != a.payload["answer"])
    return a, b


@pytest.mark.parametrize("workers", [1, 4])
def test_duplicates_are_checked_once_and_answered_in_order(workers):
    env = CountingMathEnv(levels=(1, 2), eval_size=16)
    a, b = two_distinct(env)
    right_a, right_b = env.oracle(a), env.oracle(b)
    tasks = [a, a, a, b, b, a, b]
    completions = [right_a, "x", right_a, right_b, right_b, "x", right_a]
    verdicts = verify_batch(env, tasks, completions, workers)

    assert sorted(env.calls) == sorted({(t.id, c) for t, c in zip(tasks, completions)})
    assert len(env.calls) == 4  # (a, right), (a, "x"), (b, right), (b, a's answer)
    expected = [env.verify(t, c).passed for t, c in zip(tasks, completions)]
    assert [v.passed for v in verdicts] == expected
    # each duplicate is its own object: a consumer that annotates one verdict leaves the others alone
    verdicts[0].details["seen"] = True
    assert "seen" not in verdicts[2].details


def test_same_text_for_different_tasks_is_checked_per_task():
    env = CountingMathEnv(levels=(1, 2), eval_size=16)
    a, b = two_distinct(env)
    verdicts = verify_batch(env, [a, b], [env.oracle(a)] * 2, 1)
    assert len(env.calls) == 2
    assert [v.passed for v in verdicts] == [True, False]
