"""Procedurally generated math with exact answers."""

from envs.math.env import MathEnv

__all__ = ["MathEnv"]
