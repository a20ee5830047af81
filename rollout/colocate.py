"""The learner and the vLLM engines on one GPU (`rollout.sleep_mode`): the order of a training step.

    engines sleep → learner update → learner's cached memory released → engines wake their weights
    → new weights handed over → engines wake their KV cache → (next step) generate

Why this order:

- The engines sleep before the update: their KV cache (most of `rollout.gpu_memory_utilization`)
  and their weights are the memory the update's activations and optimizer state need.
- The learner's cached blocks are released before anything wakes: vLLM takes its memory back
  with its own allocations, which cannot use what torch's caching allocator still holds for the
  learner after the update.
- Weights wake before the KV cache: the handover writes into the engine's weight memory, so
  that must be mapped, and it runs while the KV cache is still away so the handover's
  temporary buffers (host copies loaded layer by layer, IPC-mapped learner tensors) have room.
  This is vLLM's documented order for weight updates in RL.
- The KV cache wakes last: only generation needs it.

Where the steps run is the caller's business: `engines` is one engine in this process, or every
rollout worker's engine at once (`rollout.worker.WorkerEngines`); `hand_over` is whichever
`rollout.weight_sync` the run uses.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, TypeVar

import torch

T = TypeVar("T")


class SleepingEngines(Protocol):
    def sleep(self) -> None: ...

    def wake_up(self, tags: Sequence[str] | None = None) -> None: ...


def release_learner_cache() -> None:
    """Return the memory torch keeps cached in this process to the GPU (nothing on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def colocated_update(
    engines: SleepingEngines,
    update: Callable[[], T],
    hand_over: Callable[[], None],
    release: Callable[[], None] = release_learner_cache,
) -> T:
    """One learner step on a GPU the engines share: returns `update()`'s result, with the engines
    holding the new weights and ready to generate. `release` empties torch's cache in the
    learner's process: the default is this process's; a learner in a Ray actor passes its own."""
    engines.sleep()
    result = update()
    release()
    engines.wake_up(["weights"])
    hand_over()
    engines.wake_up(["kv_cache"])
    return result
