"""One stage: every sub-agent assigned in one orchestrator turn (of every episode), run concurrently.

The specs are split into contiguous shards, one per rollout worker, and each worker runs its
shard's sub-agents to completion (`RolloutWorker.run_subagents`); the calls are issued together
and awaited together, so k sub-agents on k workers take about the time of one.
"""

from __future__ import annotations

import ray

from rollout.engines.base import SamplingParams
from rollout.episode import Episode
from rollout.swarm.budgets import Budgets
from rollout.swarm.subagent import SubagentSpec


def run_stage(workers: list, specs: list[SubagentSpec], params: SamplingParams, budgets: Budgets, env_spec: dict, seed: int) -> list[Episode]:
    """Sub-episodes of `specs`, in order."""
    if not specs:
        return []
    n = min(len(workers), len(specs))
    bounds = [round(i * len(specs) / n) for i in range(n + 1)]
    futures = [
        workers[i].run_subagents.remote(specs[bounds[i] : bounds[i + 1]], params, budgets, env_spec, seed * 1000 + i) for i in range(n)
    ]
    return [ep for shard in ray.get(futures) for ep in shard]
