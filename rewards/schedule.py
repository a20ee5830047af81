"""Reward schedules: the weight of each reward component as a function of the training step.

The scheduled total reward of a completion is `R = Σ_c w_c(step) · r_c`. The `rewards` section of
an experiment YAML names the components, each with a weight and optional parameters:

    rewards:
      outcome: {weight: 1.0}                         # a bare number is a constant weight
      format:
        weight: {kind: linear, start: 0.2, end: 0.0, start_step: 0, end_step: 100}
      instantiation:
        weight: {kind: linear, start: 0.3, end: 0.0, end_step: 200}
        params: {cap: 4}                             # keyword parameters of the reward function

Schedule kinds (`weight_at(step)`; every schedule is constant outside its step range):
- `constant`: {value}
- `linear`:   {start, end, start_step=0, end_step}: start → end linearly over [start_step, end_step]
- `cosine`:   same fields, w = end + (start - end)·(1 + cos(π·t))/2 with t the progress in [0, 1]
- `step`:     {before, after, at}: `before` until step at-1, `after` from step `at` on; or
              {points: [[step, value], ...]}: the value of the last point at or before the step
              (the first value before the first point)
- `piecewise`: {points: [[step, value], ...]}: linear between points

Validation (config errors): unknown component names (with a did-you-mean), a component without
`weight`, parameters the reward function does not take or of the wrong type, negative steps,
`end_step <= start_step`, point steps not strictly increasing, non-finite values.

PARL's λ1 (`instantiation`) and λ2 (`finish`) anneal to 0 by default, as in the Kimi K2.5
report: inside an experiment config, a bare number λ for these two means `linear` from λ at step 0
to 0 at the run's last step (`train.steps`), see `apply_parl_defaults`. Write
`{kind: constant, value: λ}` to keep them fixed. `RewardsConfig` validated on its own (without a
run length) reads every bare number as constant.
"""

from __future__ import annotations

import difflib
import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from rewards.registry import get_reward, reward_names


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Point = tuple[Annotated[int, Field(ge=0)], float]


def _check_points(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    steps = [s for s, _ in points]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"point steps must increase strictly, got {steps}")
    return points


def _lerp(a: float, b: float, t: float) -> float:
    # exact at both ends (t = 0 → a, t = 1 → b), so an anneal to 0 really reaches 0
    return (1.0 - t) * a + t * b


class Constant(_Schedule):
    """w(step) = value."""

    kind: Literal["constant"] = "constant"
    value: float = Field(..., description="The weight at every step.")

    def weight_at(self, step: int) -> float:
        return self.value


