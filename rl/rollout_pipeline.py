"""The trainer's source of rollout batches, synchronous or generated ahead of the learner.

`rollout.max_staleness = 0`: `next(step)` samples the step's tasks and runs the rollout there and
then, with the weights the learner just pushed (the synchronous loop, unchanged).

`rollout.max_staleness = k >= 1`: `next(step)` first makes sure the batches of steps
step..step+k are under way, each in a driver thread that runs the ordinary rollout function (the
Ray workers do the generating, so the learner's update on step t overlaps the generation of
t+1..t+k). A batch is generated with whatever weights its workers hold when its generate calls
reach them: Ray runs one actor's calls in submission order, so the weights pushed after update t
serve every generate call submitted after that push. The batch of step s is submitted at the
start of step s-k, after the weights of version s-k-1 were pushed, so it lags the learner
(version s-1 when it trains on it) by at most k. The bound is also checked on the versions the
workers report: a batch that lags more (e.g. a restarted worker that has no weights yet) is
regenerated synchronously and counted in `rollout/stale_regenerated`.

Multi-turn episodes (tool envs, PARL) take their later turns from whatever weights the workers
hold by then, so the turns of one episode can come from different versions: each policy turn
records its own (`Turn.policy_version`), its tokens carry their sampler's log-probs for the PPO
ratio, and the episode counts as old as its oldest turn for the bound above.

Tasks and sampling seeds depend only on (run seed, step), as in the synchronous loop, so the
prefetched batch of step s holds the same tasks it would have held synchronously; only the
policy that sampled them differs. Nothing in flight is checkpointed: after a resume the
pipeline starts empty and regenerates (the first batch after a resume is fresh).
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from envs.base import Task
from rl.rollout_choice import Rollout
from rl.staleness import staleness_metrics, too_stale
from rl.task_sampling import sample_tasks
from rollout.engines.base import SamplingParams
from rollout.episode import Episode


@dataclass
class RolloutBatch:
    step: int
    tasks: list[Task]
    episodes: list[Episode]
    generate_s: float  # wall time of the rollout itself
    wait_s: float = 0.0  # time the driver waited for it (less than generate_s when it was prefetched)


class RolloutPipeline:
    def __init__(
        self,
        env,
        rollout: Rollout,
        workers: list,
        tokenizer,
        params: SamplingParams,
        *,
        tasks_per_step: int,
        group_size: int,
        level_weights: dict | None,
        seed: int,
        max_staleness: int,
        last_step: int,
    ):
        self.k = max_staleness
        self.env, self.rollout, self.workers, self.params = env, rollout, workers, params
        self.tasks_per_step, self.group_size, self.level_weights, self.seed = tasks_per_step, group_size, level_weights, seed
        self.tokenizer = tokenizer
        self.last_step = last_step
        self.regenerated = 0
        self._pending: dict[int, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.k + 1, thread_name_prefix="rollout") if self.k else None
        # the prefetch threads get their own tokenizer: a fast tokenizer is not safe to share across threads
        self._thread_tokenizer = copy.deepcopy(tokenizer) if self.k else None

    def next(self, step: int) -> RolloutBatch:
        """The batch the learner trains on at `step` (learner version `step - 1`)."""
        if not self.k:
            return self._generate(step, self.tokenizer)
        for s in range(step, min(step + self.k, self.last_step) + 1):
            if s not in self._pending:
                self._pending[s] = self._pool.submit(self._generate, s, self._thread_tokenizer)
        t0 = time.perf_counter()
        batch = self._pending.pop(step).result()
        batch.wait_s = time.perf_counter() - t0
        if too_stale(batch.episodes, step - 1, self.k):
            self.regenerated += 1
            batch = self._generate(step, self.tokenizer)
            batch.wait_s = batch.generate_s
        return batch

    def metrics(self, batch: RolloutBatch) -> dict[str, float]:
        out = staleness_metrics(batch.episodes, batch.step - 1)
        if self.k:
            out.update({"rollout/stale_regenerated": float(self.regenerated), "time/rollout_wait_s": batch.wait_s})
        return out

    def settle(self) -> None:
        """Wait for every batch under way: until the next `next`, no generate call is submitted, so
        the trainer can lend the workers other weights (the evaluated average) and put the trained
        ones back without a training batch sampling from them."""
        for future in self._pending.values():
            future.result()

    def close(self) -> None:
        """Drop what is in flight (its generate calls end when the workers are stopped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()

    def _generate(self, step: int, tokenizer) -> RolloutBatch:
        t0 = time.perf_counter()
        tasks = sample_tasks(self.env, self.tasks_per_step, np.random.default_rng([self.seed, step]), self.level_weights)
        episodes = self.rollout.run(self.workers, tasks, tokenizer, self.params, group_size=self.group_size, seed=self.seed * 100_003 + step, step=step)
        return RolloutBatch(step, tasks, episodes, time.perf_counter() - t0)
