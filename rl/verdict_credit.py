"""Separate credit for the self-verdict (`algorithm.verdict_credit`).

A completion that ends with a verdict on its own answer (`+0059<verify>p=0.2</verify>`) is two
actions: the answer, and the judgement of it. With one advantage per completion the outcome
decides the sign of both: an honest `p=0.2` on a wrong answer is pushed down together with the
answer, and `p=1.0` is pushed up with every right one, so the verdicts drift to "always right"
whatever the Brier rule pays. Here the answer's tokens get the group-relative advantage of every
reward except `self_verification`, and the verdict tag's tokens that of the weighted
`self_verification` reward alone. Completions without a closing tag keep one advantage (of the
total) on every token.
"""

from __future__ import annotations

from typing import Callable

import torch

from envs.base import strip_self_verdict
from rollout.episode import Episode

COMPONENT = "self_verification"


def verdict_token_start(episode: Episode, tokenizer) -> int | None:
    """Index of the first token of the closing verdict tag among the completion's tokens, or None
    (no tag, or a multi-turn episode)."""
    if len(episode.turns) != 1:
        return None
    text = episode.completion_text
    if strip_self_verdict(text) == text:
        return None
    ids = episode.turns[0].token_ids
    for k in range(len(ids) - 1, -1, -1):  # the shortest suffix that holds the tag's opening
        if "<verify>" in tokenizer.decode(ids[k:], skip_special_tokens=True).lower():
            return k
    return None


def verdict_token_advantages(
    episodes: list[Episode], breakdowns: list, groups: torch.Tensor, advantage_fn: Callable, tokenizer
) -> tuple[torch.Tensor, list[list[float] | None]]:
    """(per-episode advantage of the answer, per-token advantages: answer tokens then tag tokens,
    None where the episode has no closing tag and keeps the total's advantage). `breakdowns[i]`
    is episode i's reward (`rewards.scoring.RewardBreakdown`)."""
    total = torch.tensor([b.total for b in breakdowns], dtype=torch.float32)
    verdict = torch.tensor([b.weights.get(COMPONENT, 0.0) * b.components.get(COMPONENT, 0.0) for b in breakdowns], dtype=torch.float32)
    answer_adv = advantage_fn(total - verdict, groups)  # [N]
    verdict_adv = advantage_fn(verdict, groups)  # [N]
    whole_adv = advantage_fn(total, groups)  # [N]
    per_token: list[list[float] | None] = []
    answer_out = []
    for e, a, v, w in zip(episodes, answer_adv.tolist(), verdict_adv.tolist(), whole_adv.tolist()):
        start = verdict_token_start(e, tokenizer)
        if start is None:
            per_token.append(None)
            answer_out.append(w)
            continue
        n = len(e.turns[0].token_ids)
        per_token.append([a] * start + [v] * (n - start))
        answer_out.append(a)
    return torch.tensor(answer_out), per_token
