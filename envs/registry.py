"""Environment factory: env name → constructor."""

from __future__ import annotations

from typing import Any

from envs.base import Env


def make_env(name: str, **kwargs: Any) -> Env:
    if name == "math":
        from envs.math import MathEnv

        return MathEnv(**kwargs)
    raise ValueError(f"unknown env {name!r}; known: math")
