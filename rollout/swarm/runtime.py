"""The PARL episode loop: orchestrator turns on the rollout workers, sub-agent stages in parallel.

For every task, `group_size` orchestrator episodes run side by side. At turn (= stage) t:

  1. the next turn of every live orchestrator episode is generated in one sharded call;
  2. each turn is executed (`rollout.swarm.turn`): spawns, the orchestrator's own tool calls,
     assignments; an answer ends the episode;
  3. all assignments of all episodes at this turn form the stage and run in one sharded call,
     each worker running its sub-agents to completion with the frozen policy;
  4. the results come back as one observation line per episode (`>kob 42;tam fail`).

Only orchestrator turns are trainable; observations are in the sequence but masked out of the
loss, sub-agent episodes are kept (with their stage) for the record, the critical path and the
PARL rewards. An episode that runs out of stages or tokens ends with `finish_reason` "length".
"""

from __future__ import annotations

import time

from envs.base import Task
from envs.swarm import syntax as S
from rollout import worker as rollout_worker
from rollout.engines.base import SamplingParams
from rollout.episode import Episode, Turn
from rollout.swarm.budgets import Budgets
from rollout.swarm.stage import run_stage
from rollout.swarm.subagent import result_of
from rollout.swarm.transcript import encode, line_params, observation_turn, transcript_ids
from rollout.swarm.turn import execute_turn


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
        live = list(range(len(episodes)))
        stage_s = 0.0
        for stage in range(b.max_stages):
            for i in live:
                if len(transcript_ids(episodes[i])) + params.max_new_tokens > b.max_total_tokens:
                    episodes[i].finish_reason = "length"
            live = [i for i in live if not episodes[i].finish_reason]
            if not live:
                break
            completions = rollout_worker.generate(workers, [transcript_ids(episodes[i]) for i in live], turn_params, seed * 64 + stage)
            outcomes, specs = [], []
            for i, c in zip(live, completions):
                ep = episodes[i]
                text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
                ep.turns.append(Turn(role="assistant", text=text, token_ids=c.token_ids, logprobs=c.logprobs, trainable=True, stage=stage))
                out = execute_turn(text, roles[i], self.env.call_tool, stage, b, parent=ep.task_id, group=ep.group)
                outcomes.append((out, len(specs)))
                specs.extend(out.specs)
            ts = time.perf_counter()
            subs = run_stage(workers, specs, sub_params, b, self.env_spec, seed * 64 + stage)
            stage_s += time.perf_counter() - ts
            for i, (out, offset) in zip(live, outcomes):
                ep = episodes[i]
                mine = subs[offset : offset + len(out.specs)]
                ep.sub_episodes.extend(mine)  # each carries its stage (SubagentSpec.stage)
                if out.answer is not None:
                    ep.finish_reason = "stop"
                    continue
                items = [it if isinstance(it, str) else f"{out.specs[it].task} {result_of(mine[it]) or S.FAIL}" for it in out.items]
                obs = observation_turn(tokenizer, S.observation(items), stage)
                if len(transcript_ids(ep)) + len(obs.token_ids) > b.max_total_tokens:
                    ep.finish_reason = "length"
                else:
                    ep.turns.append(obs)
            live = [i for i in live if not episodes[i].finish_reason]
        for i in live:
            episodes[i].finish_reason = "length"
        per_episode = (time.perf_counter() - t0) / max(1, len(episodes))
        for ep in episodes:
            ep.timings.update({"rollout_s": per_episode, "subagent_stage_s": stage_s / max(1, len(episodes))})
        return episodes

