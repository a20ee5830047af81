"""Sub-agents run to completion inside one rollout worker, with the frozen engine and the env's tools.

A batch of sub-agents advances in lock step: each round generates the next turn of every live
sub-agent in one engine call, parses it, runs its tool or takes its answer. A sub-agent ends
with `finish_reason` "stop" when it answers, "length" when it runs out of steps or tokens, and
"error" if something raised; only an answer is a usable result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from envs.swarm import syntax as S
from rollout.engines.base import SamplingParams
from rollout.episode import Episode, Turn
from rollout.swarm.budgets import Budgets
from rollout.swarm.parser import Answer, ParseError, parse_subagent_turn
from rollout.swarm.transcript import encode, observation_turn, transcript_ids


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
    live = list(range(len(specs)))
    try:
        for step in range(budgets.max_subagent_steps):
            live = [i for i in live if len(transcript_ids(episodes[i])) + params.max_new_tokens <= budgets.max_subagent_tokens]
            if not live:
                break
            completions = engine.generate([transcript_ids(episodes[i]) for i in live], params, seed * 131 + step)
            still = []
            for i, c in zip(live, completions):
                ep = episodes[i]
                text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
                ep.turns.append(Turn(role="assistant", text=text, token_ids=c.token_ids, logprobs=c.logprobs, trainable=False))
                try:
                    action = parse_subagent_turn(text)
                except ParseError as e:
                    obs = f"err {e}"
                else:
                    if isinstance(action, Answer):
                        ep.finish_reason, ep.verdict = "stop", {"usable": True, "answer": action.text}
                        continue
                    obs = call_tool(action.tool, action.arg)
                ep.turns.append(observation_turn(tokenizer, S.observation([obs]), 0))
                still.append(i)
            live = still
    except Exception as e:  # a failing sub-agent is an observation for the orchestrator, not a crash
        for i in live:
            episodes[i].finish_reason, episodes[i].verdict = "error", {"usable": False, "error": f"{type(e).__name__}: {e}"}
        live = []
    for i in live:
        episodes[i].finish_reason = "length"
    for ep in episodes:
        if not ep.finish_reason:
            ep.finish_reason = "length"
        ep.timings["wall_s"] = time.perf_counter() - t0
    return episodes
