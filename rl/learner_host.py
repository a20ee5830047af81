"""Where the learner runs: in the driver, or in a Ray actor that owns the learner's GPU.

The driver is not a Ray actor, so Ray's `CUDA_VISIBLE_DEVICES` does not apply to it: its
`cuda:0` could be a GPU a rollout worker holds. A learner that holds a GPU therefore runs in an
actor scheduled into the learner's placement bundle (`cluster.learner_gpus`), where `cuda` is the
GPU Ray gave it. On the CPU it stays in the driver unless `learner.actor` asks otherwise.

Both hosts offer what the trainer uses, so the loop does not know which one it has:

    update(batch) -> metrics        one learner update (`rl.learner.Learner.update`)
    schedule_lr(step, progress)     the step's lr factor
    model, optimizer                state_dict() / load_state_dict() for checkpoints
    load_train_state(folder)        a checkpoint's model and optimizer, in either format
    served                          state_dict(): the weights the rollout workers load (merged under LoRA)

With `cluster.learner_ranks` N > 1 the learner is N actors (`rl.learner_group.LearnerGroup`),
which offer the same calls and write their checkpoints themselves (`save_train_state`).

The actor returns every state on the CPU: the driver may have no GPU, and the object store and
`torch.save` take CPU tensors.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import torch

from rl.batch import TrainBatch
from rl.config import ExperimentConfig
from rl.learner import Learner


def start_learner(model: torch.nn.Module, cfg: ExperimentConfig, placement_group: Any = None) -> Any:
    """The run's learner: a `Learner` in this process, or a `RemoteLearner` (`learner.actor`,
    on by default when the learner has a GPU)."""
    if not cfg.learner_in_actor:
        return Learner.from_config(model, cfg)
    if cfg.cluster.learner_ranks > 1:
        from rl.learner_group import LearnerGroup

        return LearnerGroup(model, cfg, placement_group)
    return RemoteLearner(model, cfg, placement_group)


def free_rendezvous() -> tuple[str, int]:
    """This node's address and a free port on it."""
    import ray

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return ray.util.get_node_ip_address(), port


def open_nccl_sync(model: torch.nn.Module, workers: list, ranks_per_worker: int, address: str, port: int, trainer_rank: int = 0) -> Any:
    from rollout.engines.vllm_nccl import NCCLWeightSync

    return NCCLWeightSync(model, workers, master_address=address, master_port=port, ranks_per_worker=ranks_per_worker, trainer_rank=trainer_rank)


def push_and_version(sync: Any, workers: list, version: int, sender: bool = True) -> None:
    """One NCCL push; the sender then tells the workers which weights they hold."""
    import ray

    sync.push()
    if sender:
        ray.get([w.set_version.remote(version) for w in workers])


def to_cpu(obj: Any) -> Any:
    """A (nested) state dict with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


class LearnerProcess:
    """The actor's body: one `Learner` on the device Ray gave this process."""

    def __init__(self, model: torch.nn.Module, cfg: ExperimentConfig, threads: int):
        from policies.qk_probe import register_qk_probe

        register_qk_probe()  # the model's attention implementation is registered per process
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.run.seed)
        self.learner = Learner.from_config(model, cfg)
        self.nccl = None  # `broadcast_weights`' communicator, opened on first use
        self.parts = {"model": self.learner.model, "optimizer": self.learner.optimizer, "served": self.learner.served}

    def update(self, batch: TrainBatch) -> dict[str, float]:
        return self.learner.update(batch)

    def schedule_lr(self, step: int, progress: float) -> float:
        return self.learner.schedule_lr(step, progress)

    def state_dict(self, part: str) -> dict[str, Any]:
        return to_cpu(self.parts[part].state_dict())

    def load_state_dict(self, part: str, state: dict[str, Any]) -> None:
        self.parts[part].load_state_dict(state)

    def load_train_state(self, folder: str) -> None:
        self.learner.load_train_state(folder)

    def device(self) -> str:
        return str(self.learner.device)

    def release_memory(self) -> None:
        """Give the GPU memory torch caches for this learner back (before vLLM engines wake on its GPU)."""
        from rollout.colocate import release_learner_cache

        release_learner_cache()

    def broadcast_weights(self, workers: list, version: int, ranks_per_worker: int) -> None:
        """NCCL from this actor's GPU to every rollout worker's engine (`rollout.weight_sync: nccl`);
        the communicator is opened on the first call."""
        if self.nccl is None:
            self.nccl = open_nccl_sync(self.learner.model, workers, ranks_per_worker, *free_rendezvous())
        push_and_version(self.nccl, workers, version)


class _RemoteState:
    """`state_dict()` / `load_state_dict()` of one part of the actor's learner."""

    def __init__(self, actor: Any, part: str):
        self.actor, self.part = actor, part

    def state_dict(self) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.state_dict.remote(self.part))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import ray

        ray.get(self.actor.load_state_dict.remote(self.part, state))


class RemoteLearner:
    """The driver's handle on a `LearnerProcess` actor: the same calls as a `Learner`."""

    def __init__(self, model: torch.nn.Module, cfg: ExperimentConfig, placement_group: Any = None):
        import ray

        c = cfg.cluster
        options: dict[str, Any] = {"num_cpus": c.learner_cpus, "num_gpus": c.learner_gpus, "max_restarts": 0}
        if placement_group is not None and (c.learner_cpus or c.learner_gpus):
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            # bundle 0 is the learner's (`rl.placement.place_roles`)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=0)
        threads = cfg.run.torch_threads or int(c.learner_cpus)
        self.actor = ray.remote(**options)(LearnerProcess).remote(model, cfg, threads)
        self.model = _RemoteState(self.actor, "model")
        self.optimizer = _RemoteState(self.actor, "optimizer")
        self.served = _RemoteState(self.actor, "served")
        self.device = ray.get(self.actor.device.remote())  # also waits for the actor to be up

    def update(self, batch: TrainBatch) -> dict[str, float]:
        import ray

        return ray.get(self.actor.update.remote(batch))

    def schedule_lr(self, step: int, progress: float) -> float:
        import ray

        return ray.get(self.actor.schedule_lr.remote(step, progress))

    def load_train_state(self, folder) -> None:
        """A sharded checkpoint is read by the actor (it is on the driver's node, in its bundle);
        single files go through the object store as they always have."""
        import ray

        from rl.distributed.checkpoint import is_sharded_checkpoint

        if is_sharded_checkpoint(folder):
            ray.get(self.actor.load_train_state.remote(str(folder)))
            return
        self.model.load_state_dict(torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True))
        self.optimizer.load_state_dict(torch.load(Path(folder) / "optimizer.pt", map_location="cpu", weights_only=True))

    def release_memory(self) -> None:
        import ray

        ray.get(self.actor.release_memory.remote())

    def broadcast_weights(self, workers: list, version: int, ranks_per_worker: int) -> None:
        import ray

        ray.get(self.actor.broadcast_weights.remote(list(workers), version, ranks_per_worker))

    def close(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)
