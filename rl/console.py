"""Console output: a progress bar with ETA on a terminal, plain log lines elsewhere (CI, files)."""

from __future__ import annotations

import sys
import time

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Console:
    def __init__(self, enabled: bool = True, plain_every_s: float = 15.0):
        self.enabled = enabled
        self.rich = RichConsole(stderr=True)
        self.interactive = enabled and sys.stderr.isatty()
        self.progress: Progress | None = None
        self.task = None
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self._t0 = time.perf_counter()
        self._start_step = 0
        self.total = 0

    def log(self, msg: str) -> None:
        if self.progress is not None:
            self.progress.console.print(msg)
        else:
            self.rich.print(msg, highlight=False)

    def start(self, total: int, completed: int = 0) -> None:
        self.total, self._start_step, self._t0 = total, completed, time.perf_counter()
        if not self.interactive:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.rich,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=completed, info="")

    def advance(self, step: int, **info: float | None) -> None:
        text = " ".join(f"{k}={v:.3f}" for k, v in info.items() if v is not None)
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=text)
            return
        now = time.perf_counter()
        if self.enabled and (now - self._last_plain >= self.plain_every_s or step == self.total):
            self._last_plain = now
            done = step - self._start_step
            eta = (now - self._t0) / max(done, 1) * (self.total - step)
            self.log(f"step {step}/{self.total} {text} elapsed={now - self._t0:.0f}s eta={eta:.0f}s")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
