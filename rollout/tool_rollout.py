"""Tool-using episodes: a policy alone with an env's tools, through the turn loop.

For every task, `group_size` episodes run side by side in `rollout.turn_loop`: each round
generates the next line of every episode that is not waiting on a tool (one sharded call to the
rollout workers), then hands each line to the env (`Env.step`). Tool calls run in a thread pool
beside the loop (the `python` tool is a sandboxed process), so one slow call holds back only its
episode; an identical call of the same task in the same rollout (a sharpened group repeats
itself) runs once. Per-episode budgets: `max_turns` lines, `max_tool_calls` calls (later calls
are answered `err no tool calls left`), `max_total_tokens` of transcript.

Only the policy's lines are trained on; observations are `tool` turns, masked out of the loss.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from envs.actions import is_tool_call
from envs.base import Step, Task
from rollout import worker as rollout_worker
from rollout.engines.base import SamplingParams
from rollout.episode import Episode
from rollout.transcript import encode, line_params
from rollout.turn_loop import Generate, LoopBudgets, run_turns

NO_CALLS_LEFT = "err no tool calls left"


@dataclass(frozen=True)
class ToolBudgets(LoopBudgets):
    """The loop's budgets plus the tool calls'."""

    max_turns: int = 3
    max_total_tokens: int = 128
    tool_timeout_s: float = 10.0
    max_tool_calls: int = 2
    tool_workers: int = 4  # tool calls run at once


class ToolRollout:
    """A rollout function with `rollout.collect.collect`'s signature, for agent envs with tools."""

    def __init__(self, env, budgets: ToolBudgets):
        self.env = env
        self.budgets = budgets

    def __call__(
        self, workers: list, tasks: list[Task], tokenizer, params: SamplingParams, *, group_size: int, seed: int, step: int
    ) -> list[Episode]:
        t0 = time.perf_counter()
        turn_params = line_params(tokenizer, params)
        owner = [t for t in tasks for _ in range(group_size)]
        episodes = [
            Episode(task_id=t.id, env=t.env, prompt=t.prompt, prompt_ids=encode(tokenizer, t.prompt), turns=[], group=i, step=step)
            for i, t in enumerate(tasks)
            for _ in range(group_size)
        ]

        def generate(prompts: list[list[int]], round_: int):
            return rollout_worker.generate(workers, prompts, turn_params, seed * 64 + round_)

        play(self.env, episodes, owner, generate, tokenizer, params.max_new_tokens, self.budgets)
        per_episode = (time.perf_counter() - t0) / max(1, len(episodes))
        for ep in episodes:
            ep.timings.update({"rollout_s": per_episode})
        return episodes


def play(env, episodes: list[Episode], owner: list[Task], generate: Generate, tokenizer, max_new_tokens: int, budgets: ToolBudgets) -> None:
    """Run `episodes` (episode i works on task `owner[i]`) to their end with `env.step`, in place;
    `generate(prompts, round)` samples the next line of each prompt."""
    b = budgets
    calls = [0] * len(episodes)
    running: dict[tuple[str, str], Future] = {}
    pool = ThreadPoolExecutor(max_workers=b.tool_workers, thread_name_prefix="tool")

    def act(turns: list[tuple[int, str]]) -> list[Step | Future]:
        out: list[Step | Future] = []
        for i, text in turns:
            task = owner[i]
            if not is_tool_call(text):  # an answer or a malformed line: the env's reply needs no tool
                out.append(env.step(task, text))
            elif calls[i] >= b.max_tool_calls:
                out.append(Step(observation=NO_CALLS_LEFT))
            else:
                calls[i] += 1
                key = (task.id, text)
                if key not in running:
                    running[key] = pool.submit(env.step, task, text)
                out.append(running[key])
        return out

    try:
        run_turns(
            episodes,
            generate,
            act,
            tokenizer,
            b,
            max_new_tokens,
            stamp_stages=True,
        )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
