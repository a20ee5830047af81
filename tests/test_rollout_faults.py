"""Fault tolerance of the rollout, on a real local Ray instance: a rollout worker killed while a
generate call is in flight (`ray.kill` with restart, SIGKILL of its process) or while idle is
restarted, gets the current weights, and its shard is retried with its own seed: the result is the
completions of an undisturbed call, same count, same tokens. A crashing verifier scores 0 and is
counted instead of failing the step."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from envs.base import Task
from envs.math import MathEnv
from envs.registry import verify_batch, verifier_errors
from rollout.engines.base import SamplingParams

pytestmark = pytest.mark.slow

POLICY = dict(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128, max_position_embeddings=128)
PARAMS = SamplingParams(max_new_tokens=96, temperature=1.0, top_p=1.0)
PROMPTS = [[5 + (i % 30), 7, 11 + i % 13, 3] * 4 for i in range(48)]  # 48 prompts, 16 tokens each


@pytest.fixture(scope="module")
def trained_state():
    """A state dict different from the workers' initial weights: a restarted worker that kept its
    initial weights would sample different tokens."""
    from policies.model import build_policy
    from rl.config import PolicyConfig

    model, _ = build_policy(PolicyConfig(**POLICY), seed=123)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _workers():
    from rl.config import PolicyConfig
    from rollout.worker import spawn_workers

    return spawn_workers(2, PolicyConfig(**POLICY), engine="hf", batch_size=8, cpus=1, gpus=0, torch_threads=1)


def _stop(workers):
    import ray

    for w in workers:
        ray.kill(w, no_restart=True)


def _tokens(completions):
    return [c.token_ids for c in completions]


def _generate_with_fault(workers, fault, delay):
    """`generate` in a thread; `fault()` runs `delay` seconds after it started."""
    from rollout.worker import generate

    out = {}
    thread = threading.Thread(target=lambda: out.update(result=generate(workers, PROMPTS, PARAMS, seed=42)))
    thread.start()
    time.sleep(delay)
    assert thread.is_alive(), "generate finished before the fault: make the batch slower"
    fault()
    thread.join(timeout=300)
    return out["result"]


@pytest.mark.parametrize("how", ["ray_kill", "sigkill"])
def test_worker_killed_mid_generate_is_restarted_and_its_shard_retried(ray_session, trained_state, how):
    import ray

    from rollout.worker import generate, push_weights

    workers = _workers()
    try:
        initial = _tokens(generate(workers, PROMPTS, PARAMS, seed=42))
        push_weights(workers, trained_state, version=5)
        t0 = time.perf_counter()
        reference = _tokens(generate(workers, PROMPTS, PARAMS, seed=42))
        duration = time.perf_counter() - t0
        assert reference != initial  # the test would notice a shard sampled with the initial weights
        assert workers.take_restarts() == 0

        victim = workers[1]
        pid = ray.get(victim.pid.remote())
        fault = (lambda: ray.kill(victim, no_restart=False)) if how == "ray_kill" else (lambda: os.kill(pid, signal.SIGKILL))
        got = _generate_with_fault(workers, fault, delay=duration / 3)

        assert len(got) == len(PROMPTS)  # none lost, none duplicated
        assert _tokens(got) == reference  # same samples as the undisturbed call
        assert ray.get(victim.pid.remote()) != pid  # a new process
        assert workers.restarts == 1 and workers.take_restarts() == 1 and workers.take_restarts() == 0
    finally:
        _stop(workers)


def test_worker_died_while_idle_gets_current_weights_before_sampling(ray_session, trained_state):
    import ray

    from rollout.worker import generate, push_weights

    workers = _workers()
    try:
        push_weights(workers, trained_state, version=3)
        reference = _tokens(generate(workers, PROMPTS[:8], PARAMS, seed=7))
        pid = ray.get(workers[0].pid.remote())
        os.kill(pid, signal.SIGKILL)
        time.sleep(1.0)  # let Ray restart it with the initial weights (version -1)
        assert _tokens(generate(workers, PROMPTS[:8], PARAMS, seed=7)) == reference
        assert workers.take_restarts() == 1
    finally:
        _stop(workers)


def test_worker_gone_for_good_fails_the_call_with_a_clear_error(ray_session):
    import ray

    from rollout.worker import generate

    workers = _workers()
    try:
        ray.kill(workers[0], no_restart=True)
        with pytest.raises(RuntimeError, match="did not come back"):
            generate(workers, PROMPTS[:4], PARAMS, seed=1)
    finally:
        _stop(workers)


class CrashingMathEnv(MathEnv):
    """The math env with a checker that crashes on one input, as a buggy or overloaded checker would."""

    parallel_verify = True

    def verify(self, task, completion):
        if "boom" in completion:
            raise MemoryError("checker ran out of memory")
        return super().verify(task, completion)


@pytest.mark.parametrize("workers", [1, 3])
def test_crashing_verifier_scores_zero_and_is_counted(workers):
    env = CrashingMathEnv(levels=(1,), eval_size=4)
    task: Task = env.eval_tasks(1)[0]
    right = env.oracle(task)
    verdicts = verify_batch(env, [task] * 3, [right, "boom", right], workers)
    assert [v.passed for v in verdicts] == [True, False, True]
    assert verdicts[1].score == 0.0 and "MemoryError" in verdicts[1].reason
    assert verifier_errors(verdicts) == 1
    assert verifier_errors(verdicts[:1]) == 0
