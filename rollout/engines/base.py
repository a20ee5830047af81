"""The engine interface every generation backend implements (`hf` here, `vllm` on GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import torch

# The memory a sleeping engine gives back, by vLLM's tags: an update wakes the weights, loads the
# new ones, then wakes the KV cache (`rollout.colocate`).
WAKE_TAGS = ("weights", "kv_cache")


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()  # besides the tokenizer's EOS


@dataclass
class Completion:
    """One sampled continuation.

    `logprobs[i]` is log p(token_ids[i]) under the temperature-scaled policy before top-p
    truncation: the same quantity the learner recomputes, so their ratio is the importance ratio.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or a stop token, included in token_ids) | "length"
    extra: dict = field(default_factory=dict)
    policy_version: int = -1  # the weights version the worker held when it sampled this (-1: unknown)


class Engine(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[Completion]: ...

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor]) -> None: ...

    def sleep(self) -> None:
        """Free the accelerator memory the engine holds between generate calls (KV cache, weights)
        while the learner trains on the same GPU; a no-op where there is nothing to free."""
        ...

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Take back what `sleep` freed, the `WAKE_TAGS` named (None: all). `load_weights` needs the
        weights awake, `generate` everything."""
        ...
