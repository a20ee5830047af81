"""The learner's shared-prompt forward pass: the outputs, gradients, QK maxima and updates of
one pass per row, from the prompt computed once."""

from __future__ import annotations

import copy

import pytest
import torch

from policies.model import build_policy
from policies.qk_probe import probe_qk, read_max_logits
from rl.batch import build_batch
from rl.config import load_config
from rl.learner import Learner
from rl.shared_prefix import shared_prefix_outputs
from rollout.episode import Episode, Turn


def _cfg(shared: bool, chunked: bool = True, arch: str = "llama"):
    return load_config(
        "experiments/quickstart.yaml",
        [f"algorithm.shared_prefix={str(shared).lower()}", f"algorithm.chunked_logprobs={str(chunked).lower()}", f"policy.arch={arch}", "sft.enabled=false"],
    )


def _tokens(tokenizer, n: int, g: torch.Generator) -> list[int]:
    vocab = [i for i in range(len(tokenizer)) if i not in (tokenizer.pad_token_id, tokenizer.eos_token_id)]
    return [vocab[int(j)] for j in torch.randint(0, len(vocab), (n,), generator=g)]


def _group_batch(tokenizer, seed: int, prompts: int = 3, group: int = 4, multi_turn: bool = True):
    """`group` completions of each of `prompts` prompts (lengths 2-8), rows in shuffled order;
    with `multi_turn`, one more row whose prompt is shared and whose episode goes on after an
    untrained observation."""
    g = torch.Generator().manual_seed(seed)
    heads = [_tokens(tokenizer, int(torch.randint(2, 9, (), generator=g)), g) for _ in range(prompts)]
    episodes = []
    for k in torch.randperm(prompts * group, generator=g).tolist():
        c = _tokens(tokenizer, int(torch.randint(1, 6, (), generator=g)), g)
        turn = Turn(role="assistant", text="", token_ids=c, logprobs=[-1.0] * len(c), trainable=True)
        episodes.append(Episode(task_id=str(k % prompts), env="math", prompt="", prompt_ids=heads[k % prompts], turns=[turn], group=k % prompts))
    if multi_turn:
        a, obs, b = (_tokens(tokenizer, n, g) for n in (3, 2, 4))
        turns = [
            Turn(role="assistant", text="", token_ids=a, logprobs=[-1.0] * 3, trainable=True),
            Turn(role="tool", text="", token_ids=obs, logprobs=[0.0] * 2, trainable=False),
            Turn(role="assistant", text="", token_ids=b, logprobs=[-1.0] * 4, trainable=True),
        ]
        episodes.append(Episode(task_id="0", env="math", prompt="", prompt_ids=heads[0], turns=turns, group=0))
    adv = torch.randn(len(episodes), generator=g).tolist()
    return build_batch(episodes, adv, tokenizer.pad_token_id)


@pytest.mark.parametrize("chunked, arch", [(True, "llama"), (False, "llama"), (True, "qwen2")])
def test_shared_prompt_pass_gives_the_plain_pass_logprobs_entropies_grads_and_qk_maxima(chunked, arch):
    seed = int(torch.randint(0, 10_000, ()))
    model, tok = build_policy(_cfg(True, arch=arch).policy, seed=seed)
    batch = _group_batch(tok, seed)
    out = {}
    for shared in (True, False):
        learner = Learner.from_config(model, _cfg(shared, chunked, arch))
        model.zero_grad(set_to_none=True)
        with probe_qk(model):
            lp, ent = learner._logprobs(model, batch)
        qk = read_max_logits(model, reset=True)
        (lp * batch.completion_mask * torch.linspace(0.5, 1.5, lp.shape[1])).sum().backward()
        out[shared] = (lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, qk)
    (lp_s, ent_s, g_s, qk_s), (lp_p, ent_p, g_p, qk_p) = out[True], out[False]
    m = batch.completion_mask.bool()
    assert int(m.sum()) == sum(int(r.sum()) for r in batch.completion_mask)  # the multi-turn row is in
    torch.testing.assert_close(lp_s[m], lp_p[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent_s[m], ent_p[m], atol=1e-5, rtol=1e-5)
    assert g_s.keys() == g_p.keys() and len(g_p) > 5
    for name in g_p:
        torch.testing.assert_close(g_s[name], g_p[name], atol=1e-5, rtol=1e-4, msg=name)
    assert qk_s.keys() == qk_p.keys() and len(qk_p) == 4
    for layer in qk_p:
        torch.testing.assert_close(qk_s[layer], qk_p[layer], atol=1e-4, rtol=1e-5)


def test_the_prompts_go_through_the_model_once():
    model, tok = build_policy(_cfg(True).policy, seed=1)
    batch = _group_batch(tok, 1, prompts=3, group=8, multi_turn=False)
    shapes = []
    body = model.model

    def forward(**kw):
        shapes.append(tuple(kw["input_ids"].shape))
        return body(**kw).last_hidden_state

    out = shared_prefix_outputs(forward, batch)
    assert out is not None and out.shape[:2] == batch.completion_mask.shape
    prompt_lens = batch.completion_mask.argmax(dim=1) + 1
    assert shapes[0] == (3, int(prompt_lens.max()))  # the 3 distinct prompts
    assert shapes[1][0] == 24  # then every row, from its first completion token only
    assert shapes[1][1] == int((batch.attention_mask.sum(1) - prompt_lens).max())


def test_plain_pass_when_nothing_is_shared_or_a_row_trains_on_nothing():
    model, tok = build_policy(_cfg(True).policy, seed=2)
    body = model.model
    forward = lambda **kw: body(**kw).last_hidden_state  # noqa: E731
    distinct = _group_batch(tok, 2, prompts=5, group=1, multi_turn=False)
    assert shared_prefix_outputs(forward, distinct) is None
    untrained = _group_batch(tok, 3)
    untrained.completion_mask[0] = 0
    assert shared_prefix_outputs(forward, untrained) is None


def test_one_update_lands_on_the_same_weights_either_way():
    seed = int(torch.randint(0, 10_000, ()))
    model, tok = build_policy(_cfg(True).policy, seed=seed)
    batch = _group_batch(tok, seed)
    after, metrics = {}, {}
    for shared in (True, False):
        m = copy.deepcopy(model)
        metrics[shared] = Learner.from_config(m, _cfg(shared)).update(batch)
        after[shared] = m.state_dict()
    for name, value in after[False].items():
        torch.testing.assert_close(after[True][name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert metrics[True]["learner/qk_max_logit"] == pytest.approx(metrics[False]["learner/qk_max_logit"], rel=1e-5)
    assert metrics[True]["learner/loss"] == pytest.approx(metrics[False]["learner/loss"], abs=1e-6)
