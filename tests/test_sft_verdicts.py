"""The verdict bootstrap: the SFT policy's own answers, graded by the checker, teach the verdict tag."""

from __future__ import annotations

import pytest

from envs.registry import env_kwargs, make_env
from rewards.self_verification import parse_self_verdict
from rl.config import validate_config
from rl.sft import run_sft
from rl.sft_verdicts import verdict_cache_dir, verdict_demonstrations, verdict_tag

pytestmark = pytest.mark.slow


def config(runs, **sft):
    return validate_config(
        {
            "run": {"seed": 3, "runs_dir": str(runs), "torch_threads": 2},
            "policy": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "head_dim": 32, "intermediate_size": 128, "max_position_embeddings": 48},
            "sft": {"examples": 8192, "batch_size": 64, "lr": 3.0e-3, **sft},
            "env": {"name": "math", "levels": [1]},
            "rollout": {"max_new_tokens": 28},
            "tracking": {"progress": False},
        }
    )


def test_verdict_labels_are_the_checkers_and_the_policy_learns_the_tag(tmp_path):
    from policies.model import load_model
    from policies.tokenizer import load_tokenizer
    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine

    # 1536 problems (96 verdict steps) sat at the edge: every tag well formed on one 2-core machine, none on another; 2048 and 3072 gave 24/24 there
    cfg = config(tmp_path, self_verdict_problems=3072, self_verdict_samples=4)
    env = make_env("math", **env_kwargs(cfg))
    base = run_sft(cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"self_verdict_problems": 0})}), env)

    # the labels: every row's answer graded again by the checker; the tag is its problem's pass rate
    tasks = env.eval_tasks(24)
    demos = verdict_demonstrations(env, load_model(base), load_tokenizer(base), tasks, samples=4, seed=0, max_new_tokens=8)
    assert len(demos) == 96
    passed = [env.verify(tasks[i // 4], d["answer"]).passed for i, d in enumerate(demos)]
    assert [d["passed"] for d in demos] == passed
    assert 0 < sum(passed) < len(passed)  # right and wrong answers both
    for i, d in enumerate(demos):
        rate = sum(passed[(i // 4) * 4 : (i // 4) * 4 + 4]) / 4
        assert d["rate"] == rate and d["completion"] == d["answer"] + verdict_tag(rate)
        assert d["segments"] == [[d["answer"], d["passed"]], [verdict_tag(rate), True]]  # a wrong answer is never a target
        assert parse_self_verdict(d["completion"]) == pytest.approx(round(rate, 1))
        assert env.verify(tasks[i // 4], d["completion"]).passed == d["passed"]  # the tag never changes the grade

    # the bootstrap: cached beside the answer policy, and its answers end with a well-formed verdict
    path = run_sft(cfg, env)
    assert path == verdict_cache_dir(cfg, base) and (path / "DONE").exists()
    tok = load_tokenizer(path)
    engine = HFEngine(load_model(path), tok.eos_token_id, tok.pad_token_id)
    prompts = [tok(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks]
    texts = [tok.decode(c.token_ids, skip_special_tokens=True) for c in engine.generate(prompts, SamplingParams(max_new_tokens=28, temperature=0.0), seed=0)]
    stated = [parse_self_verdict(t) for t in texts]
    assert sum(p is not None for p in stated) >= 0.9 * len(texts), texts
    assert sum(env.verify(t, x).parsed for t, x in zip(tasks, texts)) >= 0.9 * len(texts), texts  # answers still read as numbers
