"""What one sandboxed execution returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "error", "timeout", "memory", "killed"]


@dataclass(frozen=True)
class SandboxResult:
    """`status`: ok (exit 0) | error (non-zero exit) | timeout (wall or CPU limit) | memory
    (address-space limit) | killed (output limit or a signal). Output is cut at the limit."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool = False
    isolated: bool = True
