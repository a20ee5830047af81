"""Advantage estimators and the PPO-clip loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.algorithms import (
    aggregate,
    dr_grpo,
    entropy_from_logits,
    get_advantage,
    get_policy_loss,
    grpo,
    kl_penalty,
    nonzero_variance_groups,
    ppo_clip,
    rloo,
    tis_weights,
    token_logprobs,
)

R = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
G = torch.tensor([7, 7, 7, 7, 3, 3, 11])  # unsorted-looking ids, groups of 4, 2 and 1


def test_grpo_by_hand():
    # group 7: mean .5, unbiased std sqrt(1/3) → ±0.5/0.57735 = ±0.866025; group 3: zero variance; group 11: alone
    a = grpo(R, G)
    s = 0.5 / math.sqrt(1 / 3)
    assert torch.allclose(a, torch.tensor([s, -s, -s, s, 0.0, 0.0, 0.0]), atol=1e-5)


def test_dr_grpo_by_hand():
    assert torch.allclose(dr_grpo(R, G), torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0]))


def test_rloo_by_hand():
    # r_0=1, others in group 7 mean (0+0+1)/3 = 1/3 → 2/3; r_1=0, others mean 2/3 → -2/3
    expect = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0])
    assert torch.allclose(rloo(R, G), expect, atol=1e-6)


def test_registry():
    assert get_advantage("grpo") is grpo and get_policy_loss("ppo_clip") is ppo_clip
    with pytest.raises(ValueError, match="known: dr_grpo, grpo, rloo"):
        get_advantage("gae")


def test_dynamic_sampling_mask():
    assert nonzero_variance_groups(R, G).tolist() == [True] * 4 + [False, False, False]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(-5, 5)), min_size=1, max_size=24), st.randoms())
def test_estimators_are_permutation_invariant_and_centred(rows, rnd):
    g = torch.tensor([r[0] for r in rows])
    r = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    perm = list(range(len(rows)))
    rnd.shuffle(perm)
    p = torch.tensor(perm)
    for fn in (grpo, rloo, dr_grpo):
        a = fn(r, g)
        assert torch.allclose(fn(r[p], g[p]), a[p], atol=1e-9)
        for gid in g.unique():
            sel = g == gid
            assert abs(float(a[sel].sum())) < 1e-6 * max(1.0, float(r.abs().max()) * sel.sum())


def _loss(lp, old, adv, mask, **kw):
    return ppo_clip(lp, old, adv, mask, **kw)


def test_ppo_clip_inside_range_is_plain_pg():
    lp = torch.log(torch.tensor([[0.55]])).requires_grad_()
    old = torch.log(torch.tensor([[0.5]]))
    loss, m = _loss(lp, old, torch.tensor([2.0]), torch.ones(1, 1))
    # ratio 1.1 inside (0.8, 1.28): loss = -1.1 * 2
    assert math.isclose(float(loss), -2.2, rel_tol=1e-5) and m["clip_frac"] == 0.0
    loss.backward()
    # d/dlp (-exp(lp - old) * A) = -ratio * A
    assert math.isclose(float(lp.grad), -2.2, rel_tol=1e-5)


def test_ppo_clip_high_side_clips_positive_advantage():
    lp = torch.log(torch.tensor([[0.7]])).requires_grad_()
    old = torch.log(torch.tensor([[0.5]]))  # ratio 1.4 > 1.28
    loss, m = _loss(lp, old, torch.tensor([1.0]), torch.ones(1, 1), clip_low=0.2, clip_high=0.28)
    assert math.isclose(float(loss), -1.28, rel_tol=1e-5) and m["clip_frac"] == 1.0
    loss.backward()
    assert float(lp.grad) == 0.0


def test_ppo_clip_low_side_clips_negative_advantage_and_dual_clip():
    lp = torch.log(torch.tensor([[0.3]])).requires_grad_()
    old = torch.log(torch.tensor([[0.5]]))  # ratio 0.6 < 0.8, A<0: min(-0.6*-1... ) → clipped 0.8
    loss, m = _loss(lp, old, torch.tensor([-1.0]), torch.ones(1, 1))
    assert math.isclose(float(loss), 0.8, rel_tol=1e-5) and m["clip_frac"] == 1.0
    # dual clip caps a huge ratio with negative advantage at c·|A|
    lp2 = torch.log(torch.tensor([[0.9]]))
    old2 = torch.log(torch.tensor([[0.1]]))  # ratio 9
    loss2, _ = _loss(lp2, old2, torch.tensor([-1.0]), torch.ones(1, 1), clip_ratio_c=3.0)
    assert math.isclose(float(loss2), 3.0, rel_tol=1e-5)
    loss3, _ = _loss(lp2, old2, torch.tensor([-1.0]), torch.ones(1, 1))
    assert math.isclose(float(loss3), 9.0, rel_tol=1e-5)


def test_aggregation_modes_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert math.isclose(float(aggregate(v, m, "token_mean")), 10 / 4)
    assert math.isclose(float(aggregate(v, m, "seq_mean_token_mean")), (2 + 4) / 2)
    assert math.isclose(float(aggregate(v, m, "seq_mean_token_sum_norm", norm_len=5)), (6 / 5 + 4 / 5) / 2)
    with pytest.raises(ValueError):
        aggregate(v, m, "sum")
    with pytest.raises(ValueError):
        aggregate(v, m, "seq_mean_token_sum_norm")


def test_masked_tokens_do_not_count():
    lp = torch.zeros(1, 3, requires_grad=True)
    old = torch.tensor([[0.0, 5.0, -5.0]])
    loss, m = _loss(lp, old, torch.tensor([1.0]), torch.tensor([[1.0, 0.0, 0.0]]))
    loss.backward()
    assert lp.grad[0, 1:].abs().sum() == 0 and m["ratio_max"] == 1.0


def test_kl_estimators():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -2.0, -0.1])
    assert torch.allclose(kl_penalty(lp, ref, "k1"), lp - ref)
    assert torch.allclose(kl_penalty(lp, ref, "k2"), 0.5 * (lp - ref) ** 2)
    k3 = kl_penalty(lp, ref, "k3")
    assert (k3 >= 0).all() and k3[1] == 0
    assert torch.allclose(k3, torch.exp(ref - lp) - (ref - lp) - 1)
    with pytest.raises(ValueError):
        kl_penalty(lp, ref, "k4")


def test_kl_term_added_to_loss():
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    base, _ = _loss(lp, lp, torch.tensor([0.0]), torch.ones(1, 2))
    with_kl, m = _loss(lp, lp, torch.tensor([0.0]), torch.ones(1, 2), ref_logprobs=ref, kl_coef=0.5)
    expect = 0.5 * float(kl_penalty(lp, ref, "k3").mean())
    assert math.isclose(float(with_kl) - float(base), expect, rel_tol=1e-5) and m["kl_ref"] > 0


def test_token_logprobs_and_entropy_match_explicit_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    ref = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    assert torch.allclose(token_logprobs(logits, ids), ref, atol=1e-6)
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits), -(p * p.log()).sum(-1), atol=1e-5)


def test_tis_weights_are_capped_and_detached():
    a = torch.tensor([0.0, 0.0], requires_grad=True)
    w = tis_weights(a, torch.tensor([-3.0, 0.5]), cap=2.0)
    assert torch.allclose(w, torch.tensor([2.0, math.exp(-0.5)])) and not w.requires_grad
