"""Isolated execution of untrusted programs (model-written code, proofs)."""

from envs.sandbox.pool import SandboxPool
from envs.sandbox.result import SandboxResult
from envs.sandbox.runner import SandboxUnavailable, isolation_available, run_command, run_python

__all__ = ["SandboxPool", "SandboxResult", "SandboxUnavailable", "isolation_available", "run_command", "run_python"]
