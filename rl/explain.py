"""`swarmrl config --explain`: every YAML key with its type, default and meaning."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rl.config import ExperimentConfig


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in typing.get_args(ann))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann))


def _optional_section(ann: Any) -> type[BaseModel] | None:
    """The section of a `Section | None` field (e.g. `policy.lora`), else None."""
    args = typing.get_args(ann)
    sections = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(args) == 2 and type(None) in args and len(sections) == 1:
        return sections[0]
    return None


def explain_lines(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[str]:
    lines: list[str] = []
    for name, field in model.model_fields.items():
        key = prefix + name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            required = " (required section)" if field.is_required() else ""
            lines.append(f"\n{key}:{required}  {field.description or ''}")
            sub = getattr(ann, "explain", None)
            lines.extend(sub(key + ".") if callable(sub) else explain_lines(ann, key + "."))
            continue
        optional = _optional_section(ann)
        if optional is not None:  # off unless the YAML sets it: the key, then the keys inside it
            lines.append(f"  {key}: mapping | null = null\n      {field.description or ''}")
            lines.extend(explain_lines(optional, key + "."))
            continue
        if field.is_required():
            default = "required"
        else:
            value = field.default_factory() if field.default_factory is not None else field.default
            default = "null" if value is None or value is PydanticUndefined else repr(value)
        lines.append(f"  {key}: {_type_name(ann)} = {default}\n      {field.description or ''}")
    return lines


def explain(section: str | None = None) -> str:
    model: type[BaseModel] = ExperimentConfig
    prefix = ""
    if section:
        field = ExperimentConfig.model_fields.get(section)
        if field is None:
            raise KeyError(section)
        model, prefix = field.annotation, section + "."
        sub = getattr(model, "explain", None)
        if callable(sub):
            return "\n".join(sub(prefix)).strip("\n")
    return "\n".join(explain_lines(model, prefix)).strip("\n")
