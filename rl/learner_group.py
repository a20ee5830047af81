"""N learner ranks driven as one learner (`cluster.learner_ranks`).

Each rank is a Ray actor in its own placement bundle (`rl.placement`: rank 0 in the driver's
bundle on the head node). Rank 0 picks a free port on its node; every rank then joins one
`torch.distributed` process group there (`nccl` with GPUs, plus `gloo` for the CPU tensors the
ranks agree on; `gloo` on CPU; the timeout is
`cluster.learner_timeout_s`), receives the initial policy through the object store once, and
builds the same `rl.learner.Learner` with its model sharded by FSDP2 (`rl.distributed.ranks`).

`LearnerGroup` answers what the trainer asks of a learner (`rl.learner_host`):

    update(batch)                   every rank trains on its share of the same batch; rank 0's metrics
    schedule_lr(step, progress)     on every rank
    served.state_dict()             the whole weights, gathered on rank 0 one tensor at a time
    broadcast_weights(...)          `rollout.weight_sync: nccl`: rank 0 sends to the engines while
                                    every rank takes part in each parameter's gather
    save_train_state(folder)        the sharded checkpoint, every rank writing its shards, and
                                    `model.pt` (the whole weights, for `swarmrl export` and `eval`)
    load_train_state(folder)        either checkpoint format, saved by any number of ranks

A rank that dies fails the step: the others' collectives time out, and the step raises an error
naming the rank; `--resume` continues from the last checkpoint (Ray does not restart a rank into
a process group that has moved on without it).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from rl.batch import TrainBatch
from rl.config import ExperimentConfig
from rl.learner_host import free_rendezvous, open_nccl_sync, push_and_version


class LearnerRank:
    """One rank's actor body."""

    def __init__(self, cfg: ExperimentConfig, rank: int, world: int, threads: int):
        from policies.qk_probe import register_qk_probe

        register_qk_probe()  # the model's attention implementation is registered per process
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.run.seed)
        self.cfg, self.rank, self.world = cfg, rank, world
        self.learner = None
        self.nccl = None  # `broadcast_weights`' sync, opened on first use

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free port on it (asked of rank 0)."""
        return free_rendezvous()

    def join(self, address: str, port: int, model: torch.nn.Module) -> str:
        """Join the process group and build this rank's learner; returns its device."""
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        from rl.distributed.ranks import ProcessGroupRanks, process_group_backend
        from rl.learner import Learner

        device = self.cfg.learner_device
        dist.init_process_group(
            process_group_backend(device), init_method=f"tcp://{address}:{port}", rank=self.rank, world_size=self.world, timeout=timedelta(seconds=self.cfg.cluster.learner_timeout_s)
        )
        mesh = init_device_mesh(device, (self.world,))
        self.learner = Learner.from_config(model, self.cfg, ranks=ProcessGroupRanks(mesh))
        return str(self.learner.device)

    def update(self, batch: TrainBatch) -> dict[str, float]:
        return self.learner.update(batch)

    def schedule_lr(self, step: int, progress: float) -> float:
        return self.learner.schedule_lr(step, progress)

    def broadcast_weights(self, workers: list, version: int, ranks_per_worker: int, address: str, port: int) -> None:
        """NCCL from rank 0's GPU to every engine (`rollout.weight_sync: nccl`): vLLM's source
        gathers the sharded weights one parameter at a time, and every rank takes part in each
        gather; only rank 0 sends. The communicator is opened on the first call."""
        if self.nccl is None:
            self.nccl = open_nccl_sync(self.learner.model, workers, ranks_per_worker, address, port, trainer_rank=self.rank)
        push_and_version(self.nccl, workers, version, sender=self.rank == 0)

    def served_state(self) -> dict[str, torch.Tensor] | None:
        return self.learner.ranks.full_state_dict(self.learner.served)

    def save_train_state(self, folder: str) -> None:
        from rl.distributed.checkpoint import save_train_state

        save_train_state(Path(folder), self.learner.model, self.learner.optimizer)
        weights = self.served_state()
        if weights is not None:
            torch.save(weights, Path(folder) / "model.pt")

    def load_train_state(self, folder: str) -> None:
        self.learner.load_train_state(Path(folder))

    def release_memory(self) -> None:
        from rollout.colocate import release_learner_cache

        release_learner_cache()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class _GatheredWeights:
    """`state_dict()` of the whole weights, gathered on rank 0."""

    def __init__(self, group: "LearnerGroup"):
        self.group = group

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.group.call("served_state")[0]


class LearnerGroup:
    """The driver's handle on N `LearnerRank` actors: the calls of a `Learner`."""

    def __init__(self, model: torch.nn.Module, cfg: ExperimentConfig, placement_group: Any = None):
        import ray

        c = cfg.cluster
        self.world = c.learner_ranks
        threads = cfg.run.torch_threads or int(c.learner_cpus)
        self.actors = []
        for rank in range(self.world):
            options: dict[str, Any] = {"num_cpus": c.learner_cpus, "num_gpus": c.learner_gpus, "max_restarts": 0}
            if placement_group is not None and (c.learner_cpus or c.learner_gpus):
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                # bundle 0 is the driver's and rank 0's, bundles 1..N-1 the other ranks' (`rl.placement`)
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=rank)
            self.actors.append(ray.remote(**options)(LearnerRank).remote(cfg, rank, self.world, threads))
        address, port = ray.get(self.actors[0].rendezvous.remote())
        initial = ray.put(model)  # one copy in the object store, read by every rank
        self.device = self.call("join", address, port, initial)[0]
        self.served = _GatheredWeights(self)
        self.model = self.served
        self.rendezvous_address: tuple[str, int] | None = None  # for the NCCL weight push

    def call(self, method: str, *args: Any) -> list[Any]:
        """`method(*args)` on every rank at once; their results in rank order. A rank that dies or
        raises fails the call with its rank named (the others stop at the process-group timeout)."""
        import ray

        refs = [getattr(a, method).remote(*args) for a in self.actors]
        results: list[Any] = [None] * len(refs)
        pending = dict(zip(refs, range(len(refs))))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            rank = pending.pop(done[0])
            try:
                results[rank] = ray.get(done[0])
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
                raise RuntimeError(
                    f"learner rank {rank} of {self.world} failed in {method}: {err.__class__.__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}; "
                    "the run stops here: continue it with `swarmrl train ... --resume` from the last checkpoint"
                ) from err
        return results

    def update(self, batch: TrainBatch) -> dict[str, float]:
        import ray

        ref = ray.put(batch)  # one copy, every rank reads it and trains on its share
        return self.call("update", ref)[0]

    def schedule_lr(self, step: int, progress: float) -> float:
        return self.call("schedule_lr", step, progress)[0]

    def broadcast_weights(self, workers: list, version: int, ranks_per_worker: int) -> None:
        import ray

        if self.rendezvous_address is None:  # the engines meet rank 0's NCCL endpoint on its node
            self.rendezvous_address = tuple(ray.get(self.actors[0].rendezvous.remote()))
        self.call("broadcast_weights", list(workers), version, ranks_per_worker, *self.rendezvous_address)

    def save_train_state(self, folder: Path) -> None:
        self.call("save_train_state", str(folder))

    def load_train_state(self, folder: Path) -> None:
        self.call("load_train_state", str(folder))

    def release_memory(self) -> None:
        """Every rank's cached GPU memory back (before engines wake on the same GPUs)."""
        self.call("release_memory")

    def nodes(self) -> list[str]:
        """The Ray node id of each rank, in rank order."""
        return self.call("node_id")

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
