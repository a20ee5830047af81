"""Wide tasks for PARL: look up one attribute of N entities in a generated corpus."""

from envs.swarm.env import SwarmEnv

__all__ = ["SwarmEnv"]
