"""Name → function registries for advantage estimators and policy losses."""

from __future__ import annotations

from typing import Callable

ADVANTAGES: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}


def _register(table: dict[str, Callable], name: str):
    def deco(fn: Callable) -> Callable:
        table[name] = fn
        return fn

    return deco


def register_advantage(name: str):
    return _register(ADVANTAGES, name)


def register_policy_loss(name: str):
    return _register(POLICY_LOSSES, name)


def _get(table: dict[str, Callable], kind: str, name: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def get_advantage(name: str) -> Callable:
    return _get(ADVANTAGES, "advantage estimator", name)


def get_policy_loss(name: str) -> Callable:
    return _get(POLICY_LOSSES, "policy loss", name)
