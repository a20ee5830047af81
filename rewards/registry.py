"""Reward registry: name → pure function (the verl `reward_fn` pattern, looked up by name from YAML).

Two kinds:
- `sample`: `fn(episode, task, verdict, **params) -> float`, one completion at a time;
- `group`:  `fn(episodes, tasks, verdicts, **params) -> list[float]`, the completions of one task
  together (rewards that compare a completion with its siblings, e.g. `length`).

The parameters a YAML may set are the function's arguments after the first three; their type
annotations (including `Annotated[..., Field(ge=1)]` bounds) are checked when the config is
validated, so a bad parameter is a config error and not an exception on every sample.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import TypeAdapter, ValidationError

Kind = Literal["sample", "group"]
KINDS: tuple[str, ...] = ("sample", "group")


@dataclass(frozen=True)
class RewardFn:
    """A registered reward: its name, kind, function and the parameters the YAML may set."""

    name: str
    kind: Kind
    fn: Callable[..., Any]
    params: tuple[str, ...]  # settable parameter names, in signature order
    any_params: bool = False  # the function takes **kwargs: every name is accepted
    _types: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params validated against the signature (names and annotated types), coerced.

        Raises ValueError naming the reward and the parameter.
        """
        out = {}
        for key, value in params.items():
            if key not in self.params and not self.any_params:
                guess = difflib.get_close_matches(key, self.params, n=1)
                hint = f" Did you mean {guess[0]!r}?" if guess else ""
                known = ", ".join(self.params) or "none"
                raise ValueError(f"reward {self.name!r} has no parameter {key!r}.{hint} (parameters: {known})")
            if key in self._types:
                try:
                    value = TypeAdapter(self._types[key]).validate_python(value)
                except ValidationError as e:
                    msg = "; ".join(err["msg"] for err in e.errors())
                    raise ValueError(f"reward {self.name!r} parameter {key!r}: {msg} (got {value!r})") from None
            out[key] = value
        return out


_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str, kind: Kind = "sample") -> Callable[[Callable], Callable]:
    """Decorator: register `fn` under `name`. The function is returned unchanged."""
    if kind not in KINDS:
        raise ValueError(f"reward {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def deco(fn: Callable) -> Callable:
        spec = _spec(name, kind, fn)
        old = _REGISTRY.get(name)
        # re-importing the same module (reload, notebooks) re-registers the same function: allowed;
        # two different functions under one name would make the YAML ambiguous
        if old is not None and _origin(old.fn) != _origin(fn):
            raise ValueError(f"reward {name!r} is already registered by {'.'.join(_origin(old.fn))}")
        _REGISTRY[name] = spec
        return fn

    return deco


def get_reward(name: str) -> RewardFn:
    """The registered reward `name`; ValueError with a did-you-mean and the known names otherwise."""
    if name not in _REGISTRY:
        guess = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise ValueError(f"unknown reward {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def reward_names() -> list[str]:
    return sorted(_REGISTRY)


def _origin(fn: Callable) -> tuple[str, str]:
    return (getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", repr(fn)))


def _spec(name: str, kind: Kind, fn: Callable) -> RewardFn:
    sig = inspect.signature(fn)
    P = inspect.Parameter
    ps = list(sig.parameters.values())
    positional = [p for p in ps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is P.VAR_POSITIONAL for p in ps)
    if len(positional) < 3 and not takes_varargs:
        what = "episodes, tasks, verdicts" if kind == "group" else "episode, task, verdict"
        raise ValueError(f"reward {name!r}: {fn.__name__} must take ({what}, **params), has {sig}")
    settable = [p for p in positional[3:] if p.kind is P.POSITIONAL_OR_KEYWORD] + [p for p in ps if p.kind is P.KEYWORD_ONLY]
    required = [p.name for p in settable if p.default is P.empty]
    if required:
        # the scorer calls fn with only the YAML's params; a required one would fail on every sample
        raise ValueError(f"reward {name!r}: parameters {required} need defaults")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {}  # unresolvable annotations: names are still checked, types are not
    return RewardFn(
        name=name,
        kind=kind,
        fn=fn,
        params=tuple(p.name for p in settable),
        any_params=any(p.kind is P.VAR_KEYWORD for p in ps),
        _types={p.name: hints[p.name] for p in settable if p.name in hints},
    )
