"""GPU weight sync: one NCCL broadcast per learner step from the learner to every vLLM rollout worker.

This is vLLM's own `nccl` weight-transfer backend (vLLM >= 0.32), driven from the learner:

    learner (NCCL rank 0) ── broadcast ──► worker 0 (ranks 1..r) , worker 1 (ranks r+1..2r) , ...

- the learner holds a `NCCLTrainerWeightTransferEngine` over `ModuleSource(model)` (named
  parameters in checkpoint format, packed into buffers) and calls `send_weights()` per step;
- each rollout worker's engine is built with `weight_transfer="nccl"`; vLLM's receiving side
  loads the broadcast tensors with the same layerwise reload that `vllm_weights` uses on CPU
  (checkpoint layout back, the model's loaders, post-load processing again);
- vLLM drives the receivers through a four-call control plane (`VLLMWeightSyncClient`):
  `RolloutWeightClient` implements it over our Ray rollout workers, fanning every call out
  and giving each worker its own rank offset in the NCCL group.

The weights never pass through the object store. The non-GPU logic (rank layout, fan-out) is
tested here with real Ray actors; the broadcast itself needs CUDA (`@pytest.mark.gpu`).
"""

from __future__ import annotations

from typing import Any

import torch


def nccl_world_size(num_workers: int, ranks_per_worker: int) -> int:
    """The learner (rank 0) plus every GPU rank of every rollout worker."""
    if num_workers < 1 or ranks_per_worker < 1:
        raise ValueError(f"need at least one rollout worker and one rank each (got {num_workers}, {ranks_per_worker})")
    return 1 + num_workers * ranks_per_worker


def worker_init_payloads(init_info: dict[str, Any], num_workers: int, ranks_per_worker: int) -> list[dict[str, Any]]:
    """vLLM's worker init payload (written for one engine at `rank_offset` 1), one per worker.

    Worker i's ranks start at 1 + i * ranks_per_worker; the world size must cover all of them.
    """
    world = nccl_world_size(num_workers, ranks_per_worker)
    if init_info.get("world_size") != world:
        raise ValueError(f"NCCL world_size is {init_info.get('world_size')}, the learner and {num_workers} worker(s) x {ranks_per_worker} rank(s) need {world}")
    base = int(init_info.get("rank_offset", 1))
    return [{**init_info, "rank_offset": base + i * ranks_per_worker} for i in range(num_workers)]


class RolloutWeightClient:
    """vLLM's `VLLMWeightSyncClient` protocol over Ray rollout workers (`RolloutWorker.weight_sync_rpc`)."""

    def __init__(self, workers: list, ranks_per_worker: int = 1):
        self.workers = list(workers)
        self.ranks_per_worker = ranks_per_worker

    def _all(self, method: str, payloads: list[Any]) -> None:
        import ray

        ray.get([w.weight_sync_rpc.remote(method, p) for w, p in zip(self.workers, payloads)])

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._all("init_weight_transfer_engine", worker_init_payloads(init_info, len(self.workers), self.ranks_per_worker))

    def start_weight_update(self) -> None:
        self._all("start_weight_update", [None] * len(self.workers))

    def update_weights(self, update_info: Any) -> None:
        self._all("update_weights", [update_info] * len(self.workers))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", [None] * len(self.workers))


class NCCLWeightSync:
    """Learner side: `push(model)` broadcasts the current weights to every worker (CUDA only).

    With N learner ranks (FSDP2) every rank holds one, with its `trainer_rank`: rank 0 sends, and
    the others only take part in the gather of each parameter (`full_tensor()`, a collective of
    the learners' own process group) as vLLM's `ModuleSource` iterates the sharded model; they
    join no NCCL group with the engines."""

    def __init__(
        self, model: torch.nn.Module, workers: list, *, master_address: str, master_port: int, ranks_per_worker: int = 1, trainer_rank: int = 0
    ):
        if not torch.cuda.is_available():
            raise RuntimeError("NCCL weight sync needs CUDA; on CPU the weights go through the object store (rollout.worker.push_weights)")
        from vllm.distributed.weight_transfer.base import ModuleSource
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo, NCCLTrainerWeightTransferEngine

        info = NCCLTrainerInitInfo(
            master_address=master_address, master_port=master_port, world_size=nccl_world_size(len(workers), ranks_per_worker), rank=trainer_rank
        )
        self.engine = NCCLTrainerWeightTransferEngine.trainer_init(info, client=RolloutWeightClient(workers, ranks_per_worker), source=ModuleSource(model))

    def push(self) -> None:
        self.engine.send_weights()
