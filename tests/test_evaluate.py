"""Held-out evaluation with several samples per task: pass@1 is the mean over every sample, overall
and per level, and the episodes come back task-major. First through a scripted rollout whose
answers are known (so the expected figures are exact), then through a real Ray worker."""

from __future__ import annotations

import pytest

from envs.math import MathEnv
from rl.evaluate import evaluate
from rl.rollout_choice import Rollout
from rollout.engines.base import SamplingParams
from rollout.episode import Episode, Turn

PARAMS = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0)


class ScriptedRollout:
    """Stands in for the policy only: sample j of a task answers with the oracle when
    `right(level, j)`, else with a wrong number."""

    def __init__(self, env: MathEnv, right):
        self.env, self.right = env, right

    def __call__(self, workers, tasks, tokenizer, params, *, group_size, seed, step):
        episodes = []
        for i, task in enumerate(tasks):
            for j in range(group_size):
                text = self.env.oracle(task) if self.right(task.payload["level"], j) else "-99999"
                turn = Turn(role="assistant", text=text, token_ids=[], logprobs=[], trainable=True)
                episodes.append(Episode(task_id=task.id, env=task.env, prompt=task.prompt, prompt_ids=[], turns=[turn], group=i, step=step))
        return episodes


def _scripted(env, right) -> Rollout:
    return Rollout(ScriptedRollout(env, right), lambda episodes: {})


def test_pass_at_1_is_the_mean_over_all_samples_and_levels():
    env = MathEnv(levels=(1, 2), eval_size=40)
    tasks = env.eval_tasks()
    # level 1: 3 of 4 samples right; level 2: 1 of 4
    right = lambda level, j: j < 3 if level == 1 else j == 0
    metrics, episodes = evaluate([], env, tasks, None, PARAMS, seed=0, rollout=_scripted(env, right), samples=4)

    assert len(episodes) == 4 * len(tasks)
    for i, task in enumerate(tasks):
        assert {e.task_id for e in episodes[4 * i : 4 * i + 4]} == {task.id}
    n1 = sum(t.payload["level"] == 1 for t in tasks)
    assert 0 < n1 < len(tasks)
    assert metrics["eval/pass_at_1_level1"] == pytest.approx(0.75)
    assert metrics["eval/pass_at_1_level2"] == pytest.approx(0.25)
    assert metrics["eval/pass_at_1"] == pytest.approx((0.75 * n1 + 0.25 * (len(tasks) - n1)) / len(tasks))
    assert [e.verdict["passed"] for e in episodes[:4]] == [right(tasks[0].payload["level"], j) for j in range(4)]


def test_one_sample_is_the_default_and_samples_below_one_are_refused():
    env = MathEnv(levels=(1,), eval_size=8)
    tasks = env.eval_tasks()
    metrics, episodes = evaluate([], env, tasks, None, PARAMS, seed=0, rollout=_scripted(env, lambda level, j: True))
    assert len(episodes) == len(tasks) and metrics["eval/pass_at_1"] == 1.0
    with pytest.raises(ValueError, match="samples must be >= 1"):
        evaluate([], env, tasks, None, PARAMS, seed=0, rollout=_scripted(env, lambda level, j: True), samples=0)


@pytest.mark.slow
def test_samples_through_a_real_worker_are_task_major_and_distinct(ray_session):
    import ray

    from policies.tokenizer import load_tokenizer
    from rl.config import PolicyConfig
    from rollout.worker import spawn_workers

    env = MathEnv(levels=(1, 2, 3), eval_size=6)
    tasks = env.eval_tasks()
    policy = PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128, max_position_embeddings=64)
    tokenizer = load_tokenizer()
    workers = spawn_workers(1, policy, engine="hf", batch_size=32, cpus=1, gpus=0, torch_threads=1)
    try:
        metrics, episodes = evaluate(workers, env, tasks, tokenizer, PARAMS, seed=3, samples=5)
    finally:
        for w in workers:
            ray.kill(w, no_restart=True)
    assert len(episodes) == 30
    assert [e.task_id for e in episodes] == [t.id for t in tasks for _ in range(5)]
    assert [e.group for e in episodes] == [i for i in range(6) for _ in range(5)]
    # the samples of one task are drawn independently: a random policy does not repeat itself 5 times
    assert any(len({e.completion_text for e in episodes[5 * i : 5 * i + 5]}) > 1 for i in range(6))
    passed = [float(e.verdict["passed"]) for e in episodes]
    assert metrics["eval/pass_at_1"] == pytest.approx(sum(passed) / 30)
