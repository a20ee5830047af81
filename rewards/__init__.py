"""Reward functions (pure, registered by name), schedules and batch scoring."""

from rewards.length import kimi_length_reward, overlong_penalty
from rewards.parl import critical_steps
from rewards.registry import get_reward, register_reward, reward_names
from rewards.schedule import RewardsConfig
from rewards.scoring import Scored, score_batch
from rewards.self_verification import calibration_metrics, parse_self_verdict

__all__ = [
    "RewardsConfig",
    "Scored",
    "calibration_metrics",
    "critical_steps",
    "get_reward",
    "kimi_length_reward",
    "overlong_penalty",
    "parse_self_verdict",
    "register_reward",
    "reward_names",
    "score_batch",
]
