"""The learner's training state (model + MuonAdamW) as one checkpoint format for any number of ranks.

A checkpoint folder (the caller's, written under a temporary name and renamed: `rl.checkpoint`):

    train_state/          torch.distributed.checkpoint (DCP) files: `.metadata` and one
                          `__<rank>_0.distcp` per rank that wrote, holding
                            model.<fqn>                                  weights and buffers
                            optim.<part>.state.<fqn>.<key>               e.g. exp_avg, momentum_buffer, step
                            optim.<part>.param_groups.<i>.<key>          lr, betas, ... ("params": FQNs)
    train_meta.json       format version, world size, MuonAdamW's parameter names per part
    rng_rank<r>.pt        rank r's torch CPU RNG state (and CUDA's, on a GPU)

Why DCP: every tensor is stored under its parameter's name with its global shape and the offsets
of the pieces each rank wrote, so a load reads whatever overlaps the pieces the loading model
holds. A checkpoint written by N FSDP2 ranks loads on M ranks or in one plain process, and back;
each rank writes only its shards, so no rank ever holds the whole state. `model.pt` and
`optimizer.pt` (the single-file format `rl.checkpoint` wrote before) need the whole state in one
process and key optimizer state by position; they still load at any N (`load_legacy_train_state`).

The optimizer state is keyed by parameter name here rather than through
`get_optimizer_state_dict` / `set_optimizer_state_dict`: those initialise an optimizer with no
state by running a zero-learning-rate step, which leaves AdamW's step counter at 1 (a checkpoint
taken before the first update would then not resume the same run) and runs Muon's
Newton-Schulz at load time. Here the tensors to load into are made from the checkpoint's own
metadata instead: a state tensor of its parameter's shape (exp_avg, Muon's momentum_buffer) is
sharded like the parameter (`zeros_like`, a DTensor under FSDP2); any other (AdamW's scalar
`step`) is a plain tensor. This holds for any optimizer whose per-parameter state is flat
(Muon, AdamW).

With a process group initialised every function here is collective: every rank calls it with
the same folder, which must be on a file system all ranks see. Without one (the learner as one
plain process) they run alone; DCP needs no process group.

RNG across world sizes: rank r restores `rng_rank<r>.pt` if the checkpoint has one (an exact
resume when the world size is unchanged); a rank the checkpoint did not have is reseeded from a
seed drawn from rank 0's saved state plus its rank: deterministic, distinct per rank, but not
the stream a straight run at that world size would have drawn.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor

from rl.optim.muonclip import MuonAdamW

STATE_DIR = "train_state"
META_FILE = "train_meta.json"
FORMAT = 1


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


@contextmanager
def _quiet_single_process():
    """DCP warns whenever it runs without a process group; one plain process is a case we mean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng_rank{rank}.pt"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def is_sharded_checkpoint(folder: str | Path) -> bool:
    """Whether `folder` holds a checkpoint in this format (else: the single-file one, or none)."""
    folder = Path(folder)
    return (folder / META_FILE).is_file() and (folder / STATE_DIR / ".metadata").is_file()


def _param_names(optimizer: MuonAdamW) -> dict[str, list[str]]:
    return {part: optimizer.params_of(part) for part in optimizer.optimizers}


def _check_param_names(saved: dict[str, list[str]], optimizer: MuonAdamW) -> None:
    """Raise before anything is loaded if the checkpoint's parameters are not this optimizer's."""
    live = _param_names(optimizer)
    if set(saved) != set(live):
        raise ValueError(f"checkpoint has optimizer parts {sorted(saved)}, this optimizer has {sorted(live)} (a different optimizer.name?)")
    for part, names in live.items():
        if list(saved[part]) != names:
            missing = [n for n in names if n not in set(saved[part])]
            extra = [n for n in saved[part] if n not in set(names)]
            raise ValueError(
                f"checkpoint's {part!r} optimizer was saved for other parameters: {len(saved[part])} saved, {len(names)} here; "
                f"not in the checkpoint: {missing[:3]}; only in the checkpoint: {extra[:3]}"
                + ("" if missing or extra else " (same names in another order)")
            )


