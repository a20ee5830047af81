"""Separate credit for the self-verdict: answer tokens and verdict tokens get their own advantages."""

from __future__ import annotations

import pytest
import torch

from policies.tokenizer import load_tokenizer
from rl.algorithms import grpo
from rl.algorithms.losses import ppo_clip
from rl.batch import build_batch
from rl.config import ConfigError, validate_config
from rl.verdict_credit import verdict_token_advantages, verdict_token_start
from rollout.episode import Episode, RewardBreakdown, Turn

TOK = load_tokenizer()


def episode(text: str, outcome: float, verdict: float, w: float = 0.5, group: int = 0) -> Episode:
    ids = TOK(text, add_special_tokens=False)["input_ids"]
    e = Episode("t", "math", "1+1=", [5, 6], [Turn("assistant", text, ids, [-0.1] * len(ids), True)], group=group)
    e.reward = RewardBreakdown({"outcome": outcome, "self_verification": verdict}, {"outcome": 1.0, "self_verification": w}, outcome + w * verdict)
    return e


def test_the_tag_starts_where_its_text_does():
    assert verdict_token_start(episode("+0059<verify>p=0.8</verify>", 1, 1), TOK) == 5
    assert verdict_token_start(episode("2 <verify>correct</verify>", 1, 1), TOK) == 2  # the space before the tag is answer
    assert verdict_token_start(episode("+0059", 1, 0), TOK) is None
    assert verdict_token_start(episode("<verify>p=1</verify>+0059", 1, 0), TOK) is None  # not closing: no verdict


def test_an_honest_verdict_on_a_wrong_answer_is_credited_as_honest():
    # one group: right + boastful, right + honest-ish, wrong + honest, wrong + boastful
    eps = [
        episode("+0059<verify>p=1.0</verify>", 1.0, 1.0),
        episode("+0059<verify>p=0.8</verify>", 1.0, 0.96),
        episode("+0058<verify>p=0.0</verify>", 0.0, 1.0),
        episode("+0058<verify>p=1.0</verify>", 0.0, 0.0),
    ]
    groups = torch.zeros(4, dtype=torch.long)
    answer, per_token = verdict_token_advantages(eps, [e.reward for e in eps], groups, grpo, TOK)
    expect_answer = grpo(torch.tensor([1.0, 1.0, 0.0, 0.0]), groups)
    expect_verdict = grpo(torch.tensor([0.5, 0.48, 0.5, 0.0]), groups)
    assert torch.allclose(answer, expect_answer)
    for i, e in enumerate(eps):
        n = len(e.turns[0].token_ids)
        assert per_token[i] == pytest.approx([float(expect_answer[i])] * 5 + [float(expect_verdict[i])] * (n - 5))
    # the honest verdict on the wrong answer is pushed up, the boast on it down; the whole-completion
    # advantage would push both down with the answer
    assert per_token[2][-1] > 0 > per_token[3][-1]
    assert grpo(torch.tensor([e.reward.total for e in eps]), groups)[2] < 0


def test_completions_without_a_tag_keep_the_totals_advantage():
    eps = [episode("+0059<verify>p=1.0</verify>", 1.0, 1.0), episode("+0058", 0.0, 0.0)]
    groups = torch.zeros(2, dtype=torch.long)
    answer, per_token = verdict_token_advantages(eps, [e.reward for e in eps], groups, grpo, TOK)
    assert per_token[1] is None
    assert float(answer[1]) == pytest.approx(float(grpo(torch.tensor([1.5, 0.0]), groups)[1]))


def test_build_batch_places_token_advantages_and_the_loss_reads_them():
    eps = [episode("+0059<verify>p=1.0</verify>", 1.0, 1.0), episode("+0058", 0.0, 0.0)]
    n0 = len(eps[0].turns[0].token_ids)
    b = build_batch(eps, [0.7, -0.7], pad_token_id=0, token_advantages=[[0.1] * 5 + [0.9] * (n0 - 5), None])
    assert b.advantages.shape == b.completion_mask.shape
    # prompt of 2 tokens: completion token j is predicted at position 1 + j
    assert b.advantages[0, 1:6].tolist() == pytest.approx([0.1] * 5) and b.advantages[0, 6 : 1 + n0].tolist() == pytest.approx([0.9] * (n0 - 5))
    assert b.advantages[1, 1:6].tolist() == pytest.approx([-0.7] * 5)  # no per-token advantages: the row's
    with pytest.raises(ValueError, match="token advantages"):
        build_batch(eps, [0.7, -0.7], pad_token_id=0, token_advantages=[[0.1] * 3, None])
    # a per-token advantage that is constant over a row is the row's advantage
    logp = torch.randn(2, 6, requires_grad=True)
    old, mask = logp.detach() + 0.05 * torch.randn(2, 6), torch.ones(2, 6)
    rows = torch.tensor([0.3, -1.2])
    a, _ = ppo_clip(logp, old, rows, mask)
    b2, _ = ppo_clip(logp, old, rows[:, None].expand(2, 6), mask)
    assert torch.allclose(a, b2)


def test_verdict_credit_needs_the_reward():
    with pytest.raises(ConfigError, match="algorithm.verdict_credit"):
        validate_config({"policy": {}, "env": {"name": "math"}, "algorithm": {"verdict_credit": True}})
    validate_config({"policy": {}, "env": {"name": "math"}, "algorithm": {"verdict_credit": True}, "rewards": {"self_verification": {"weight": 1.0}}})
