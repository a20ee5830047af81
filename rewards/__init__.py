"""Reward functions (pure, registered by name), reward schedules and batch scoring.

Importing the package registers every built-in component:
outcome, format, self_verification, instantiation, finish, anti_serial_collapse, length, overlong.
"""

# each component module registers itself on import
from rewards import anti_serial_collapse, finish, format, instantiation, length, outcome, overlong, self_verification  # noqa: F401
from rewards.critical_path import critical_steps
from rewards.length import kimi_length_reward
from rewards.overlong import overlong_penalty
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
