"""Verdict bootstrap: teach an SFT policy to end its answers with a verdict on them.

Demonstrations where every answer is right would teach "always correct". Instead the policy's
own answers are used, right and wrong: the answer SFT policy samples `sft.self_verdict_samples`
answers to each of `sft.self_verdict_problems` training problems, the env's checker grades every
sample, and each sample becomes a demonstration

    prompt + answer + <verify>p=q</verify> + EOS

with q the checker's pass rate over that problem's samples, rounded to one decimal: the chance
that an answer of this policy to this problem is right, the value the Brier rule pays best. The
verdict is always trained; the answer only where the checker passed it (a wrong answer is
context: training on it would teach it), which also keeps the answers from drifting while the
policy learns to follow them with a tag instead of EOS. The bootstrap's verdicts are therefore well formed and honest about difficulty, but say nothing yet
about the particular sample; RL with `self_verification` (Brier) is what can teach that.

Cached beside the answer SFT policy, keyed by that policy and these settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from envs.base import Env, Task
from rl.config import ExperimentConfig


def verdict_tag(q: float) -> str:
    return f"<verify>p={round(q, 1):.1f}</verify>"


def verdict_demonstrations(env: Env, model, tokenizer, tasks: list[Task], samples: int, seed: int, max_new_tokens: int) -> list[dict]:
    """One demonstration per sampled answer, task-major (`samples` per task). Each carries the
    graded answer (`answer`, `passed`) and the problem's pass rate (`rate`) beside the
    prompt/completion/segments that training reads."""
    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine

    engine = HFEngine(model, tokenizer.eos_token_id, tokenizer.pad_token_id)
    prompts = [tokenizer(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks for _ in range(samples)]
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0), seed)
    answers = [tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in completions]
    out = []
    for i, task in enumerate(tasks):
        mine = answers[i * samples : (i + 1) * samples]
        passed = [env.verify(task, a).passed for a in mine]
        rate = sum(passed) / samples
        for answer, ok in zip(mine, passed):
            tag = verdict_tag(rate)
            out.append(
                {
                    "prompt": task.prompt,
                    "completion": answer + tag,
                    "segments": [[answer, ok], [tag, True]],
                    "answer": answer,
                    "passed": ok,
                    "rate": rate,
                }
            )
    return out


def verdict_cache_dir(cfg: ExperimentConfig, base: Path) -> Path:
    s = cfg.sft
    settings = {
        "base": base.name,
        "problems": s.self_verdict_problems,
        "samples": s.self_verdict_samples,
        "seed": cfg.sft_seed,
        "bs": s.batch_size,
        "lr": s.lr,
        "max_new_tokens": cfg.rollout.max_new_tokens,
    }
    key = json.dumps(settings, sort_keys=True)
    return base.with_name(f"{base.name}-verdicts-{hashlib.sha256(key.encode()).hexdigest()[:10]}")


def run_verdict_sft(cfg: ExperimentConfig, env: Env, base: Path, *, log=print) -> Path:
    """Train (or reuse) the verdict bootstrap on top of the answer SFT policy in `base`."""
    from rl.sft import fit, segment_masked

    out = verdict_cache_dir(cfg, base)
    if cfg.sft.cache and (out / "DONE").exists():
        log(f"sft: reusing cached verdict policy {out}")
        return out
    from policies.model import load_model
    from policies.tokenizer import load_tokenizer

    model, tokenizer = load_model(base), load_tokenizer(base)
    rng = np.random.default_rng([cfg.sft_seed, 15485863])  # a stream neither the answer SFT nor RL uses
    tasks = env.sample(cfg.sft.self_verdict_problems, rng)
    t0 = time.perf_counter()
    demos = verdict_demonstrations(env, model, tokenizer, tasks, cfg.sft.self_verdict_samples, cfg.sft_seed, cfg.rollout.max_new_tokens)
    rate = sum(d["passed"] for d in demos) / len(demos)
    log(f"sft: {len(demos)} graded answers of the SFT policy for verdict demonstrations ({rate:.1%} right), {time.perf_counter() - t0:.0f}s")
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    fit(cfg, model, tokenizer, segment_masked(demos, tokenizer), work, log=log, epochs=1.0)
    shutil.rmtree(out, ignore_errors=True)
    work.replace(out)
    return out
