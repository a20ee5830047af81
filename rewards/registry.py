"""Reward registry: name → pure function.

Two kinds:
- `sample`: `fn(episode, task, verdict, **params) -> float`, one completion at a time;
- `group`:  `fn(episodes, tasks, verdicts, **params) -> list[float]`, the completions of one task
  together (rewards that compare a completion with its siblings, e.g. length).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable, Literal

Kind = Literal["sample", "group"]


@dataclass(frozen=True)
class RewardFn:
    name: str
    kind: Kind
    fn: Callable
    params: tuple[str, ...]  # keyword parameters the YAML may set


_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str, kind: Kind = "sample"):
    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        params = tuple(p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)
        _REGISTRY[name] = RewardFn(name, kind, fn, params)
        return fn

    return deco


def get_reward(name: str) -> RewardFn:
    _load_builtins()
    if name not in _REGISTRY:
        guess = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise ValueError(f"unknown reward {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def reward_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # the built-in components register themselves on import
    import rewards.components  # noqa: F401
