"""Token credit: per-character verifier credit → per-token rewards → per-position advantages."""

from __future__ import annotations

import math

import pytest
import torch

from envs.math import MathEnv
from envs.math.answer import aligned_char_credit, aligned_digit_credit
from policies.tokenizer import load_tokenizer
from rl.algorithms import group_has_signal, position_grpo, ppo_clip
from rl.batch import build_batch
from rl.token_credit import token_advantages, token_char_spans, token_rewards
from rollout.episode import Episode, RewardBreakdown, Turn
from envs.base import Verdict


@pytest.mark.parametrize(
    "text, target, credit",
    [
        ("+0059", "+0059", (1, 1, 1, 1, 1)),
        ("+0058", "+0059", (1, 1, 1, 1, 0)),
        ("-0059", "+0059", (0, 1, 1, 1, 1)),
        ("+00591", "+0059", (1, 1, 1, 1, 1, 0)),  # an appended digit earns nothing
        ("+005", "+0059", (1, 1, 1, 1)),
        (" +0059\n7", "+0059", (0, 1, 1, 1, 1, 1, 0, 0)),  # whitespace and later lines earn nothing
        ("59", "+0059", (0, 0)),  # not in place
        ("", "+0059", ()),
    ],
)
def test_char_credit_table(text, target, credit):
    got = aligned_char_credit(text, target)
    assert got == tuple(float(c) for c in credit)
    assert len(got) == len(text)
    # the summed share is the partial credit of the whole answer
    line = text.split("\n", 1)[0].strip()
    assert math.isclose(sum(got) / max(len(line), len(target)), aligned_digit_credit(text, target))


def test_math_verdict_carries_char_credit_only_in_fixed_width():
    fixed, plain = MathEnv(levels=(1, 2, 3), fixed_width=True), MathEnv(levels=(1, 2, 3))
    task = fixed.eval_tasks(1)[0]
    right = fixed.oracle(task)
    assert fixed.verify(task, right).char_credit == (1.0,) * len(right)
    unpadded = str(int(task.payload["answer"]))
    assert fixed.verify(task, unpadded).passed and fixed.verify(task, unpadded).char_credit == (1.0,) * len(unpadded)
    wrong = right[:-1] + str((int(right[-1]) + 1) % 10)
    assert fixed.verify(task, wrong).char_credit == (1.0,) * (len(right) - 1) + (0.0,)
    assert fixed.verify(task, "x=?").char_credit == (0.0,) * 3
    assert plain.verify(plain.eval_tasks(1)[0], "7").char_credit is None


def test_position_grpo_hand_computed():
    # group 7: position 0 all right (no signal), position 1 split 2:1; group 3: a single member
    rewards = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    mask = torch.ones(4, 2)
    groups = torch.tensor([7, 7, 7, 3])
    adv = position_grpo(rewards, mask, groups)
    s = math.sqrt(1 / 3)  # unbiased std of (1, 0, 1)
    expected = torch.tensor([[0, (1 - 2 / 3) / s], [0, (0 - 2 / 3) / s], [0, (1 - 2 / 3) / s], [0, 0]])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_position_grpo_ignores_padding_and_short_positions():
    # the third position exists only in the first completion: alone there, no baseline, no advantage
    rewards = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = position_grpo(rewards, mask, torch.tensor([0, 0]))
    s = math.sqrt(0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.5 / s, -0.5 / s, 0.0], [-0.5 / s, 0.5 / s, 0.0]]), atol=1e-5, rtol=0)


def test_group_has_signal():
    signal = torch.tensor([False, False, True, False, False])
    assert group_has_signal(signal, torch.tensor([4, 4, 9, 9, 1])).tolist() == [False, False, True, True, False]


def episode(tok, text: str, group: int, components: dict[str, float], weights: dict[str, float]) -> Episode:
    ids = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
    total = sum(weights[c] * components[c] for c in components)
    turn = Turn(role="assistant", text=tok.decode(ids, skip_special_tokens=True), token_ids=ids, logprobs=[-0.5] * len(ids), trainable=True)
    return Episode(task_id="t", env="math", prompt="p", prompt_ids=[5, 6, 7], turns=[turn], group=group, reward=RewardBreakdown(components, weights, total))


