"""Sampler/learner log-prob mismatch metrics and truncated importance sampling (TIS)."""

from __future__ import annotations

import math

import pytest
import torch

from policies.model import build_policy
from rl.algorithms import ppo_clip
from rl.algorithms.sampler_mismatch import MismatchMeter, mismatch_sums
from rl.batch import TrainBatch
from rl.config import load_config
from rl.learner import Learner
from tests.test_learner import _batch


def test_mismatch_sums_by_hand():
    learner = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]])
    sampler = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    s = mismatch_sums(learner, sampler, mask)
    # log r on the counted tokens: 0.5, 0, -1, 0
    assert s["tokens"] == 4 and s["abs_diff"] == pytest.approx(1.5) and s["max_abs_diff"] == pytest.approx(1.0)
    assert s["kl"] == pytest.approx((math.exp(0.5) - 1 - 0.5) + (math.exp(-1) - 1 + 1))


def test_meter_pools_batches_and_counts_capped_tokens():
    meter = MismatchMeter()
    assert meter.metrics() == {}
    meter.add(torch.zeros(1, 2), torch.tensor([[-1.0, 0.0]]), torch.ones(1, 2), tis_cap=2.0)  # r = e, 1
    meter.add(torch.zeros(1, 2), torch.tensor([[0.0, 0.5]]), torch.tensor([[1, 0]]), tis_cap=2.0)  # r = 1
    m = meter.metrics()
    assert m["learner/sampler_logprob_abs_diff"] == pytest.approx(1 / 3)
    assert m["learner/sampler_logprob_max_abs_diff"] == pytest.approx(1.0)
    assert m["learner/tis_capped_frac"] == pytest.approx(1 / 3)


def test_ppo_clip_token_weights_scale_each_tokens_loss_and_gradient():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.0]])
    adv, mask, w = torch.tensor([1.5]), torch.ones(1, 2), torch.tensor([[2.0, 0.25]])
    loss, _ = ppo_clip(lp, old, adv, mask, token_weights=w)
    # ratio 1 at the old policy: per-token loss -A, weighted, token-mean
    assert float(loss.detach()) == pytest.approx(-(1.5 * 2.0 + 1.5 * 0.25) / 2)
    loss.backward()
    assert torch.allclose(lp.grad, -1.5 * w / 2)


def _learner_and_batch(overrides: list[str], seed: int = 3):
    cfg = load_config("experiments/quickstart.yaml", ["sft.enabled=false", "optimizer.name=adamw", *overrides])
    model, tok = build_policy(cfg.policy, seed=seed)
    batch = _batch(tok, 6, seed)
    learner = Learner.from_config(model, cfg)
    with torch.no_grad():
        exact = learner._logprobs(model, batch)[0] * batch.completion_mask  # [B, L-1]
    return learner, batch, exact


def _with_sampler_logprobs(batch: TrainBatch, sampler: torch.Tensor) -> TrainBatch:
    return TrainBatch(batch.input_ids, batch.attention_mask, batch.completion_mask, sampler, batch.advantages)


@pytest.mark.parametrize("minibatch", [0, 2])
def test_learner_reports_the_sampler_mismatch(minibatch):
    learner, batch, exact = _learner_and_batch([f"algorithm.minibatch_size={minibatch}", "algorithm.tis_cap=2.0"])
    shift = 0.3 * batch.completion_mask
    m = learner.update(_with_sampler_logprobs(batch, exact - shift))
    assert m["learner/sampler_logprob_abs_diff"] == pytest.approx(0.3, abs=1e-5)
    assert m["learner/sampler_kl"] == pytest.approx(math.exp(0.3) - 1 - 0.3, abs=1e-5)
    assert m["learner/tis_capped_frac"] == 0.0  # e^0.3 < 2


def test_matching_sampler_makes_tis_a_no_op():
    # identical model copies: the same step with and without TIS when sampler == learner
    runs = {}
    for tis in ("null", "2.0"):
        learner, batch, exact = _learner_and_batch([f"algorithm.tis_cap={tis}"])
        m = learner.update(_with_sampler_logprobs(batch, exact))
        runs[tis] = (m, {n: p.detach().clone() for n, p in learner.model.named_parameters()})
    assert runs["null"][0]["learner/sampler_logprob_abs_diff"] < 1e-6
    assert runs["null"][0]["learner/pg_loss"] == pytest.approx(runs["2.0"][0]["learner/pg_loss"], abs=1e-6)
    for name, p in runs["null"][1].items():
        torch.testing.assert_close(p, runs["2.0"][1][name], msg=name)


def test_tis_caps_the_weight_of_tokens_the_sampler_underrated():
    # the sampler put 5 nats less on every token than the learner: π_learner/π_sampler = e^5 → cap
    cap = 2.0
    plain, batch, exact = _learner_and_batch([])
    reference = plain.update(_with_sampler_logprobs(batch, exact))["learner/pg_loss"]  # ratio 1, weight 1
    tis, batch, exact = _learner_and_batch([f"algorithm.tis_cap={cap}"])
    m = tis.update(_with_sampler_logprobs(batch, exact - 5.0 * batch.completion_mask))
    assert m["learner/tis_capped_frac"] == 1.0
    assert m["learner/pg_loss"] == pytest.approx(cap * reference, rel=1e-5)
    # without TIS the PPO ratio is taken against the sampler and clipped at 1 + clip_high
    off, batch, exact = _learner_and_batch([])
    m_off = off.update(_with_sampler_logprobs(batch, exact - 5.0 * batch.completion_mask))
    assert m_off["learner/clip_frac"] > 0 and m["learner/clip_frac"] == 0.0
