"""`algorithm.token_credit`: per-token rewards from the verifier's per-character credit.

The outcome component is paid per token: a token earns the credit of its characters
(`Verdict.char_credit`) instead of the completion's outcome value; every other component keeps
its per-completion value. Advantages are then normalised per token position within each group
(`position_grpo`). Tokens that decode to no characters (the stop token) keep the completion's
outcome value, so stopping after a right answer is paid like the answer.
"""

from __future__ import annotations

import torch

from envs.base import Verdict
from rl.algorithms.token_advantages import position_grpo
from rollout.episode import Episode


def token_char_spans(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """[start, end) character span of each token in `decode(ids, skip_special_tokens=True)`, the
    text the rollout recorded. Prefix decoding keeps merges and multi-byte characters honest."""
    spans, prev = [], 0
    for k in range(len(ids)):
        end = len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True))
        end = max(end, prev)  # an incomplete multi-byte prefix can decode shorter; never go back
        spans.append((prev, end))
        prev = end
    return spans


def token_rewards(episode: Episode, verdict: Verdict, tokenizer) -> list[float]:
    """One reward per completion token: the completion's total, with the outcome component's
    value replaced by the credit of the token's characters (where the verdict has credit)."""
    ids = episode.completion_ids
    total = episode.reward.total
    credit = verdict.char_credit
    outcome = episode.reward.components.get("outcome")
    weight = episode.reward.weights.get("outcome", 0.0)
    if credit is None or outcome is None or "outcome" in episode.reward.errors:
        return [total] * len(ids)
    out = []
    for start, end in token_char_spans(tokenizer, ids):
        chars = credit[start:end]
        value = sum(chars) / len(chars) if chars else outcome
        out.append(total + weight * (value - outcome))
    return out


def token_advantages(episodes: list[Episode], verdicts: list[Verdict], tokenizer) -> list[list[float]]:
    """Per completion token advantages of a step's episodes (`position_grpo` over token rewards)."""
    per_token = [token_rewards(e, v, tokenizer) for e, v in zip(episodes, verdicts)]
    width = max((len(r) for r in per_token), default=0)
    rewards = torch.zeros(len(episodes), width)  # [N, T]
    mask = torch.zeros(len(episodes), width)
    for i, r in enumerate(per_token):
        rewards[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
        mask[i, : len(r)] = 1.0
    groups = torch.tensor([e.group for e in episodes], dtype=torch.long)
    adv = position_grpo(rewards, mask, groups)
    return [adv[i, : len(r)].tolist() for i, r in enumerate(per_token)]
