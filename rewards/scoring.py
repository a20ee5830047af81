"""Score a step's episodes: every configured component, the weights in force, the total.

A reward function that raises (or returns a non-finite value) is contained: that completion
scores 0 for that component, the component's name goes into `RewardBreakdown.errors`, and the
error count is reported in the metrics. The run goes on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from envs.base import Task, Verdict
from rewards.registry import get_reward
from rewards.schedule import RewardsConfig
from rollout.episode import Episode, RewardBreakdown


@dataclass
class Scored:
    breakdowns: list[RewardBreakdown]
    metrics: dict[str, float] = field(default_factory=dict)  # reward/<c>, weight/<c>, reward_errors/<c>


def score_batch(episodes: list[Episode], tasks: list[Task], verdicts: list[Verdict], rewards: RewardsConfig, step: int) -> Scored:
    n = len(episodes)
    weights = rewards.weights_at(step)
    values: dict[str, list[float]] = {}
    errors: dict[str, list[bool]] = {}
    for name, comp in rewards.items():
        spec = get_reward(name)
        vals, errs = [0.0] * n, [False] * n
        if spec.kind == "sample":
            for i in range(n):
                vals[i], errs[i] = _safe(lambda: spec.fn(episodes[i], tasks[i], verdicts[i], **comp.params))
        else:
            by_group: dict[int, list[int]] = defaultdict(list)
            for i, e in enumerate(episodes):
                by_group[e.group].append(i)
            for idx in by_group.values():
                try:
                    out = spec.fn([episodes[i] for i in idx], [tasks[i] for i in idx], [verdicts[i] for i in idx], **comp.params)
                    if len(out) != len(idx):
                        raise ValueError(f"group reward {name!r} returned {len(out)} values for {len(idx)} completions")
                except Exception:
                    out = [math.nan] * len(idx)
                for i, v in zip(idx, out):
                    vals[i], errs[i] = _safe(lambda v=v: v)
        values[name], errors[name] = vals, errs

    breakdowns = []
    for i in range(n):
        comps = {c: values[c][i] for c in values}
        breakdowns.append(
            RewardBreakdown(
                components=comps,
                weights=dict(weights),
                total=sum(weights[c] * comps[c] for c in comps),
                errors=[c for c in values if errors[c][i]],
            )
        )
    metrics: dict[str, float] = {}
    for c in values:
        metrics[f"reward/{c}"] = sum(values[c]) / max(n, 1)
        metrics[f"weight/{c}"] = weights[c]
        metrics[f"reward_errors/{c}"] = float(sum(errors[c]))
    if "self_verification" in values:
        from rewards.self_verification import calibration_metrics, parse_self_verdict

        metrics.update(calibration_metrics([parse_self_verdict(e.completion_text) for e in episodes], [v.passed for v in verdicts]))
    return Scored(breakdowns, metrics)


def _safe(compute) -> tuple[float, bool]:
    try:
        v = float(compute())
    except Exception:
        return 0.0, True
    if not math.isfinite(v):
        return 0.0, True
    return v, False