def _resharded(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every FSDP2 unit sharded: after a forward without backward FSDP2 leaves the
    root's parameters gathered, and `named_parameters()` would then name the gathered tensors
    instead of the shards the optimizer holds."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return model


def _positions(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The name of each of `opt`'s parameters, in the order torch's optimizer state_dict numbers them."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in opt.param_groups for p in group["params"]]


def _optim_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """`opt.state_dict()` keyed by parameter name (its tensors, not copies)."""
    names = _positions(model, opt)
    sd = opt.state_dict()
    return {
        "state": {names[i]: s for i, s in sd["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in sd["param_groups"]],
    }


def _optim_template(model: torch.nn.Module, opt: torch.optim.Optimizer, part: str, metadata: Any) -> dict[str, Any]:
    """Tensors for DCP to load `part`'s saved state into, shaped and sharded as this process holds it."""
    params = dict(zip(_positions(model, opt), (p for g in opt.param_groups for p in g["params"])))
    state: dict[str, dict[str, Any]] = {}
    groups: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{part}."
    for key, md in metadata.state_dict_metadata.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest.startswith("param_groups."):
            index, name = rest[len("param_groups.") :].split(".", 1)
            groups.setdefault(int(index), {})[name] = None  # a pickled value: DCP replaces it
            continue
        fqn, name = rest[len("state.") :].rsplit(".", 1)  # parameter names contain dots, state keys do not
        param = params[fqn]
        if not isinstance(md, TensorStorageMetadata):
            value = None
        elif tuple(md.size) == tuple(param.shape):
            value = torch.zeros_like(param, dtype=md.properties.dtype)  # sharded as the parameter is
        else:
            value = torch.zeros(tuple(md.size), dtype=md.properties.dtype)
        state.setdefault(fqn, {})[name] = value
    return {"state": state, "param_groups": [groups[i] for i in sorted(groups)]}


def _load_optim_state(model: torch.nn.Module, opt: torch.optim.Optimizer, part: str, saved: dict[str, Any]) -> None:
    names = _positions(model, opt)
    index = {n: i for i, n in enumerate(names)}
    if len(saved["param_groups"]) != len(opt.param_groups):
        raise ValueError(f"checkpoint's {part!r} optimizer has {len(saved['param_groups'])} parameter groups, this one {len(opt.param_groups)}")
    groups, start = [], 0
    for g, live in zip(saved["param_groups"], opt.param_groups):
        ids = list(range(start, start + len(live["params"])))
        if list(g["params"]) != [names[i] for i in ids]:
            raise ValueError(f"checkpoint's {part!r} optimizer groups its parameters differently")
        groups.append({**g, "params": ids})
        start += len(ids)
    # torch's load_state_dict replaces the whole state, so a part saved before its first step
    # comes back with none, as it was.
    opt.load_state_dict({"state": {index[n]: s for n, s in saved["state"].items()}, "param_groups": groups})


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _restore_rng(folder: Path) -> None:
    rank = _rank()
    own = _rng_file(folder, rank)
    if own.is_file():
        rng = torch.load(own, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        return
    base = torch.Generator()
    base.set_state(torch.load(_rng_file(folder, 0), weights_only=True)["torch"])
    torch.manual_seed(int(torch.randint(2**62, (1,), generator=base)) + rank)  # seeds CUDA too


def save_train_state(folder: str | Path, model: torch.nn.Module, optimizer: MuonAdamW) -> None:
    """Write `model`'s and `optimizer`'s state and this rank's RNG into `folder` (see the module
    docstring). Collective under a process group: each rank writes its own shards."""
    folder = Path(folder)
    model = _resharded(model)
    rank = _rank()
    if rank == 0:
        (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
    _barrier()  # the folder exists before any rank writes into it
    state = {
        "model": get_model_state_dict(model),  # sharded (DTensors) under FSDP2: each rank's own pieces
        "optim": {part: _optim_state(model, opt) for part, opt in optimizer.optimizers.items()},
    }
    with _quiet_single_process():
        dcp.save(state, checkpoint_id=folder / STATE_DIR)  # fsyncs its files
    torch.save(_rng_state(), _rng_file(folder, rank))
    _fsync(_rng_file(folder, rank))
    if rank == 0:
        meta = {
            "format": FORMAT,
            "world_size": dist.get_world_size() if _distributed() else 1,
            "param_names": _param_names(optimizer),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))
        _fsync(folder / META_FILE)
    _barrier()  # when any rank returns, the whole checkpoint is on disk


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's `train_meta.json`: format, world_size, param_names."""
    folder = Path(folder)
    if not is_sharded_checkpoint(folder):
        raise FileNotFoundError(f"{folder} is not a sharded training-state checkpoint (no {META_FILE} and {STATE_DIR}/.metadata)")
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder / META_FILE}: format {meta.get('format')!r}, this code reads format {FORMAT}")
    return meta


def load_train_state(folder: str | Path, model: torch.nn.Module, optimizer: MuonAdamW) -> None:
    """Restore `model`, both of `optimizer`'s parts (Muon's momentum included) and this rank's
    RNG from `folder`, into whatever sharding `model` has now (DCP reshards: N ranks -> M ranks
    or one plain process). Collective under a process group. Raises ValueError, before changing
    anything, if the checkpoint was saved for other parameters; on a world size other than the
    saved one the RNG follows the module docstring's rule."""
    folder = Path(folder)
    meta = read_meta(folder)
    _check_param_names(meta["param_names"], optimizer)
    model = _resharded(model)
    metadata = dcp.FileSystemReader(folder / STATE_DIR).read_metadata()
    state = {
        "model": get_model_state_dict(model),
        "optim": {part: _optim_template(model, opt, part, metadata) for part, opt in optimizer.optimizers.items()},
    }
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=folder / STATE_DIR)
    set_model_state_dict(model, state["model"])
    for part, opt in optimizer.optimizers.items():
        _load_optim_state(model, opt, part, state["optim"][part])
    _restore_rng(folder)
    _barrier()


def _shard_like(value: Any, like: Any) -> Any:
    """`value` (a full tensor, as every rank read it from the file) sliced to `like`'s sharding
    when `like` is a DTensor of its shape; otherwise `value` itself."""
    if isinstance(like, DTensor) and torch.is_tensor(value) and tuple(value.shape) == tuple(like.shape):
        # every rank holds the full tensor, so each takes its own piece without communicating
        return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
    return value


def load_legacy_train_state(folder: str | Path, model: torch.nn.Module, optimizer: MuonAdamW) -> None:
    """Restore `model` and `optimizer` from the single-file format (`model.pt`: the plain model's
    state_dict; `optimizer.pt`: `MuonAdamW.state_dict()`) into a plain or FSDP2-sharded model.
    Every rank reads both files whole. The RNG of that format is the caller's (`state.pt`)."""
    folder = Path(folder)
    model_sd = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    optim_sd = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    if optim_sd.get("param_names") is not None:
        _check_param_names(optim_sd["param_names"], optimizer)
    live = _resharded(model).state_dict()
    model.load_state_dict({k: _shard_like(v, live.get(k)) for k, v in model_sd.items()})
    for part, opt in optimizer.optimizers.items():
        if part not in optim_sd:
            continue  # MuonAdamW.load_state_dict reports the mismatch
        params = [p for g in opt.param_groups for p in g["params"]]
        saved = optim_sd[part]
        optim_sd[part] = {**saved, "state": {i: {k: _shard_like(v, params[i]) for k, v in s.items()} for i, s in saved["state"].items()}}
    optimizer.load_state_dict(optim_sd)
    _barrier()
