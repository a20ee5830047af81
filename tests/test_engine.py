"""The `hf` engine: cached batched sampling agrees with plain forward passes."""

from __future__ import annotations

import pytest
import torch

from policies.model import build_policy
from rl.batch import build_batch
from rl.config import PolicyConfig
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine
from rollout.episode import Episode, Turn


@pytest.fixture(scope="module")
def policy():
    model, tok = build_policy(PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128), seed=5)
    return model.eval(), tok


def prompts_of(tok, texts):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


TEXTS = ["1+2=", "123+456=", "7-9=", "50*3="]


def greedy_reference(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(prompt):]


@torch.no_grad()
def test_greedy_matches_uncached_single_prompt_decoding(policy):
    model, tok = policy
    # no EOS can stop it early: only the budget ends these rows
    engine = HFEngine(model, eos_token_id=10_000, pad_token_id=tok.pad_token_id)
    prompts = prompts_of(tok, TEXTS)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=0), seed=0)
    for p, c in zip(prompts, out):
        assert c.token_ids == greedy_reference(model, p, 6)
        assert c.finish_reason == "length"


@torch.no_grad()
def test_sampler_logprobs_equal_learner_logprobs(policy):
    model, tok = policy
    engine = HFEngine(model, tok.eos_token_id, tok.pad_token_id)
    prompts = prompts_of(tok, TEXTS * 4)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=0.7), seed=1)
    episodes = [Episode(task_id="t", env="math", prompt="", prompt_ids=p, turns=[Turn("assistant", "", c.token_ids, c.logprobs, True)]) for p, c in zip(prompts, out)]
    batch = build_batch(episodes, [0.0] * len(episodes), tok.pad_token_id)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / 0.7
    lp = torch.log_softmax(logits, -1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    m = batch.completion_mask.bool()
    assert m.sum() == sum(len(c.token_ids) for c in out)
    assert torch.allclose(lp[m], batch.old_logprobs[m], atol=1e-4)


def test_seeded_sampling_is_reproducible_and_seed_dependent(policy):
    model, tok = policy
    engine = HFEngine(model, tok.eos_token_id, tok.pad_token_id)
    prompts = prompts_of(tok, TEXTS * 8)
    params = SamplingParams(max_new_tokens=6, temperature=1.0)
    a = [c.token_ids for c in engine.generate(prompts, params, seed=3)]
    b = [c.token_ids for c in engine.generate(prompts, params, seed=3)]
    c = [c.token_ids for c in engine.generate(prompts, params, seed=4)]
    assert a == b and a != c


def test_stop_tokens_end_a_row_and_are_kept(policy):
    model, tok = policy
    engine = HFEngine(model, tok.eos_token_id, tok.pad_token_id)
    prompts = prompts_of(tok, TEXTS)
    free = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=0), seed=0)
    stop = free[0].token_ids[1]
    out = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=0, stop_token_ids=(stop,)), seed=0)
    assert out[0].finish_reason == "stop" and out[0].token_ids[-1] == stop
    for f, o in zip(free, out):
        if stop in f.token_ids:
            assert o.token_ids == f.token_ids[: f.token_ids.index(stop) + 1]
        else:
            assert o.token_ids == f.token_ids


def test_tiny_top_p_is_greedy(policy):
    model, tok = policy
    engine = HFEngine(model, tok.eos_token_id, tok.pad_token_id)
    prompts = prompts_of(tok, TEXTS)
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=0), seed=0)
    nucleus = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=1.0, top_p=1e-6), seed=9)
    assert [c.token_ids for c in greedy] == [c.token_ids for c in nucleus]


def test_load_weights_changes_outputs(policy):
    model, tok = policy
    other, _ = build_policy(PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128), seed=6)
    import copy

    engine = HFEngine(copy.deepcopy(model), 10_000, tok.pad_token_id)
    prompts = prompts_of(tok, TEXTS)
    params = SamplingParams(max_new_tokens=6, temperature=0)
    before = [c.token_ids for c in engine.generate(prompts, params, seed=0)]
    engine.load_weights(other.state_dict())
    after = [c.token_ids for c in engine.generate(prompts, params, seed=0)]
    assert after == [greedy_reference(other.eval(), p, 6) for p in prompts]
    assert before != after


@torch.no_grad()
def test_shared_prefill_samples_what_one_prefill_per_row_samples(policy):
    model, tok = policy
    # duplicates interleaved and of different lengths, as a rollout step's groups would not guarantee order
    prompts = prompts_of(tok, ["123+456=", "1+2=", "7-9=", "1+2=", "123+456=", "50*3=", "1+2="] * 3)
    params = SamplingParams(max_new_tokens=6, temperature=1.0)
    prefill_rows = []
    hook = model.register_forward_pre_hook(lambda mod, args, kw: prefill_rows.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        shared = HFEngine(model, tok.eos_token_id, tok.pad_token_id).generate(prompts, params, seed=7)
        first_call = prefill_rows[0]
        prefill_rows.clear()
        per_row = HFEngine(model, tok.eos_token_id, tok.pad_token_id, share_prefill=False).generate(prompts, params, seed=7)
    finally:
        hook.remove()
    assert first_call == (4, 8)  # 4 distinct prompts, the longest 8 tokens
    assert prefill_rows[0] == (len(prompts), 8)
    assert [c.token_ids for c in shared] == [c.token_ids for c in per_row]
    assert [c.finish_reason for c in shared] == [c.finish_reason for c in per_row]
    for a, b in zip(shared, per_row):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    # the copies of one prompt still draw their own samples
    assert len({tuple(shared[i].token_ids) for i in (1, 3, 6, 8, 10, 13)}) > 1
