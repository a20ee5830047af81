"""Environment factory: env name → constructor."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envs.base import Env, Verdict


def make_env(name: str, **kwargs: Any) -> Env:
    if name == "math":
        from envs.math import MathEnv

        return MathEnv(**kwargs)
    if name == "code":
        from envs.code import CodeEnv

        return CodeEnv(**kwargs)
    if name == "prover":
        from envs.prover import ProverEnv

        return ProverEnv(**kwargs)
    if name == "swarm":
        from envs.swarm import SwarmEnv

        return SwarmEnv(**kwargs)
    if name == "vision":
        from envs.vision import VisionEnv

        return VisionEnv(**kwargs)
    if name == "dataset":
        from envs.dataset import DatasetEnv

        return DatasetEnv(**kwargs)
    if name == "tool_math":
        from envs.tool_math import ToolMathEnv

        return ToolMathEnv(**kwargs)
    raise ValueError(f"unknown env {name!r}; known: math, code, prover, swarm, vision, dataset, tool_math")


def env_kwargs(cfg) -> dict[str, Any]:
    """Constructor arguments of the env an experiment config names."""
    kw: dict[str, Any] = {"levels": tuple(cfg.env.levels), "eval_size": cfg.env.eval_size, "heldout_fraction": cfg.env.heldout_fraction}
    if cfg.env.name == "math":
        kw["fixed_width"] = cfg.env.fixed_width
    if cfg.env.name == "swarm" and cfg.env.parallel_fraction is not None:
        kw["parallel_fraction"] = cfg.env.parallel_fraction
    if cfg.env.name == "dataset":
        e = cfg.env
        kw.update(
            path=e.path, eval_path=e.eval_path, prompt_key=e.prompt_key, answer_key=e.answer_key, verifier=e.verifier,
            solution_key=e.solution_key, entry_point_key=e.entry_point_key, level_key=e.level_key,
        )
    if cfg.env.name == "tool_math":
        if cfg.env.tools is not None:
            kw["tools"] = tuple(cfg.env.tools)
        if cfg.env.tool_fraction is not None:
            kw["tool_fraction"] = cfg.env.tool_fraction
    if cfg.env.name in ("code", "prover", "tool_math") or (cfg.env.name == "dataset" and cfg.env.verifier == "code"):
        kw.update(timeout_s=cfg.sandbox.timeout_s, allow_unisolated=cfg.sandbox.allow_unisolated)
        if cfg.sandbox.memory_mb is not None:
            kw["memory_mb"] = cfg.sandbox.memory_mb
    return kw


def verify_batch(env: Env, tasks: list, completions: list[str], workers: int = 1) -> list:
    """Verify many completions; envs whose checks run in the sandbox verify `workers` at a time.

    A check is a pure function of (task, completion), so each distinct pair is checked once and
    its verdict copied to the duplicates: a sharpened policy samples the same completion many
    times per group, and a sandboxed check costs a process. A check that raises does not fail
    the step: its completion fails with score 0 and the verdict is marked (`verifier_errors`
    counts them)."""

    def check(task, completion) -> Verdict:
        try:
            return env.verify(task, completion)
        except Exception as e:  # a crashed checker is a fault of ours, not a reason to lose the step
            return Verdict(passed=False, score=0.0, parsed=False, reason=f"verifier error: {type(e).__name__}: {e}", details={VERIFIER_ERROR: True})

    keys = [(t.id, t.prompt, c) for t, c in zip(tasks, completions)]
    first: dict[tuple, int] = {}  # distinct pair -> index of its first occurrence, in batch order
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    todo = list(first.values())
    if workers <= 1 or not getattr(env, "parallel_verify", False):
        checked = [check(tasks[i], completions[i]) for i in todo]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            checked = list(pool.map(check, [tasks[i] for i in todo], [completions[i] for i in todo]))
    verdict_of = dict(zip(first, checked))
    # a duplicate gets its own copy, so annotating one verdict never changes another
    return [verdict_of[k] if first[k] == i else replace(verdict_of[k], details=dict(verdict_of[k].details)) for i, k in enumerate(keys)]


VERIFIER_ERROR = "verifier_error"


def verifier_errors(verdicts: list) -> int:
    """How many of `verdicts` come from a check that raised."""
    return sum(bool(v.details.get(VERIFIER_ERROR)) for v in verdicts)
