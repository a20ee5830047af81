"""Muon's orthogonalisation for matrices sharded by rows over ranks (FSDP2 `fully_shard`).

Newton-Schulz needs the whole matrix: the orthogonal factor of a matrix is not the stack of
its row blocks' factors. Under FSDP2 each rank holds rows [r·c, min((r+1)·c, R)) of every
R-row matrix (c = ceil(R / N), torch.chunk's split, so the last ranks may hold fewer or no
rows). Each step, for the matrices of one parameter group:

    1. owners:   every matrix gets one owner rank, the same on every rank (`assign_owners`:
                 largest first, each to the least loaded rank, load = elements), so the
                 Newton-Schulz work is split over the ranks instead of repeated on each;
    2. gather:   one all-to-all sends each rank's rows of every matrix to the matrix's owner,
                 padded to c rows so every rank's block has the same size;
    3. compute:  each owner orthogonalises the full matrices it owns, same-shape ones in one
                 batched call (`kernels.newton_schulz.orthogonalize`);
    4. scatter:  a second all-to-all sends every rank its own rows of each result.

`BatchedMuon` runs these four in rounds of N same-shape matrices (`ns_rounds`): the buffers of a
round hold a few matrices, so the step's extra memory does not grow with the model (all matrices
at once held about eight copies of a rank's share of them: more than sharding saved).

This is the layout of Moonlight's distributed Muon (gather the full update, orthogonalise,
keep the local rows) with nanochat's DistMuon's split of the matrices over ranks. Momentum,
weight decay and the update itself stay on the shard (`rl.optim.muon.BatchedMuon`).

The blocks travel in the Newton-Schulz dtype: `orthogonalize` casts to it first thing and
returns it, so sending the cast rows and the uncast result gives the same numbers as the
single-process optimizer, in half the bytes under bfloat16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

from kernels.newton_schulz import orthogonalize


@dataclass(frozen=True)
class OwnedWork:
    """What this rank orthogonalised in the last step (for benchmarks and tests)."""

    matrices: int = 0
    numel: int = 0

    def __add__(self, other: "OwnedWork") -> "OwnedWork":
        return OwnedWork(self.matrices + other.matrices, self.numel + other.numel)


def shard_rows(rows: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of the rows that `rank` holds of a `rows`-row tensor split like torch.chunk."""
    chunk = math.ceil(rows / world)
    start = min(rank * chunk, rows)
    return start, min(start + chunk, rows)


def is_row_sharded(tensor: torch.Tensor) -> bool:
    """True for a DTensor split by rows over a 1-D mesh (FSDP2's default placement)."""
    return isinstance(tensor, DTensor) and tensor.device_mesh.ndim == 1 and tuple(tensor.placements) == (Shard(0),)


def check_row_sharded(tensors: Sequence[torch.Tensor]) -> None:
    """Raise unless every tensor is a row-sharded DTensor on one and the same mesh."""
    mesh = tensors[0].device_mesh if isinstance(tensors[0], DTensor) else None
    for t in tensors:
        if not is_row_sharded(t):
            placement = tuple(t.placements) if isinstance(t, DTensor) else "a plain tensor"
            raise NotImplementedError(f"sharded Muon handles DTensors with placement (Shard(0),) on a 1-D mesh, got {placement}")
        if t.device_mesh != mesh:
            raise ValueError("sharded Muon needs all matrices of a parameter group on one device mesh")


