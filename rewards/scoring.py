"""Score a step's episodes: every configured component, the weights in force, the total.

    total_i = Σ_c w_c(step) · r_c(i)

Sample rewards are called once per completion; group rewards once per group of completions of
one task (episodes sharing `Episode.group`), in batch order within the group.

Faults are contained, never raised: if a reward function raises, returns a non-finite value, or
(group rewards) returns the wrong number of values, the affected completions score 0 for that
component, the component's name goes into their `RewardBreakdown.errors`, and the count goes
into `Scored.errors[name]` and the metric `reward_errors/<name>` (the first message per
component into `Scored.error_messages`). Every component is computed even when its weight is 0
at this step, so its value is still logged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from envs.base import Task, Verdict
from rewards.registry import get_reward
from rewards.schedule import RewardsConfig
from rewards.self_verification import calibration_metrics, parse_self_verdict
from rollout.episode import Episode, RewardBreakdown


@dataclass
class Scored:
    """What `score_batch` returns.

    - `breakdowns[i]`: the `RewardBreakdown` of `episodes[i]` (components, weights, total, errors);
    - `metrics`: for MLflow: `reward/<c>` (batch mean, errored samples as 0), `weight/<c>`,
      `reward_errors/<c>`, `reward_errors/total`, and the `self_verify/*` calibration metrics
      when `self_verification` is configured;
    - `errors`: number of completions whose component `c` failed, for every configured `c`;
    - `error_messages`: the first failure message of each component that failed.
    """

    breakdowns: list[RewardBreakdown]
    metrics: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_messages: dict[str, str] = field(default_factory=dict)


def score_batch(episodes: list[Episode], tasks: list[Task], verdicts: list[Verdict], schedule: RewardsConfig, step: int) -> Scored:
    """Score `episodes[i]` (on `tasks[i]`, judged `verdicts[i]`) with every component of `schedule` at `step`."""
    n = len(episodes)
    if len(tasks) != n or len(verdicts) != n:
        raise ValueError(f"episodes ({n}), tasks ({len(tasks)}) and verdicts ({len(verdicts)}) differ in size")
    weights = schedule.weights_at(step)
    values: dict[str, list[float]] = {}
    failed: dict[str, list[bool]] = {}
    messages: dict[str, str] = {}

    for name, comp in schedule.items():
        spec = get_reward(name)
        vals, errs = [0.0] * n, [False] * n

        def note(msg: str, name: str = name) -> None:
            messages.setdefault(name, msg)

        if spec.kind == "sample":
            for i in range(n):
                vals[i], errs[i] = _contained(lambda i=i: spec.fn(episodes[i], tasks[i], verdicts[i], **comp.params), note)
        else:
            groups: dict[Any, list[int]] = defaultdict(list)
            for i, e in enumerate(episodes):
                groups[e.group].append(i)
            for idx in groups.values():
                out, err = _call_group(spec.fn, [episodes[i] for i in idx], [tasks[i] for i in idx], [verdicts[i] for i in idx], comp.params)
                if err is not None:
                    note(err)
                    out = [math.nan] * len(idx)
                for i, v in zip(idx, out):
                    vals[i], errs[i] = _contained(lambda v=v: v, note)
        values[name], failed[name] = vals, errs

    breakdowns = []
    for i in range(n):
        comps = {c: values[c][i] for c in values}
        breakdowns.append(
            RewardBreakdown(
                components=comps,
                weights=dict(weights),
                total=sum(weights[c] * comps[c] for c in comps),
                errors=[c for c in values if failed[c][i]],
            )
        )

    errors = {c: sum(failed[c]) for c in values}
    metrics: dict[str, float] = {}
    for c in values:
        if n:
            metrics[f"reward/{c}"] = sum(values[c]) / n
        metrics[f"weight/{c}"] = weights[c]
        metrics[f"reward_errors/{c}"] = float(errors[c])
    metrics["reward_errors/total"] = float(sum(errors.values()))
    if "self_verification" in values and n:
        metrics.update(calibration_metrics([parse_self_verdict(e.completion_text) for e in episodes], [v.passed for v in verdicts]))
    return Scored(breakdowns, metrics, errors, messages)


def _call_group(fn: Callable, episodes, tasks, verdicts, params) -> tuple[list, str | None]:
    try:
        out = list(fn(episodes, tasks, verdicts, **params))
    except Exception as e:  # a reward bug must not stop the run
        return [], f"{type(e).__name__}: {e}"
    if len(out) != len(episodes):
        return [], f"returned {len(out)} values for a group of {len(episodes)}"
    return out, None


def _contained(compute: Callable[[], Any], note: Callable[[str], None]) -> tuple[float, bool]:
    try:
        v = float(compute())
    except Exception as e:  # a reward bug must not stop the run
        note(f"{type(e).__name__}: {e}")
        return 0.0, True
    if not math.isfinite(v):
        note(f"non-finite value {v}")
        return 0.0, True
    return v, False
