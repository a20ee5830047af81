"""benchmarks/floor.py: the minimal loop is a correct GRPO loop (its sampler's log-probs are the
model's, left padding and the KV cache included; an update moves the weights), and it runs on the
quickstart's settings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import floor  # noqa: E402


def _tiny():
    cfg = floor.load(["policy.hidden_size=32", "policy.num_layers=1", "policy.num_heads=1", "policy.intermediate_size=64",
                      "train.tasks_per_step=4", "rollout.group_size=4"], steps=2, no_sft=True)
    model, tokenizer = floor.starting_policy(cfg)
    return cfg, model, tokenizer


def test_sampled_logprobs_are_the_models_own_under_left_padding_and_the_cache():
    cfg, model, tok = _tiny()
    model.eval()
    prompts = [tok("12+3=", add_special_tokens=False)["input_ids"], tok("7*8=", add_special_tokens=False)["input_ids"], tok("1=", add_special_tokens=False)["input_ids"]]
    out = floor.sample(model, prompts, tok.pad_token_id, tok.eos_token_id, 6, 0.7, torch.Generator().manual_seed(0))
    assert len(out) == 3
    for prompt, (ids, lps) in zip(prompts, out):
        assert 0 < len(ids) == len(lps) <= 6
        assert tok.eos_token_id not in ids[:-1]  # a row stops at its first EOS
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + ids])).logits[0].float() / 0.7
        want = torch.log_softmax(logits, -1)[len(prompt) - 1 : len(prompt) - 1 + len(ids)].gather(-1, torch.tensor(ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(lps), want, atol=1e-4), (lps, want)


def test_a_floor_step_trains_when_rewards_differ_and_counts_every_completion(monkeypatch):
    cfg, model, tok = _tiny()
    from rl.experiment_env import experiment_env

    env = experiment_env(cfg)
    # rewards that differ inside every group: the first completion of each group passes
    calls = {"n": 0}
    real = env.verify

    def verify(task, text):
        calls["n"] += 1
        v = real(task, text)
        return type(v)(passed=calls["n"] % cfg.rollout.group_size == 1, score=float(calls["n"] % cfg.rollout.group_size == 1), parsed=True)

    monkeypatch.setattr(env, "verify", verify)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    n, reward, trained, tokens = floor.floor_step(model, optimizer, env, tok, cfg, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert n == cfg.train.tasks_per_step * cfg.rollout.group_size == calls["n"] == trained  # every group has a pass and a fail
    assert 0 < tokens <= cfg.rollout.max_new_tokens
    assert abs(reward - 1 / cfg.rollout.group_size) < 1e-6
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_floor_row_prints_its_table(capsys):
    assert floor.main(["--rows", "floor", "--steps", "2", "--warmup", "1", "--no-sft", "policy.num_layers=1", "train.tasks_per_step=2", "rollout.group_size=2"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| floor |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "adamw" and cells[2] == "2" and cells[4] == "1.00x" and float(cells[3].replace(",", "")) > 0
