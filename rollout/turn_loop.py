"""The multi-turn loop of every agent episode: generate a turn, act on it, append the observation.

PARL orchestrators, PARL sub-agents and tool-using envs all run this loop; they differ only in
how a turn is generated (the rollout workers, or a worker's own frozen engine) and in what
acting on a turn means (`act`). A round:

  1. drop the live episodes that could not fit one more turn (`finish_reason` "length"), and
     those that have taken `max_turns` turns;
  2. generate the next turn of every episode that is not waiting on a tool, in one call;
  3. `act` on those turns, all at once. For each turn it gives the env's `Step` now, or a
     `Future` of one (a tool call running elsewhere). An answer ends the episode ("stop"); otherwise the
     observation is appended as an untrained `tool` turn (or, when it would not fit, the episode
     ends with "length");
  4. wait for the pending steps, all of them, for up to `lockstep_s` (fast tools keep every
     episode in step: one generate call per round, reproducible sampling); past it, the
     episodes whose steps are done go on, and when none is done and none could go on, the loop
     waits for the first one. A call still running `tool_timeout_s` after it started (time spent
     queued behind other calls does not count) gives the observation `err timeout` and the episode
     goes on; its late result is dropped.

So a slow tool call holds back only its own episode, and for at most its timeout.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Callable, Sequence, Union

from envs import syntax as S
from envs.base import Step
from rollout.engines.base import Completion
from rollout.episode import Episode, Turn
from rollout.transcript import observation_turn, transcript_ids

TIMEOUT_OBSERVATION = "err timeout"


@dataclass(frozen=True)
class LoopBudgets:
    max_turns: int  # assistant turns per episode
    max_total_tokens: int  # prompt + turns + observations
    tool_timeout_s: float = 30.0  # a call running this long becomes `err timeout`
    lockstep_s: float = 1.0  # how long ready episodes wait for the pending ones of their round


# act(turns) -> one Step (or Future of one) per turn; turns are (episode index, turn text)
Act = Callable[[list[tuple[int, str]]], Sequence[Union[Step, Future]]]
# generate(prompts, round) -> one completion per prompt
Generate = Callable[[list[list[int]], int], list[Completion]]
# observation text, turn index -> its untrained turn (`>text` on a line of its own)
Observe = Callable[[str, int], Turn]


def run_turns(
    episodes: list[Episode],
    generate: Generate,
    act: Act,
    tokenizer,
    budgets: LoopBudgets,
    max_new_tokens: int,
    *,
    trainable: bool = True,
    stamp_stages: bool = False,
) -> None:
    """Run every episode of `episodes` to its end, in place; each gets a `finish_reason`.
    Turns are decoded with `tokenizer`; an observation is appended as the line `>text`.

    `stamp_stages`: each assistant turn and its observation carry the episode's turn index as
    `Turn.stage` (a PARL orchestrator's turn t is its stage t). Each assistant turn carries the
    weights version that sampled it, the episode the oldest of them.
    """
    def observe(text: str, stage: int) -> Turn:
        return observation_turn(tokenizer, S.observation([text]), stage)

    t0 = time.perf_counter()
    turns_taken = [0] * len(episodes)
    pending: dict[int, list] = {}  # episode -> [its step (a Future), when it started running or None, turn index]
    live = [i for i, ep in enumerate(episodes) if not ep.finish_reason]
    round_ = 0
    while live:
        ready = []
        for i in live:
            if i in pending:
                continue
            ep = episodes[i]
            if turns_taken[i] >= budgets.max_turns or len(transcript_ids(ep)) + max_new_tokens > budgets.max_total_tokens:
                ep.finish_reason = "length"
            else:
                ready.append(i)
        if ready:
            completions = generate([transcript_ids(episodes[i]) for i in ready], round_)
            texts = []
            for i, c in zip(ready, completions):
                text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
                stage = turns_taken[i] if stamp_stages else 0
                episodes[i].turns.append(
                    Turn(role="assistant", text=text, token_ids=c.token_ids, logprobs=c.logprobs, trainable=trainable, stage=stage, policy_version=c.policy_version)
                )
                turns_taken[i] += 1
                texts.append((i, text))
            for (i, _), out in zip(texts, act(texts)):
                if isinstance(out, Future):
                    pending[i] = [out, None, turns_taken[i] - 1]
                else:
                    _apply(episodes[i], out, observe, budgets, turns_taken[i] - 1 if stamp_stages else 0)
            round_ += 1
        live = [i for i in live if not episodes[i].finish_reason]
        if pending:
            _settle(episodes, pending, observe, budgets, stamp_stages, others_ready=any(i not in pending for i in live))
            live = [i for i in live if not episodes[i].finish_reason]
        _stamp_latency(episodes, t0)
    for ep in episodes:  # an episode is as old as its oldest turn
        ep.policy_version = min((t.policy_version for t in ep.turns if t.role == "assistant"), default=ep.policy_version)


def _stamp_latency(episodes: list[Episode], t0: float) -> None:
    """`timings["latency_s"]`: seconds from the loop's start to the episode's end (its critical
    path, waits for tools and for the batch's generate calls included)."""
    now = time.perf_counter()
    for ep in episodes:
        if ep.finish_reason and "latency_s" not in ep.timings:
            ep.timings["latency_s"] = now - t0


def _settle(episodes, pending, observe, budgets: LoopBudgets, stamp_stages: bool, others_ready: bool) -> None:
    """Apply the pending steps that finish in time (see the module docstring). A call's timeout
    runs from when it starts running, not from when it was queued behind other calls."""
    _note_starts(pending)
    futures = [p[0] for p in pending.values()]
    now = time.monotonic()
    first_deadline = min((p[1] + budgets.tool_timeout_s for p in pending.values() if p[1] is not None), default=now + budgets.lockstep_s)
    done, _ = wait(futures, timeout=max(0.0, min(budgets.lockstep_s, first_deadline - now)))
    if not done and not others_ready:  # nothing else to do: wait for the first one
        wait(futures, timeout=max(0.0, first_deadline - time.monotonic()), return_when=FIRST_COMPLETED)
    _note_starts(pending)
    now = time.monotonic()
    for i in sorted(pending):
        future, started, turn = pending[i]
        stage = turn if stamp_stages else 0
        if future.done():
            del pending[i]
            try:
                out = future.result()
            except Exception as e:  # a tool that raised is an observation, never a failed step
                out = Step(observation=f"err {type(e).__name__}")
            _apply(episodes[i], out, observe, budgets, stage)
        elif started is not None and now - started >= budgets.tool_timeout_s:
            del pending[i]
            future.cancel()
            _apply(episodes[i], Step(observation=TIMEOUT_OBSERVATION), observe, budgets, stage)


def _note_starts(pending) -> None:
    now = time.monotonic()
    for p in pending.values():
        if p[1] is None and (p[0].running() or p[0].done()):
            p[1] = now


def _apply(ep: Episode, out: Step, observe: Observe, budgets: LoopBudgets, stage: int) -> None:
    if out.answer is not None:
        ep.finish_reason = "stop"
        return
    obs = observe(out.observation, stage)
    if len(transcript_ids(ep)) + len(obs.token_ids) > budgets.max_total_tokens:
        ep.finish_reason = "length"
    else:
        ep.turns.append(obs)