def test_spans_and_token_rewards_follow_the_characters():
    tok = load_tokenizer()
    ep = episode(tok, "+0058", 0, {"outcome": 0.8, "format": 1.0}, {"outcome": 1.0, "format": 0.5})
    assert token_char_spans(tok, ep.completion_ids) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 5)]
    verdict = Verdict(passed=False, score=0.8, parsed=True, char_credit=(1.0, 1.0, 1.0, 1.0, 0.0))
    # total 0.8 + 0.5 = 1.3; each token swaps the outcome 0.8 for its own credit; the stop token keeps 0.8
    assert token_rewards(ep, verdict, tok) == pytest.approx([1.5, 1.5, 1.5, 1.5, 0.5, 1.3])
    # no credit from the verifier, or an outcome reward that crashed: the completion's total everywhere
    assert token_rewards(ep, Verdict(False, 0.8, True), tok) == pytest.approx([1.3] * 6)
    ep.reward.errors = ["outcome"]
    assert token_rewards(ep, verdict, tok) == pytest.approx([1.3] * 6)


def test_token_advantages_push_the_wrong_digit_down_and_its_neighbours_up():
    tok = load_tokenizer()
    env = MathEnv(levels=(1, 2, 3), fixed_width=True)
    task = env.eval_tasks(1)[0]
    right = env.oracle(task)
    wrong = right[:-1] + str((int(right[-1]) + 1) % 10)
    texts = [right, wrong, right, wrong]
    verdicts = [env.verify(task, t) for t in texts]
    eps = [episode(tok, t, 0, {"outcome": v.score}, {"outcome": 1.0}) for t, v in zip(texts, verdicts)]
    adv = token_advantages(eps, verdicts, tok)
    wrong_adv = adv[1]
    assert all(a == 0 for a in wrong_adv[:-2])  # the digits everybody got right carry nothing
    assert wrong_adv[-2] < 0 and adv[0][-2] > 0  # the disputed last digit: down where wrong, up where right
    # a sequence-level advantage would have pushed every digit of the wrong answer down
    assert sum(a < 0 for a in wrong_adv) < len(wrong_adv) - 1


def test_build_batch_places_token_advantages_where_tokens_are_predicted():
    tok = load_tokenizer()
    eps = [episode(tok, "+01", 0, {"outcome": 1.0}, {"outcome": 1.0}), episode(tok, "+0", 0, {"outcome": 0.0}, {"outcome": 1.0})]
    adv = [[0.1, 0.2, 0.3, 0.4], [-0.1, -0.2, -0.3]]
    batch = build_batch(eps, adv, tok.pad_token_id)
    assert batch.advantages.shape == batch.completion_mask.shape
    for i, a in enumerate(adv):
        placed = batch.advantages[i][batch.completion_mask[i].bool()]
        torch.testing.assert_close(placed, torch.tensor(a))
        assert float(batch.advantages[i][~batch.completion_mask[i].bool()].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="token advantages"):
        build_batch(eps, [[0.1], [0.2]], tok.pad_token_id)


def test_ppo_clip_per_token_equals_broadcast_for_constant_rows():
    torch.manual_seed(0)
    lp, old = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5)
    mask = (torch.rand(3, 5) > 0.3).float()
    seq = torch.tensor([0.5, -1.0, 2.0])
    a, _ = ppo_clip(lp, old, seq, mask)
    b, _ = ppo_clip(lp, old, seq[:, None].expand(3, 5).clone(), mask)
    torch.testing.assert_close(a, b)
    # and a token's own advantage moves only that token's gradient sign
    per_token = torch.zeros(3, 5)
    per_token[0, 1] = 1.0
    loss, _ = ppo_clip(lp, lp.detach(), per_token, torch.ones(3, 5))
    (grad,) = torch.autograd.grad(loss, lp)
    assert grad[0, 1] < 0 and float(grad.abs().sum() - grad[0, 1].abs()) == 0.0
