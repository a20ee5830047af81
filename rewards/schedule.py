"""Reward schedules: the weight of each reward component as a function of the training step.

The scheduled total reward of a completion is `R = Σ_c w_c(step) · r_c`. In YAML:

    rewards:
      outcome: {weight: 1.0}                         # a bare number is a constant weight
      format:
        weight: {kind: linear, start: 0.2, end: 0.0, start_step: 0, end_step: 100}
        params: {}                                   # keyword parameters of the reward function

Schedule kinds: `constant` (value), `linear` and `cosine` (start → end between start_step and
end_step, constant outside), `step` (value before `at`, `after` from `at` on), `piecewise`
(points [[step, value], ...], linear in between, constant outside).

PARL's λ1 (`instantiation`) and λ2 (`finish`) anneal to 0 by default, as in the Kimi K2.5
report: for these two, a bare number λ means `linear` from λ to 0 over the run's `train.steps`.
Write `{kind: constant, value: λ}` to keep them fixed.
"""

from __future__ import annotations

import difflib
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Constant(_Schedule):
    kind: Literal["constant"] = "constant"
    value: float = Field(..., description="The weight at every step.")

    def weight_at(self, step: int) -> float:
        return self.value


class _Ramp(_Schedule):
    start: float = Field(..., description="Weight at and before start_step.")
    end: float = Field(..., description="Weight at and after end_step.")
    start_step: int = Field(0, ge=0, description="First step of the ramp.")
    end_step: int = Field(..., ge=0, description="Last step of the ramp.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_step <= self.start_step:
            raise ValueError(f"end_step ({self.end_step}) must be after start_step ({self.start_step})")
        return self

    def _progress(self, step: int) -> float:
        return min(1.0, max(0.0, (step - self.start_step) / (self.end_step - self.start_step)))


class Linear(_Ramp):
    kind: Literal["linear"]

    def weight_at(self, step: int) -> float:
        return self.start + (self.end - self.start) * self._progress(step)


class Cosine(_Ramp):
    kind: Literal["cosine"]

    def weight_at(self, step: int) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * self._progress(step)))


class Step(_Schedule):
    kind: Literal["step"]
    before: float = Field(..., description="Weight before step `at`.")
    after: float = Field(..., description="Weight from step `at` on.")
    at: int = Field(..., ge=0, description="The step where the weight changes.")

    def weight_at(self, step: int) -> float:
        return self.before if step < self.at else self.after


class Piecewise(_Schedule):
    kind: Literal["piecewise"]
    points: list[tuple[int, float]] = Field(..., min_length=1, description="[[step, weight], ...] with increasing steps.")

    @field_validator("points")
    @classmethod
    def _increasing(cls, pts):
        steps = [s for s, _ in pts]
        if any(s < 0 for s in steps):
            raise ValueError("steps must be >= 0")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"steps must increase strictly, got {steps}")
        return pts

    def weight_at(self, step: int) -> float:
        pts = self.points
        if step <= pts[0][0]:
            return pts[0][1]
        for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
            if step <= s1:
                return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        return pts[-1][1]


Schedule = Annotated[Union[Constant, Linear, Cosine, Step, Piecewise], Field(discriminator="kind")]


class Component(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: Schedule = Field(..., description="Constant number or a schedule mapping with `kind`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword parameters of the reward function.")

    @field_validator("weight", mode="before")
    @classmethod
    def _bare_number(cls, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return {"kind": "constant", "value": float(v)}
        return v


ANNEALED_BY_DEFAULT = ("instantiation", "finish")


def apply_parl_defaults(rewards: dict, total_steps: int) -> dict:
    """Rewrite bare-number weights of the PARL shaping terms as linear anneals to 0 by `total_steps`."""
    out = dict(rewards)
    for name in ANNEALED_BY_DEFAULT:
        comp = out.get(name)
        if isinstance(comp, dict) and isinstance(comp.get("weight"), (int, float)) and not isinstance(comp.get("weight"), bool):
            weight = {"kind": "linear", "start": float(comp["weight"]), "end": 0.0, "start_step": 0, "end_step": max(1, total_steps)}
            out[name] = {**comp, "weight": weight}
    return out


class RewardsConfig(RootModel[dict[str, Component]]):
    """Reward components by name, each with a weight schedule and parameters."""

    root: dict[str, Component] = Field(default_factory=lambda: {"outcome": Component(weight=1.0)})

    @model_validator(mode="after")
    def _known_components(self):
        from rewards.registry import reward_names, get_reward

        if not self.root:
            raise ValueError("at least one reward component is needed, e.g. `outcome: {weight: 1.0}`")
        known = reward_names()
        for name, comp in self.root.items():
            if name not in known:
                guess = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean {guess[0]!r}?" if guess else ""
                raise ValueError(f"unknown reward component {name!r}.{hint} Known: {', '.join(known)}")
            allowed = get_reward(name).params
            for p in comp.params:
                if p not in allowed:
                    raise ValueError(f"reward {name!r} has no parameter {p!r} (parameters: {', '.join(allowed) or 'none'})")
        return self

    def weights_at(self, step: int) -> dict[str, float]:
        return {name: c.weight.weight_at(step) for name, c in self.root.items()}

    def items(self):
        return self.root.items()

    @classmethod
    def explain(cls, prefix: str) -> list[str]:
        from rewards.registry import reward_names

        return [
            f"  {prefix}<component>.weight: float | schedule = required\n"
            "      Weight of the component; a number, or {kind: constant|linear|cosine|step|piecewise, ...}.",
            f"  {prefix}<component>.params: mapping = {{}}\n      Keyword parameters of the reward function.",
            f"      components: {', '.join(reward_names())}; default: outcome with weight 1.0.",
            "      instantiation and finish (PARL λ1, λ2): a bare number anneals linearly to 0 over train.steps.",
        ]
