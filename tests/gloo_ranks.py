"""Run a function on N spawned CPU processes that form one `gloo` process group (the tests of the
sharded learner's pieces). Results come back through `torch.save` files: a Queue carrying tensors
breaks across spawned processes, a file does not."""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn: Callable[[int, Path], Any], rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = fn(rank, Path(tmp))
    except BaseException:
        out = {"error": traceback.format_exc()}
    torch.save(out, Path(tmp) / f"rank{rank}.pt")
    dist.destroy_process_group()


def run_ranks(fn: Callable[[int, Path], Any], world: int, tmp: Path, timeout_s: float = 180) -> list[Any]:
    """`fn(rank, tmp)` on `world` ranks (a module-level function: spawn pickles it by name); each
    rank's return value, and an assertion error naming the rank whose call raised or hung."""
    ctx = torch.multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, str(tmp))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout_s)
    for p in procs:
        if p.is_alive():
            p.kill()
    results = [torch.load(tmp / f"rank{r}.pt", weights_only=False) if (tmp / f"rank{r}.pt").exists() else {"error": "no result (killed or hung)"} for r in range(world)]
    for r, res in enumerate(results):
        assert not (isinstance(res, dict) and "error" in res), f"rank {r}:\n{res['error']}"
    return results
