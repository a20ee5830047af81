"""Chunked log-probs on an FSDP2-sharded policy (`rl.distributed.head`): the head's weight taken
inside the root's forward gives the log-probs, entropies and gradients of one unsharded process.

One spawn of 2 gloo ranks; each rank feeds its own rows and also computes the one-process
reference over both ranks' rows itself, so no tensors cross between the two sides.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kernels.logprob import chunked_logprobs, naive_logprobs
from policies.model import build_policy
from policies.spec import PolicyConfig
from rl.distributed.head import head_passed_through
from tests.gloo_ranks import run_ranks

WORLD = 2
POLICY = dict(arch="llama", hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128, max_position_embeddings=16)


def _policy(tied: bool) -> torch.nn.Module:
    model, _ = build_policy(PolicyConfig(**POLICY, tie_embeddings=tied), seed=0)
    return model


def _rows(model, rank: int) -> torch.Tensor:
    return torch.randint(model.config.vocab_size, (3, 10), generator=torch.Generator().manual_seed(100 + rank))


def _loss(lp: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
    return lp.sum() - 0.01 * ent.sum()


def _reference(tied: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Per-rank log-probs and the gradient of the ranks' mean loss (FSDP averages gradients),
    from the unsharded model's body and head outside any forward."""
    model = _policy(tied)
    lps, loss = [], 0.0
    for r in range(WORLD):
        ids = _rows(model, r)
        hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
        lp, ent = chunked_logprobs(hidden, model.lm_head.weight, ids[:, 1:], chunk_size=7)
        lps.append(lp.detach())
        loss = loss + _loss(lp, ent) / WORLD
    loss.backward()
    return lps, {n: p.grad.clone() for n, p in model.named_parameters()}


def _sharded(rank: int, tied: bool) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    model = _policy(tied)
    head = model.lm_head
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert isinstance(head.weight, DTensor)  # outside the forward the head is a shard

    ids = _rows(model, rank)
    with head_passed_through(model) as seen:
        hidden = model(input_ids=ids).logits[:, :-1]
    assert model.lm_head is head  # put back
    assert not isinstance(seen.weight, DTensor) and seen.weight.shape == (model.config.vocab_size, POLICY["hidden_size"])
    lp, ent = chunked_logprobs(hidden, seen.weight, ids[:, 1:], chunk_size=7)
    full_lp, full_ent = naive_logprobs(hidden.detach(), seen.weight.detach(), ids[:, 1:])
    _loss(lp, ent).backward()
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}

    ref_lps, ref_grads = _reference(tied)
    return {
        "lp_err": float((lp.detach() - ref_lps[rank]).abs().max()),
        "naive_err": float((lp.detach() - full_lp).abs().max() + (ent.detach() - full_ent).abs().max()),
        "grad_errs": {n: float((grads[n] - ref_grads[n]).abs().max()) for n in ref_grads},
        "grad_scale": max(float(g.abs().max()) for g in ref_grads.values()),
    }


def _both_heads(rank: int, tmp: Path) -> dict:
    return {tied: _sharded(rank, tied) for tied in (True, False)}


def test_chunked_logprobs_on_two_sharded_ranks_match_one_process(tmp_path):
    results = run_ranks(_both_heads, WORLD, tmp_path)
    for r, res in enumerate(results):
        for tied, got in res.items():
            assert got["lp_err"] < 1e-5 and got["naive_err"] < 1e-4, (r, tied, got)
            assert got["grad_scale"] > 1e-3  # the comparison below is of real gradients
            bad = {n: e for n, e in got["grad_errs"].items() if e > 1e-5}
            assert not bad, (r, tied, bad)  # the head's (and the tied embedding's) gradient too


class _Plain(torch.nn.Module):
    def __init__(self, call_head: bool):
        super().__init__()
        self.lm_head = torch.nn.Linear(4, 6, bias=False)
        self.call_head = call_head

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new):
        self.lm_head = new

    def forward(self, x):
        return self.lm_head(x) if self.call_head else x


def test_pass_through_head_returns_hidden_and_keeps_the_model_unchanged():
    model = _Plain(call_head=True)
    head, params = model.lm_head, dict(model.named_parameters())
    x = torch.randn(2, 4)
    with head_passed_through(model) as seen:
        assert torch.equal(model(x), x)
        assert dict(model.named_parameters()) == {}  # the pass-through registers nothing
    assert seen.weight is head.weight
    assert model.lm_head is head and dict(model.named_parameters()) == params


def test_pass_through_head_is_put_back_when_the_forward_fails_and_refuses_a_model_that_never_calls_it():
    model = _Plain(call_head=True)
    head = model.lm_head
    with pytest.raises(ValueError, match="boom"):
        with head_passed_through(model):
            raise ValueError("boom")
    assert model.lm_head is head
    model = _Plain(call_head=False)
    with pytest.raises(RuntimeError, match="never called its output head"):
        with head_passed_through(model):
            model(torch.randn(2, 4))
    assert model.lm_head is model.get_output_embeddings()
