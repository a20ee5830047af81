"""Reward functions (pure, registered by name), schedules and batch scoring."""

from rewards.registry import get_reward, register_reward, reward_names
from rewards.schedule import RewardsConfig
from rewards.scoring import Scored, score_batch

__all__ = ["RewardsConfig", "Scored", "get_reward", "register_reward", "reward_names", "score_batch"]
