"""Training tasks for a step, optionally re-weighted by difficulty level.

`env.level_weights` changes how often each level is trained on without touching the env or its
held-out split (evaluation keeps the env's own level mix). The env's sampler is the proposal and
each task is kept with probability `w[level] / max(w)`: rejection sampling, so the kept tasks
follow the weighted mix exactly whatever env produced them, and the draw depends only on the rng.

Why: a level the policy has solved (every completion of a group right) or cannot touch (every
one wrong) gives groups with no reward variance, which GRPO drops; their rollouts are spent for
nothing. Down-weighting such a level spends the rollout budget where the gradient is.
"""

from __future__ import annotations

import numpy as np

from envs.base import Task


def sample_tasks(env, n: int, rng: np.random.Generator, level_weights: dict[int, float] | None = None) -> list[Task]:
    """`n` training tasks; with `level_weights`, levels are drawn in proportion to them
    (levels not listed, and tasks without a level, weigh 1)."""
    if not level_weights:
        return env.sample(n, rng)
    top = max(1.0, *level_weights.values())  # unlisted levels weigh 1, so 1 bounds them too
    kept: list[Task] = []
    while len(kept) < n:
        for task in env.sample(n, rng):
            w = level_weights.get(task.payload.get("level"), 1.0)
            if rng.random() < w / top:
                kept.append(task)
    return kept[:n]
