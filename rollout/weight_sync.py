"""How a step's new weights reach the rollout engines: the rule behind `rollout.weight_sync: auto`.

Three ways, by where the learner and the engines hold their weights:

- `object_store`: the driver `ray.put`s the state dict once and every worker loads it
  (`rollout.worker.push_weights`). Works for any engine and any placement; the weights go
  through host memory, which is the only way when an engine runs on CPU or the learner does.
- `nccl`: the learner broadcasts from its GPU to every engine's GPU (`rollout.engines.vllm_nccl`).
  NCCL cannot put two ranks of one communicator on the same GPU, so each engine rank needs a
  whole GPU of its own, apart from the learner's.
- `ipc`: the learner and the engines share one GPU; vLLM would map the learner's tensors through
  CUDA IPC handles, with no copy through the host. Not available yet: the config refuses it, and
  a shared GPU hands weights over through the object store (a copy through host memory, which
  works on one GPU as anywhere else).

When do the learner and the engines share a GPU? Ray hands out GPU fractions, so the rule is
the request itself: both hold a GPU share and together they ask for at most one GPU
(`cluster.learner_gpus + rollout.num_workers * rollout.gpus_per_worker <= 1`, e.g. 0.5 + 0.5).
Any larger request is taken to mean GPUs apart.
"""

from __future__ import annotations

from typing import Literal, Protocol

WeightSync = Literal["object_store", "nccl", "ipc"]

# GPU fractions are user floats: 0.3 + 0.7 must count as one GPU
_ONE_GPU = 1.0 + 1e-9


class RolloutPlacement(Protocol):
    """The `rollout` keys the choice reads (`rl.config.RolloutConfig`)."""

    engine: str
    weight_sync: str
    num_workers: int
    gpus_per_worker: float


def shares_one_gpu(rollout: RolloutPlacement, learner_gpus: float) -> bool:
    """True when the learner and every rollout engine fit on one GPU together, so they share it."""
    total = learner_gpus + rollout.num_workers * rollout.gpus_per_worker
    return learner_gpus > 0 and rollout.gpus_per_worker > 0 and total <= _ONE_GPU


def choose_weight_sync(rollout: RolloutPlacement, learner_gpus: float) -> WeightSync:
    """`rollout.weight_sync`, with `auto` resolved by placement.

    `auto`: `nccl` when each vLLM engine has whole GPUs of its own and the learner has one;
    `object_store` otherwise (hf engines, engines or learner on CPU, one GPU shared, or engines on
    GPU fractions apart from the learner). The explicit choices
    are returned as they are: `rl.config` has already refused the ones the placement cannot do.
    """
    if rollout.weight_sync != "auto":
        return rollout.weight_sync  # type: ignore[return-value]
    if rollout.engine != "vllm" or rollout.gpus_per_worker <= 0 or learner_gpus <= 0:
        return "object_store"
    if rollout.gpus_per_worker >= 1 and not shares_one_gpu(rollout, learner_gpus):
        return "nccl"
    return "object_store"
