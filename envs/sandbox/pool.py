"""Many sandboxed executions at once. Each execution is its own process; the pool only bounds
how many run together (and so how many uids are in use: keep `workers` ≤ the uid range)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from envs.sandbox.result import SandboxResult
from envs.sandbox.runner import run_python
from envs.sandbox.uids import UID_RANGE


class SandboxPool:
    def __init__(self, workers: int = 4):
        if not 1 <= workers <= len(UID_RANGE):
            raise ValueError(f"workers must be in 1..{len(UID_RANGE)} (one uid per concurrent run)")
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")

    def map_python(self, sources: Iterable[str], **kwargs) -> list[SandboxResult]:
        return list(self._executor.map(lambda s: run_python(s, **kwargs), sources))

    def map(self, fn: Callable[..., SandboxResult], items: Iterable) -> list[SandboxResult]:
        return list(self._executor.map(fn, items))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
