"""The PARL episode loop: orchestrator turns on the rollout workers, sub-agent stages in parallel.

For every task, `group_size` orchestrator episodes run side by side in the turn loop every agent
episode runs (`rollout.turn_loop`). At turn (= stage) t:

  1. the next turn of every live orchestrator episode is generated in one sharded call;
  2. each turn is executed (`rollout.swarm.turn`): spawns, the orchestrator's own tool calls
     (started in a thread pool), assignments; an answer ends the episode;
  3. all assignments of all episodes at this turn form the stage and run in one sharded call,
     each worker running its sub-agents to completion with the frozen policy;
  4. the results come back as one observation line per episode (`>kob 42;tam fail`).

Only orchestrator turns are trainable; observations are in the sequence but masked out of the
loss, sub-agent episodes are kept (with their stage) for the record, the critical path and the
PARL rewards. An episode that runs out of stages or tokens ends with `finish_reason` "length".
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from envs import syntax as S
from envs.base import Step, Task
from rollout import worker as rollout_worker
from rollout.engines.base import SamplingParams
from rollout.episode import Episode
from rollout.swarm.budgets import Budgets
from rollout.swarm.stage import run_stage
from rollout.swarm.subagent import result_of
from rollout.swarm.turn import execute_turn
from rollout.transcript import encode, line_params
from rollout.turn_loop import run_turns


class SwarmRollout:
    """A rollout function with `rollout.collect.collect`'s signature, for envs with sub-agents.

    `env` runs the orchestrator's own tool calls in the driver; `env_spec` (`{"name", "kwargs"}`)
    rebuilds the same env inside the workers for the sub-agents' tools.
    """

    def __init__(self, env, env_spec: dict, budgets: Budgets, subagent_temperature: float | None = None):
        self.env = env
        self.env_spec = env_spec
        self.budgets = budgets
        self.subagent_temperature = subagent_temperature

    def __call__(
        self, workers: list, tasks: list[Task], tokenizer, params: SamplingParams, *, group_size: int, seed: int, step: int
    ) -> list[Episode]:
        t0 = time.perf_counter()
        b = self.budgets
        turn_params = line_params(tokenizer, params)
        sub_params = line_params(tokenizer, params, self.subagent_temperature)
        episodes = [
            Episode(task_id=t.id, env=t.env, prompt=t.prompt, prompt_ids=encode(tokenizer, t.prompt), turns=[], group=i, step=step)
            for i, t in enumerate(tasks)
            for _ in range(group_size)
        ]
        roles: list[dict[str, str]] = [{} for _ in episodes]
        items = [self.env.items(t) if hasattr(self.env, "items") else () for t in tasks]  # what `@a 1-N` points at
        stage_s = 0.0

        def generate(prompts: list[list[int]], stage: int):
            return rollout_worker.generate(workers, prompts, turn_params, seed * 64 + stage)

        pool = ThreadPoolExecutor(max_workers=b.tool_workers, thread_name_prefix="orchestrator-tool")

        def call_tool(tool: str, arg: str) -> Future:
            return pool.submit(self.env.call_tool, tool, arg)

        def act(turns: list[tuple[int, str]]) -> list[Step | Future]:
            """Execute every episode's turn, then run all their assignments as one stage; the
            orchestrators' own tool calls run in the pool meanwhile."""
            nonlocal stage_s
            stage = episodes[turns[0][0]].turns[-1].stage  # the turn index, the same for all: lock step
            outcomes, specs = [], []
            for i, text in turns:
                ep = episodes[i]
                out = execute_turn(text, roles[i], call_tool, stage, b, parent=ep.task_id, group=ep.group, items=items[ep.group])
                outcomes.append((out, len(specs)))
                specs.extend(out.specs)
            ts = time.perf_counter()
            subs = run_stage(workers, specs, sub_params, b, self.env_spec, seed * 64 + stage)
            stage_s += time.perf_counter() - ts
            results = []
            for (i, _), (out, offset) in zip(turns, outcomes):
                mine = subs[offset : offset + len(out.specs)]
                episodes[i].sub_episodes.extend(mine)  # each carries its stage (SubagentSpec.stage)
                if out.answer is not None:
                    results.append(Step(answer=out.answer))
                    continue
                obs = [f"{out.specs[it].task} {result_of(mine[it]) or S.FAIL}" if isinstance(it, int) else it for it in out.items]
                results.append(observation_when_done(obs))
            return results

        try:
            run_turns(episodes, generate, act, tokenizer, b.loop(b.max_stages, b.max_total_tokens), params.max_new_tokens, stamp_stages=True)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        per_episode = (time.perf_counter() - t0) / max(1, len(episodes))
        for ep in episodes:
            ep.timings.update({"rollout_s": per_episode, "subagent_stage_s": stage_s / max(1, len(episodes))})
        return episodes


def observation_when_done(items: list) -> Step | Future:
    """The observation of a turn whose items are texts or `Future`s of texts (its own tool calls):
    the `Step` now if every call is done, else a `Future` of it, which the turn loop waits on and
    times out like any tool call (the whole turn's observation is then `err timeout`)."""
    pending = [it for it in items if isinstance(it, Future)]

    def text(it) -> str:
        if not isinstance(it, Future):
            return it
        try:
            return it.result()
        except Exception as e:  # a tool that raised is an observation item
            return f"err {type(e).__name__}"

    if all(f.done() for f in pending):
        return Step(observation=S.SEP.join(text(it) for it in items))
    joined: Future = Future()
    joined.set_running_or_notify_cancel()  # its calls are already running: the timeout counts from now
    left, lock = [len(pending)], threading.Lock()

    def one_done(_):
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last and not joined.done():
            joined.set_result(Step(observation=S.SEP.join(text(it) for it in items)))

    for f in pending:
        f.add_done_callback(one_done)
    return joined
