"""Distinct prompts of a batch: the G completions of a rollout step share each prompt, and the
sampler and the learner compute a shared prompt once."""

from __future__ import annotations

import torch


def distinct_prompts(prompts: list[list[int]]) -> tuple[list[list[int]], torch.Tensor]:
    """The distinct prompts in first-seen order, and for each input row the index of its prompt
    among them (long [len(prompts)])."""
    index: dict[tuple[int, ...], int] = {}
    row_of = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return [list(p) for p in index], torch.tensor(row_of, dtype=torch.long)
