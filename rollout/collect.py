"""Turn tasks into episodes: G sampled completions per task through the rollout workers."""

from __future__ import annotations

import time

from transformers import PreTrainedTokenizerBase

from envs.base import Task
from rollout import worker as rollout_worker
from rollout.engines.base import SamplingParams
from rollout.episode import Episode, Turn


def encode_prompt(tokenizer: PreTrainedTokenizerBase, task: Task, processor=None) -> list[int] | dict:
    """Token ids for a text task; for a task with images, a multimodal prompt (`rollout.engines.multimodal`)."""
    if task.images:
        from rollout.image_prompt import encode_image_prompt

        return encode_image_prompt(processor, task)
    return tokenizer(task.prompt, add_special_tokens=False)["input_ids"]


def prompt_ids(prompt: list[int] | dict) -> list[int]:
    return prompt["prompt_token_ids"] if isinstance(prompt, dict) else prompt


def collect(
    workers: list,
    tasks: list[Task],
    tokenizer: PreTrainedTokenizerBase,
    params: SamplingParams,
    *,
    group_size: int,
    seed: int,
    step: int,
    processor=None,
) -> list[Episode]:
    """Sample `group_size` completions for every task; episodes of task i have `group == i`.

    Tasks with images need the policy's `processor` (it writes the image placeholders)."""
    t0 = time.perf_counter()
    prompts = [encode_prompt(tokenizer, t, processor) for t in tasks]
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(group_size)]
    completions = rollout_worker.generate(workers, [p for _, p in flat], params, seed)
    elapsed = time.perf_counter() - t0
    episodes = []
    for (i, prompt), c in zip(flat, completions):
        text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
        turn = Turn(role="assistant", text=text, token_ids=c.token_ids, logprobs=c.logprobs, trainable=True)
        episodes.append(
            Episode(
                task_id=tasks[i].id,
                env=tasks[i].env,
                prompt=tasks[i].prompt,
                prompt_ids=prompt_ids(prompt),
                turns=[turn],
                finish_reason=c.finish_reason,
                group=i,
                step=step,
                policy_version=c.policy_version,
                timings={"generate_s": elapsed / max(1, len(completions))},
                images=list(tasks[i].images),
            )
        )
    return episodes
