"""The rollout the trainer uses, chosen once per run: single-turn `collect`, the tool loop for
agent envs with tools, or the PARL runtime for envs with sub-agents (which also gives the
workers their frozen sub-agent policy)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from envs.registry import env_kwargs
from rl.config import ExperimentConfig
from rl.parl_metrics import parl_metrics
from rollout.collect import collect
from rollout.episode import Episode

PARL_ENVS = ("swarm",)
TOOL_ENVS = ("tool_math",)


@dataclass(frozen=True)
class Rollout:
    run: Callable[..., list[Episode]]  # collect's signature: (workers, tasks, tokenizer, params, *, group_size, seed, step)
    metrics: Callable[[list[Episode]], dict[str, float]]  # extra per-step metrics of its episodes


def choose_rollout(cfg: ExperimentConfig, env, workers: list, model, policy_path: str | None, processor=None) -> Rollout:
    """`policy_path` is the initial checkpoint (SFT result or policy.path); without one and without
    `parl.subagent_policy`, sub-agents get `model`'s current weights. `processor`: a VLM's
    processor (images in prompts), None for a text-only policy."""
    if cfg.env.name in TOOL_ENVS:
        from rl.tool_metrics import tool_metrics
        from rollout.tool_rollout import ToolBudgets, ToolRollout

        a = cfg.agent
        budgets = ToolBudgets(
            max_turns=a.max_turns, max_total_tokens=a.max_total_tokens, tool_timeout_s=a.tool_timeout_s, lockstep_s=a.lockstep_s,
            max_tool_calls=a.max_tool_calls, tool_workers=cfg.sandbox.workers,
        )
        return Rollout(ToolRollout(env, budgets), tool_metrics)
    if cfg.env.name not in PARL_ENVS:
        return Rollout(partial(collect, processor=processor), lambda episodes: {})
    from rollout.swarm.budgets import Budgets
    from rollout.swarm.runtime import SwarmRollout
    from rollout.worker import load_subagent_policy

    path = cfg.parl.subagent_policy or policy_path
    load_subagent_policy(workers, path, None if path else model.state_dict())
    p = cfg.parl
    budgets = Budgets(
        p.max_stages, p.max_subagents_per_stage, p.max_subagent_steps, p.max_total_tokens, p.max_subagent_tokens,
        tool_workers=p.tool_workers, tool_timeout_s=cfg.agent.tool_timeout_s, lockstep_s=cfg.agent.lockstep_s,
    )
    runtime = SwarmRollout(env, {"name": cfg.env.name, "kwargs": env_kwargs(cfg)}, budgets, p.subagent_temperature)
    return Rollout(runtime, parl_metrics)
