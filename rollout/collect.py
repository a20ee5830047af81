"""Turn tasks into episodes: G sampled completions per task through the rollout workers."""

from __future__ import annotations

import time

from transformers import PreTrainedTokenizerBase

from envs.base import Task
from rollout.engines.base import SamplingParams
from rollout.episode import Episode, Turn
from rollout import worker as rollout_worker


def encode_prompt(tokenizer: PreTrainedTokenizerBase, task: Task) -> list[int]:
    return tokenizer(task.prompt, add_special_tokens=False)["input_ids"]


def collect(
    workers: list,
    tasks: list[Task],
    tokenizer: PreTrainedTokenizerBase,
    params: SamplingParams,
    *,
    group_size: int,
    seed: int,
    step: int,
) -> list[Episode]:
    """Sample `group_size` completions for every task; episodes of task i have `group == i`."""
    t0 = time.perf_counter()
    prompt_ids = [encode_prompt(tokenizer, t) for t in tasks]
    flat = [(i, ids) for i, ids in enumerate(prompt_ids) for _ in range(group_size)]
    completions = rollout_worker.generate(workers, [ids for _, ids in flat], params, seed)
    elapsed = time.perf_counter() - t0
    episodes = []
    for (i, ids), c in zip(flat, completions):
        text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
        turn = Turn(role="assistant", text=text, token_ids=c.token_ids, logprobs=c.logprobs, trainable=True)
        episodes.append(
            Episode(
                task_id=tasks[i].id,
                env=tasks[i].env,
                prompt=tasks[i].prompt,
                prompt_ids=ids,
                turns=[turn],
                finish_reason=c.finish_reason,
                group=i,
                step=step,
                timings={"generate_s": elapsed / max(1, len(completions))},
            )
        )
    return episodes