def assign_owners(numels: Sequence[int], world: int) -> list[int]:
    """Owner rank of each matrix: largest first, each to the rank with the fewest elements so far
    (ties to the lower rank, then the earlier matrix), so every rank computes the same answer."""
    load = [0] * world
    owners = [0] * len(numels)
    for i in sorted(range(len(numels)), key=lambda i: (-numels[i], i)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owners[i] = rank
        load[rank] += numels[i]
    return owners


def ns_rounds(shapes: Sequence[tuple[int, int]], world: int) -> list[list[int]]:
    """The matrices of one step in rounds of `sharded_orthogonalize`: same-shape matrices (first
    appearance order), `world` of them per round, so each round gives every rank one matrix to
    orthogonalise and its buffers hold a few matrices, not the model."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        by_shape.setdefault(tuple(shape), []).append(i)
    return [same[k : k + world] for same in by_shape.values() for k in range(0, len(same), world)]


def sharded_orthogonalize(
    params: Sequence[DTensor],  # each [R_i, n_i] globally, Shard(0)
    updates: Sequence[torch.Tensor],  # each this rank's rows of the update, [rows_i, n_i]
    ns_coefficients: tuple[float, float, float],
    ns_steps: int,
    eps: float,
    dtype: torch.dtype,
) -> tuple[list[torch.Tensor], OwnedWork]:
    """This rank's rows of the orthogonalised update of every matrix (each [rows_i, n_i] in
    `dtype`), and what this rank computed. Collective: every rank of the mesh must call it with
    the same matrices in the same order."""
    check_row_sharded(params)
    mesh = params[0].device_mesh
    group, rank, world = mesh.get_group(0), mesh.get_local_rank(0), mesh.size(0)
    device = updates[0].device
    shapes = [tuple(p.shape) for p in params]
    chunks = [math.ceil(rows / world) for rows, _ in shapes]  # padded rows per rank
    for (rows, cols), u in zip(shapes, updates):
        start, stop = shard_rows(rows, rank, world)
        if tuple(u.shape) != (stop - start, cols):
            raise ValueError(f"rank {rank} holds a {tuple(u.shape)} shard of a {(rows, cols)} matrix; expected torch.chunk's {(stop - start, cols)}")
    owners = assign_owners([rows * cols for rows, cols in shapes], world)
    mine = [i for i, o in enumerate(owners) if o == rank]
    block = [c * cols for c, (_, cols) in zip(chunks, shapes)]  # elements of one padded row block
    to_owner = [sum(block[i] for i, o in enumerate(owners) if o == dest) for dest in range(world)]
    owned = sum(block[i] for i in mine)  # elements this rank receives from each rank
    by_owner = sorted(range(len(params)), key=lambda i: (owners[i], i))  # the buffers' block order

    # gather: [blocks for owner 0 | blocks for owner 1 | ...], each block a padded row slab
    send = torch.zeros(sum(to_owner), dtype=dtype, device=device)
    offset = 0
    for i in by_owner:
        send[offset : offset + updates[i].numel()].copy_(updates[i].reshape(-1))  # rows past it: padding
        offset += block[i]
    recv = torch.empty(owned * world, dtype=dtype, device=device)  # [from rank 0 | from rank 1 | ...]
    dist.all_to_all_single(recv, send, [owned] * world, to_owner, group=group)
    del send

    full = []  # the matrices this rank owns, whole: each [R_i, n_i]
    slabs = recv.view(world, owned)  # [N, owned]
    offset = 0
    for i in mine:
        rows, cols = shapes[i]
        stacked = slabs[:, offset : offset + block[i]].reshape(world * chunks[i], cols)  # [N·c, n]
        full.append(stacked[:rows])
        offset += block[i]
    del recv, slabs  # with N > 1 each matrix in `full` is a copy (a strided slab reshaped): the buffer can go
    ortho = orthogonalize(full, ns_coefficients, ns_steps, eps, dtype=dtype) if full else []
    del full

    # scatter back: the same slabs in reverse, each rank's padded rows of every owned result
    slabs_back = [torch.zeros(world, 0, dtype=dtype, device=device)]
    for i, o in zip(mine, ortho):
        padded = o.new_zeros(world * chunks[i], shapes[i][1])  # [N·c, n]
        padded[: shapes[i][0]] = o
        slabs_back.append(padded.view(world, block[i]))  # row block r goes to rank r
    back = torch.cat(slabs_back, dim=1)  # [N, owned]
    returned = torch.empty(sum(to_owner), dtype=dtype, device=device)  # laid out as `send`
    dist.all_to_all_single(returned, back.view(-1), to_owner, [owned] * world, group=group)

    local: list[torch.Tensor | None] = [None] * len(params)
    offset = 0
    for i in by_owner:
        local[i] = returned[offset : offset + updates[i].numel()].view(updates[i].shape)  # [rows_i, n_i]
        offset += block[i]
    work = OwnedWork(len(mine), sum(shapes[i][0] * shapes[i][1] for i in mine))
    return local, work  # type: ignore[return-value]
