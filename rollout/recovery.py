"""Rollout workers that survive their actors dying: the current weights for a restarted actor,
and shard calls retried on it.

Ray restarts a dead actor (`max_restarts`) by running its constructor again, so the new process
holds the *initial* weights. Ray's own task retry would re-run a shard on that process and
return samples of the wrong policy, silently; the workers are therefore spawned without task
retries and the driver retries instead: wait for the actor to be back, load the weights of the
current version into it (and the PARL sub-agent policy, if any), then run the same shard again
with its own seed. The step ends with the same samples as an undisturbed one.

A worker that died while idle answers the next call with its initial version (-1); that reply is
refused the same way, so a stale sample never enters a batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

log = logging.getLogger("swarmrl.rollout")

# A shard is tried this many times in all before the step fails.
MAX_ATTEMPTS = 4
# How long a restarting actor may take to answer again (model construction included).
RESTART_TIMEOUT_S = 120.0
# `ActorDiedError` for this long after the death means no restart is coming (restarts exhausted,
# or killed with no_restart); before that it can be the death itself being reported late.
DEAD_GRACE_S = 10.0

ACTOR_LOST = (RayActorError, ActorUnavailableError)


class WorkerGroup(list):
    """The rollout actors (a plain list of handles to every caller) plus what a restarted one
    needs to catch up: the object ref of the current weights and their version, and the frozen
    PARL sub-agent policy. Counts the restarts it recovered from."""

    def __init__(self, actors: list):
        super().__init__(actors)
        self.weights: Any = None  # ObjectRef of the state dict last pushed
        self.version: int = -1
        self.subagent: tuple[str | None, Any] | None = None  # (path, state ref) last given
        self.restarts = 0
        self._reported = 0
        self.placement_group: Any = None  # the run's reservation, removed with the workers

    def take_restarts(self) -> int:
        """Restarts recovered since the previous call (for a per-step metric)."""
        n, self._reported = self.restarts - self._reported, self.restarts
        return n


def recover(group: WorkerGroup, index: int) -> None:
    """Wait for actor `index` to be alive again, then give it the current weights (and sub-agent policy)."""
    actor = group[index]
    start = time.monotonic()
    while True:
        try:
            pid = ray.get(actor.pid.remote(), timeout=RESTART_TIMEOUT_S)
            break
        except ACTOR_LOST + (GetTimeoutError,) as e:
            waited = time.monotonic() - start
            if waited > RESTART_TIMEOUT_S or (isinstance(e, ActorDiedError) and waited > DEAD_GRACE_S):
                raise RuntimeError(f"rollout worker {index} did not come back after it died: {e}") from e
            time.sleep(0.2)
    calls = []
    if group.weights is not None:
        calls.append(actor.load_weights.remote(group.weights, group.version))
    if group.subagent is not None:
        calls.append(actor.load_subagent_policy.remote(*group.subagent))
    ray.get(calls)
    group.restarts += 1
    log.warning("rollout worker %d restarted (pid %d); reloaded weights v%d, retrying its shard", index, pid, group.version)


def load_everywhere(group: list, ref: Any, version: int) -> None:
    """Load the weights `ref` (version `version`) into every worker; one that dies meanwhile gets them on its restart."""
    if isinstance(group, WorkerGroup):
        group.weights, group.version = ref, version
    call_everywhere(group, lambda w: w.load_weights.remote(ref, version), again=False)  # `recover` loads them


def call_everywhere(group: list, submit: Callable[[Any], Any], again: bool = True) -> None:
    """Run `submit(actor)` (a ref) on every worker and wait; one that dies meanwhile is recovered
    (current weights loaded) and, with `again`, given the call again. For calls that are safe to
    repeat and right on a restarted actor too: sleep and wake-up (`rollout.worker.WorkerEngines`)."""
    futures = [submit(w) for w in group]
    for i, future in enumerate(futures):
        try:
            ray.get(future)
        except ACTOR_LOST:
            if not isinstance(group, WorkerGroup):
                raise
            recover(group, i)
            if again:
                ray.get(submit(group[i]))


def run_shards(group: list, shards: list[tuple[int, Callable[[Any], Any]]]) -> list[tuple[int, Any]]:
    """Run `submit(actor)` for each `(worker index, submit)`; returns `(weights version, result)` in order.

    `submit` must return a ref to `(weights version, result)` and be safe to call again (same
    inputs, same seed). A shard whose actor dies, or which answers with no weights loaded
    (version -1: an actor restarted since the last push), is retried on the restarted actor after
    `recover`. Any loaded version is accepted: with asynchronous rollouts a shard may have been
    served by an earlier push, and the rollout pipeline bounds that staleness itself. A plain
    list of actors (no `WorkerGroup`) gets no retries and no version check.
    """
    futures = [submit(group[i]) for i, submit in shards]
    if not isinstance(group, WorkerGroup):
        return list(ray.get(futures))
    out = []
    for (i, submit), future in zip(shards, futures):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                version, result = ray.get(future)
                if version >= 0 or group.version < 0:  # -1 is only right while nothing was ever pushed
                    break
                error: Exception = RuntimeError(f"worker {i} answered with no weights loaded (restarted), expected v{group.version}")
            except ACTOR_LOST as e:
                error = e
            if attempt == MAX_ATTEMPTS:
                raise RuntimeError(f"rollout shard on worker {i} failed {MAX_ATTEMPTS} times") from error
            recover(group, i)
            future = submit(group[i])
        out.append((version, result))
    return out

