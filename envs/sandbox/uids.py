"""Sandbox uids. RLIMIT_NPROC counts every process of a uid system-wide, and exited processes
are released with a delay: back-to-back runs under one uid start failing to fork. Rotating
through a range of unprivileged uids gives each concurrent slot its own process budget."""

from __future__ import annotations

import itertools
import threading

UID_RANGE = range(61000, 61016)

_lock = threading.Lock()
_cycle = itertools.cycle(UID_RANGE)


def next_uid() -> int:
    with _lock:
        return next(_cycle)
