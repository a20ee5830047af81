"""Learning-rate schedules over an RL run, as a factor on each parameter group's base lr.

A time-capped run (`train.max_minutes`) does not know its step count in advance, so the
schedule follows the run's *progress*: the larger of the share of `train.steps` done and the
share of `train.max_minutes` spent. A run cut by its time cap has then finished its decay when
it stops, whatever the machine's speed.

Why decay at all: Muon's update has a fixed size whatever the gradient's (the orthogonalised
momentum has unit singular values), so with a small RL batch the policy keeps moving by a full
step of noise; ending the run at a lower lr lets it settle instead of stopping at a random
point of its oscillation.
"""

from __future__ import annotations

import math
from typing import Callable

SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
}


def run_progress(step: int, total_steps: int, elapsed_s: float, max_minutes: float | None) -> float:
    """Share of the run done after `step` steps and `elapsed_s` seconds of RL, in [0, 1]."""
    progress = step / total_steps
    if max_minutes is not None:
        progress = max(progress, elapsed_s / (60.0 * max_minutes))
    return min(max(progress, 0.0), 1.0)


def lr_factor(name: str, progress: float, step: int, *, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Multiplier on the base lr for the update of `step` (1-based) at run `progress`.

    Linear warm-up over the first `warmup_steps` updates, then the named decay from 1 down to
    `min_ratio` as progress goes from 0 to 1.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; known: {sorted(SCHEDULES)}")
    warm = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * (min_ratio + (1.0 - min_ratio) * SCHEDULES[name](progress))


def set_lr_factor(param_groups: list[dict], base_lrs: list[float], factor: float) -> None:
    """Write `base * factor` into every group (the groups of all parts of a MuonAdamW optimizer)."""
    for group, base in zip(param_groups, base_lrs, strict=True):
        group["lr"] = base * factor
