"""Sub-agents run to completion inside one rollout worker, with the frozen engine and the env's tools.

A batch of sub-agents advances in lock step through the turn loop (`rollout.turn_loop`): each
round generates the next turn of every live sub-agent in one engine call, parses it, runs its
tool (in a thread pool of `budgets.tool_workers`, each call timed out at `tool_timeout_s`) or
takes its answer. A sub-agent ends with `finish_reason` "stop" when it answers, "length"
when it runs out of steps or tokens, and "error" if something raised; only an answer is a usable
result.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from envs import syntax as S
from envs.actions import is_tool_call, tool_step
from envs.base import Step
from rollout.engines.base import SamplingParams
from rollout.episode import Episode
from rollout.swarm.budgets import Budgets
from rollout.transcript import encode
from rollout.turn_loop import run_turns


@dataclass(frozen=True)
class SubagentSpec:
    """One assignment: sub-agent `name` with `instructions` on `task`, created in `stage`."""

    name: str
    instructions: str
    task: str
    stage: int
    parent: str = ""  # task id of the orchestrator episode (for the record only, never shown)
    group: int = 0


def result_of(sub: Episode) -> str | None:
    """The usable result of a finished sub-agent (its answer), else None."""
    return sub.verdict.get("answer") if sub.verdict.get("usable") else None


def run_subagents(
    engine, tokenizer, call_tool: Callable[[str, str], str], specs: list[SubagentSpec], params: SamplingParams, budgets: Budgets, seed: int
) -> list[Episode]:
    t0 = time.perf_counter()
    episodes = []
    for k, spec in enumerate(specs):
        prompt = S.subagent_prompt(spec.instructions, spec.task)
        episodes.append(
            Episode(
                task_id=f"{spec.parent}/{spec.name}{k}",
                env="swarm/subagent",
                prompt=prompt,
                prompt_ids=encode(tokenizer, prompt),
                turns=[],
                group=spec.group,
                stage=spec.stage,
                verdict={"usable": False},
            )
        )

    pool = ThreadPoolExecutor(max_workers=budgets.tool_workers, thread_name_prefix="subagent-tool")

    def act(turns: list[tuple[int, str]]) -> list[Step | Future]:
        """= `SwarmEnv.step`; tool calls run in the pool, so a stage's sub-agents wait for their
        tools side by side, not one after another."""
        out: list[Step | Future] = []
        for i, text in turns:
            if is_tool_call(text):
                out.append(pool.submit(tool_step, text, call_tool))
                continue
            step = tool_step(text, call_tool)  # an answer or a malformed turn: no tool runs
            if step.answer is not None:
                episodes[i].verdict = {"usable": True, "answer": step.answer}
            out.append(step)
        return out

    try:
        run_turns(
            episodes,
            lambda prompts, step: engine.generate(prompts, params, seed * 131 + step),
            act,
            tokenizer,
            budgets.loop(budgets.max_subagent_steps, budgets.max_subagent_tokens),
            params.max_new_tokens,
            trainable=False,
        )
    except Exception as e:  # a failing sub-agent is an observation for the orchestrator, not a crash
        for ep in episodes:
            if not ep.finish_reason:
                ep.finish_reason, ep.verdict = "error", {"usable": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for ep in episodes:
        if not ep.finish_reason:
            ep.finish_reason = "length"
        ep.timings["wall_s"] = time.perf_counter() - t0
    return episodes
