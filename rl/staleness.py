"""Staleness bookkeeping for asynchronous rollouts.

The learner's version is the number of updates its weights have had; a completion's version is
the one the rollout worker held when it sampled it (`Episode.policy_version`, -1 when unknown).
Their difference is how many updates the sample lags the policy it trains: 0 for a synchronous
rollout.
"""

from __future__ import annotations

from rollout.episode import Episode


def staleness(episodes: list[Episode], learner_version: int) -> list[int]:
    """Learner version minus the sampler version of each episode whose sampler version is known."""
    return [learner_version - e.policy_version for e in episodes if e.policy_version >= 0]


def too_stale(episodes: list[Episode], learner_version: int, max_staleness: int) -> bool:
    """True when an episode lags more than `max_staleness`, or its sampler version is unknown (e.g.
    a restarted worker that had not received weights yet): such a batch cannot be vouched for."""
    return any(e.policy_version < 0 for e in episodes) or any(s > max_staleness for s in staleness(episodes, learner_version))


def staleness_metrics(episodes: list[Episode], learner_version: int) -> dict[str, float]:
    """Mean and max over the episodes with a known sampler version (PARL episodes carry none)."""
    lags = staleness(episodes, learner_version)
    if not lags:
        return {}
    return {"rollout/staleness_mean": sum(lags) / len(lags), "rollout/staleness_max": float(max(lags))}
