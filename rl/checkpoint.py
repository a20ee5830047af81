"""Checkpoints: model, optimizer, RNG states and loop position, written atomically.

A checkpoint is a folder `checkpoints/step_000040/` written under a temporary name and renamed
into place when complete, so a run killed mid-write leaves the previous checkpoint intact.

What it holds: `model.pt` (the whole weights; `swarmrl export` and `eval` read it), `state.pt`
(step, RNGs, the loop's extra state), `ema.pt` where the run evaluates a weight average, and the
learner's training state: `optimizer.pt` from one learner, or `train_state/` (model and optimizer
sharded with `torch.distributed.checkpoint`) from N learner ranks. Either loads at any number of
ranks (`rl.distributed.checkpoint`).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: Any,
    extra: dict[str, Any],
    keep: int = 2,
    average: dict[str, torch.Tensor] | None = None,
    write_train_state: Callable[[Path], None] | None = None,
) -> Path:
    """`average`: the evaluated weight average (`train.eval_ema`), saved as `ema.pt`.
    `write_train_state(folder)`, where given, writes the model and optimizer in place of
    `model.pt` + `optimizer.pt` (learner ranks write their shards themselves, `rl.learner_group`)."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if write_train_state is not None:
        write_train_state(tmp)
    else:
        torch.save(model.state_dict(), tmp / "model.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if average is not None:
        torch.save(average, tmp / "ema.pt")
    torch.save(
        {
            "step": step,
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state(),
            "extra": extra,
        },
        tmp / "state.pt",
    )
    for f in tmp.rglob("*"):  # the rename below must not publish data still in the page cache only
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


POLICY_SKELETON = "policy"


def save_policy_skeleton(model: torch.nn.Module, tokenizer: Any, processor: Any, run_dir: Path) -> Path:
    """`<run_dir>/policy/`: the model's config, tokenizer (with its chat template) and processor,
    no weights. With a checkpoint's `model.pt` it is a whole model (`rl.export`)."""
    out = Path(run_dir) / POLICY_SKELETON
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    (processor if processor is not None else tokenizer).save_pretrained(out)
    return out


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(p for p in checkpoint_dir(run_dir).glob("step_*") if p.is_dir())
    return found[-1] if found else None


def load_checkpoint(path: Path, learner: Any) -> dict[str, Any]:
    """Restore the learner's weights and optimizer (`learner.load_train_state`: a checkpoint
    written by any number of learner ranks) and the global RNGs in place; returns {"step", "extra"}."""
    learner.load_train_state(path)
    state = torch.load(path / "state.pt", weights_only=False)
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    return {"step": state["step"], "extra": state["extra"]}


def load_average(path: Path) -> dict[str, torch.Tensor] | None:
    """The checkpoint's weight average (`ema.pt`), or None if it was saved without one."""
    f = Path(path) / "ema.pt"
    return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None
