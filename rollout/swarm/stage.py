"""One stage: every sub-agent assigned in one orchestrator turn (of every episode), run concurrently.

The specs are split into contiguous shards, one per rollout worker, and each worker runs its
shard's sub-agents to completion (`RolloutWorker.run_subagents`); the calls are issued together
and awaited together, so k sub-agents on k workers take about the time of one. A worker that
dies mid-stage is recovered like one that dies while generating (`rollout.recovery`): the driver
waits for its restart, reloads its weights and frozen sub-agent policy, and runs the same shard
again with the same seed, so the stage ends with the sub-episodes of an undisturbed one.
"""

from __future__ import annotations

from rollout.engines.base import SamplingParams
from rollout.episode import Episode
from rollout.recovery import run_shards
from rollout.swarm.budgets import Budgets
from rollout.swarm.subagent import SubagentSpec


def run_stage(workers: list, specs: list[SubagentSpec], params: SamplingParams, budgets: Budgets, env_spec: dict, seed: int) -> list[Episode]:
    """Sub-episodes of `specs`, in order."""
    if not specs:
        return []
    n = min(len(workers), len(specs))
    bounds = [round(i * len(specs) / n) for i in range(n + 1)]

    def shard(i: int):
        return lambda w: w.run_subagents.remote(specs[bounds[i] : bounds[i + 1]], params, budgets, env_spec, seed * 1000 + i)

    out = [ep for _, episodes in run_shards(workers, [(i, shard(i)) for i in range(n)]) for ep in episodes]
    if len(out) != len(specs):  # a worker without a sub-agent policy whose answer run_shards could not refuse (no weights pushed yet)
        raise RuntimeError(f"a stage of {len(specs)} sub-agents returned {len(out)}: a rollout worker has no sub-agent policy (load_subagent_policy)")
    return out