class _Ramp(_Schedule):
    start: float = Field(..., description="Weight at and before start_step.")
    end: float = Field(..., description="Weight at and after end_step.")
    start_step: int = Field(0, ge=0, description="First step of the ramp.")
    end_step: int = Field(..., ge=0, description="Step where the ramp reaches `end`.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_step <= self.start_step:
            raise ValueError(f"end_step ({self.end_step}) must be after start_step ({self.start_step})")
        return self

    def _progress(self, step: int) -> float:
        return min(1.0, max(0.0, (step - self.start_step) / (self.end_step - self.start_step)))


class Linear(_Ramp):
    """w = start + (end - start)·t, t = clip((step - start_step)/(end_step - start_step), 0, 1)."""

    kind: Literal["linear"]

    def weight_at(self, step: int) -> float:
        return _lerp(self.start, self.end, self._progress(step))


class Cosine(_Ramp):
    """w = end + (start - end)·(1 + cos(π·t))/2, t as for `linear` (slow, fast, slow)."""

    kind: Literal["cosine"]

    def weight_at(self, step: int) -> float:
        return _lerp(self.end, self.start, 0.5 * (1.0 + math.cos(math.pi * self._progress(step))))


class Step(_Schedule):
    """Piecewise constant: {before, after, at} or {points: [[step, value], ...]}."""

    kind: Literal["step"]
    before: Optional[float] = Field(None, description="Weight before step `at`.")
    after: Optional[float] = Field(None, description="Weight from step `at` on.")
    at: Optional[int] = Field(None, ge=0, description="The step where the weight changes.")
    points: Optional[list[Point]] = Field(
        None, min_length=1, description="[[step, weight], ...]: each weight holds from its step on (alternative to before/after/at)."
    )

    @field_validator("points")
    @classmethod
    def _increasing(cls, pts):
        return pts if pts is None else _check_points(pts)

    @model_validator(mode="after")
    def _one_form(self):
        simple = (self.before, self.after, self.at)
        if self.points is not None:
            if any(v is not None for v in simple):
                raise ValueError("give either `points` or `before`/`after`/`at`, not both")
        elif any(v is None for v in simple):
            missing = [k for k, v in zip(("before", "after", "at"), simple) if v is None]
            raise ValueError(f"step schedule needs `before`, `after` and `at` (missing: {', '.join(missing)}), or `points`")
        return self

    def weight_at(self, step: int) -> float:
        if self.points is None:
            return self.before if step < self.at else self.after
        value = self.points[0][1]
        for s, v in self.points:
            if step < s:
                break
            value = v
        return value


class Piecewise(_Schedule):
    """Linear between consecutive points, constant before the first and after the last."""

    kind: Literal["piecewise"]
    points: list[Point] = Field(..., min_length=1, description="[[step, weight], ...] with strictly increasing steps.")

    @field_validator("points")
    @classmethod
    def _increasing(cls, pts):
        return _check_points(pts)

    def weight_at(self, step: int) -> float:
        pts = self.points
        if step <= pts[0][0]:
            return pts[0][1]
        for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
            if step <= s1:
                return _lerp(v0, v1, (step - s0) / (s1 - s0))
        return pts[-1][1]


Schedule = Annotated[Union[Constant, Linear, Cosine, Step, Piecewise], Field(discriminator="kind")]


class Component(BaseModel):
    """One reward component: its weight schedule and the keyword parameters of its function."""

    model_config = ConfigDict(extra="forbid")
    weight: Schedule = Field(..., description="A number (constant) or a schedule mapping with `kind`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword parameters of the reward function.")

    @field_validator("weight", mode="before")
    @classmethod
    def _bare_number(cls, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return {"kind": "constant", "value": v}
        return v


ANNEALED_BY_DEFAULT = ("instantiation", "finish")


def apply_parl_defaults(rewards: dict, total_steps: int) -> dict:
    """Raw `rewards` mapping with bare-number weights of λ1/λ2 rewritten as linear anneals to 0 at `total_steps`.

    Applied by the experiment config before validation (it knows `train.steps`); anything that is
    not a bare number is left for validation to judge.
    """
    out = dict(rewards)
    for name in ANNEALED_BY_DEFAULT:
        comp = out.get(name)
        w = comp.get("weight") if isinstance(comp, dict) else None
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            anneal = {"kind": "linear", "start": float(w), "end": 0.0, "start_step": 0, "end_step": max(1, int(total_steps))}
            out[name] = {**comp, "weight": anneal}
    return out


class RewardsConfig(RootModel[dict[str, Component]]):
    """Reward components by name (see `rewards.reward_names()`), each with a weight schedule and parameters."""

    root: dict[str, Component] = Field(default_factory=lambda: {"outcome": Component(weight=1.0)})

    @model_validator(mode="after")
    def _known_components(self):
        if not self.root:
            raise ValueError("at least one reward component is needed, e.g. `outcome: {weight: 1.0}`")
        known = reward_names()
        for name, comp in self.root.items():
            if name not in known:
                guess = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean {guess[0]!r}?" if guess else ""
                raise ValueError(f"unknown reward component {name!r}.{hint} Known: {', '.join(known)}")
            comp.params = get_reward(name).check_params(comp.params)
        return self

    def weights_at(self, step: int) -> dict[str, float]:
        """The weight of every component at `step`."""
        return {name: c.weight.weight_at(step) for name, c in self.root.items()}

    def items(self):
        return self.root.items()

    @classmethod
    def explain(cls, prefix: str) -> list[str]:
        return [
            f"  {prefix}<component>.weight: float | schedule = required\n"
            "      Weight of the component; a number, or {kind: constant|linear|cosine|step|piecewise, ...}.",
            f"  {prefix}<component>.params: mapping = {{}}\n      Keyword parameters of the reward function.",
            f"      components: {', '.join(reward_names())}; default: outcome with weight 1.0.",
            "      instantiation and finish (PARL λ1, λ2): a bare number anneals linearly to 0 over train.steps.",
        ]
