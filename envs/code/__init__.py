"""Python function synthesis verified by unit tests in the sandbox."""

from envs.code.env import CodeEnv

__all__ = ["CodeEnv"]
