"""The learner's view of its ranks: one process, or N processes of one FSDP2 process group.

`Learner` asks the same questions whatever N is, and `LearnerRanks` answers them:

    rows_of(part)          the rows of a minibatch this rank trains on (all of them when N = 1)
    passes(n)              how many forward/backward passes every rank runs (the most any rank needs)
    all_finite(loss)       whether every rank's loss is finite (all skip the step together)
    pool(metrics)          the minibatch's metrics over every rank's micro-batches
    pool_sums(sums)        a step's sums over every rank's rows (the sampler-mismatch meter)
    scalar(x)              a plain float of a tensor that may be a DTensor (the gradient norm)
    loss_scale             what each rank's loss is multiplied by before backward

With N ranks the minibatch's rows are split by tokens (longest row first, each to the rank with
the fewest tokens so far), each rank's loss is its rows' share of the minibatch's loss, and FSDP
averages the gradients over ranks; `loss_scale = N` turns that average into the sum, so N ranks
take the update one process takes on the whole minibatch. FSDP2 gathers a layer's parameters in
every forward, so all ranks must run the same number of forwards: a rank with fewer micro-batches
runs extra passes over one of its rows at weight 0 (`passes`).

`sharded()` wraps the policy with `fully_shard`, one unit per decoder layer and the root, with
FSDP2's mixed precision at bf16 (parameters gathered in bf16, gradients reduced in fp32).
"""

from __future__ import annotations

from typing import Any

import torch

from rl.batch import TrainBatch
from rl.microbatch import MicroMetrics


class LearnerRanks:
    """One process: every question has the trivial answer, and nothing is communicated."""

    world, rank = 1, 0
    loss_scale = 1.0

    sharded = False  # the policy is wrapped by FSDP2 (even at world size 1)

    def shard(self, model: torch.nn.Module, bf16: bool) -> None:
        return None

    def rows_of(self, part: TrainBatch) -> torch.Tensor | None:
        return None  # all of them, in order, no copy

    def passes(self, n: int) -> int:
        return n

    def all_finite(self, value: torch.Tensor) -> bool:
        return bool(torch.isfinite(value))

    def pool(self, metrics: MicroMetrics) -> dict[str, float]:
        return metrics.result()

    def scalar(self, value: torch.Tensor) -> float:
        return float(value)

    def pool_sums(self, sums: dict[str, float], maxima: frozenset[str] = frozenset()) -> dict[str, float]:
        """Sums over every rank's rows (the keys in `maxima`: their maximum)."""
        return sums


class ProcessGroupRanks(LearnerRanks):
    """This process as rank `rank` of an initialised default process group of `world` ranks."""

    def __init__(self, mesh: Any):
        import torch.distributed as dist

        self.dist = dist
        self.mesh = mesh
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.loss_scale = float(self.world)
        self.sharded = True

    def shard(self, model: torch.nn.Module, bf16: bool) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=self.mesh, mp_policy=mp)
        fully_shard(model, mesh=self.mesh, mp_policy=mp)

    def rows_of(self, part: TrainBatch) -> torch.Tensor:
        return split_rows_by_tokens(part.attention_mask.sum(dim=1).tolist(), self.world)[self.rank]

    def passes(self, n: int) -> int:
        count = torch.tensor([n], dtype=torch.long)
        self.dist.all_reduce(count, op=self.dist.ReduceOp.MAX)
        return int(count)

    def all_finite(self, value: torch.Tensor) -> bool:
        ok = torch.tensor([1.0 if bool(torch.isfinite(value)) else 0.0])
        self.dist.all_reduce(ok, op=self.dist.ReduceOp.MIN)
        return bool(ok > 0)

    def pool(self, metrics: MicroMetrics) -> dict[str, float]:
        parts: list[Any] = [None] * self.world
        self.dist.all_gather_object(parts, (metrics.sums, metrics.extremes, metrics.placeholders))
        pooled = MicroMetrics()
        for sums, extremes, placeholders in parts:
            for k, v in sums.items():
                pooled.sums[k] = pooled.sums.get(k, 0.0) + v
            for k, v in extremes.items():
                pick = min if k.endswith("_min") else max
                pooled.extremes[k] = pick(pooled.extremes.get(k, v), v)
            for k, v in placeholders.items():
                pooled.placeholders.setdefault(k, v)
        return pooled.result()

    def pool_sums(self, sums: dict[str, float], maxima: frozenset[str] = frozenset()) -> dict[str, float]:
        parts: list[Any] = [None] * self.world
        self.dist.all_gather_object(parts, sums)
        return {k: (max if k in maxima else sum)(p[k] for p in parts) for k in sums}

    def scalar(self, value: torch.Tensor) -> float:
        full = getattr(value, "full_tensor", None)
        return float(full() if full is not None else value)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole weights on rank 0 (CPU), None elsewhere: one tensor gathered at a time, so no
        rank ever holds a second full copy on its device."""
        out: dict[str, torch.Tensor] | None = {} if self.rank == 0 else None
        for name, value in model.state_dict().items():
            full = value.full_tensor() if hasattr(value, "full_tensor") else value
            if out is not None:
                out[name] = full.detach().cpu()
            del full
        return out


def process_group_backend(device: str) -> str:
    """The ranks' backend: NCCL for CUDA tensors, with gloo beside it on GPUs for the small CPU
    tensors the ranks agree on (`passes`, `all_finite`, `pool`), which NCCL alone cannot carry."""
    return "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"


def split_rows_by_tokens(lengths: list[int], world: int) -> list[torch.Tensor]:
    """Row indices per rank, balanced by token count: longest row first, each to the rank with the
    fewest tokens so far (ties to the lower rank). Each rank's rows in ascending order."""
    loads = [0] * world
    rows: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(world), key=lambda r: (loads[r], len(rows[r]), r))
        rows[r].append(i)
        loads[r] += lengths[i]
    return [torch.tensor(sorted(r), dtype=torch.long) for r in rows]


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks (its `_no_split_modules` classes), the units FSDP shards one by one."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no decoder layers to shard (no `_no_split_modules` on the model)")
    return layers
