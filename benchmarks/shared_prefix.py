"""Prompt sharing: one rollout step's sampling and learner update with each distinct prompt computed
once, against one pass per completion, same model, same batch, one process.

  python benchmarks/shared_prefix.py [--experiment experiments/quickstart.yaml] [--repeats 20] [--threads 2]

The policy is the experiment's model at random init (the cost does not depend on the weights);
the prompts are `train.tasks_per_step` env tasks, each `rollout.group_size` times, as in a rollout
step. Sampling: the `hf` engine with `share_prefill` on and off, same seed (the completions are
the same). Update: `Learner.update` with `algorithm.shared_prefix` on and off, each from the same
weights and optimizer state. Each repeat runs both sides back to back; the table shows medians
and the ratio shared / per-row.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", default="experiments/quickstart.yaml")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from envs.registry import env_kwargs, make_env
    from policies.model import build_policy
    from rl.batch import build_batch
    from rl.config import load_config
    from rl.learner import Learner
    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine
    from rollout.episode import Episode, Turn

    torch.set_num_threads(args.threads)
    cfgs = {s: load_config(args.experiment, ["sft.enabled=false", f"algorithm.shared_prefix={str(s).lower()}"]) for s in (True, False)}
    cfg = cfgs[True]
    model, tok = build_policy(cfg.policy, seed=0)
    env = make_env(cfg.env.name, **env_kwargs(cfg))
    tasks = env.sample(cfg.train.tasks_per_step, np.random.default_rng(0))
    prompts = [tok(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks for _ in range(cfg.rollout.group_size)]
    params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature)
    engines = {s: HFEngine(model, tok.eos_token_id, tok.pad_token_id, share_prefill=s) for s in (True, False)}

    completions = engines[True].generate(prompts, params, seed=0)
    episodes = [
        Episode(task_id=str(i // cfg.rollout.group_size), env=cfg.env.name, prompt="", prompt_ids=p, turns=[Turn("assistant", "", c.token_ids, c.logprobs, True)])
        for i, (p, c) in enumerate(zip(prompts, completions))
    ]
    advantages = torch.randn(len(episodes), generator=torch.Generator().manual_seed(0)).tolist()
    batch = build_batch(episodes, advantages, tok.pad_token_id)
    learners = {s: Learner.from_config(copy.deepcopy(model), cfgs[s]) for s in (True, False)}
    start = {s: (copy.deepcopy(learners[s].model.state_dict()), copy.deepcopy(learners[s].optimizer.state_dict())) for s in (True, False)}

    times: dict[tuple[str, bool], list[float]] = {}
    for r in range(args.repeats + 2):  # the first two warm up
        for s in (True, False):
            t0 = time.perf_counter()
            engines[s].generate(prompts, params, seed=r)
            t1 = time.perf_counter()
            learners[s].model.load_state_dict(start[s][0])
            learners[s].optimizer.load_state_dict(start[s][1])
            t2 = time.perf_counter()
            learners[s].update(batch)
            t3 = time.perf_counter()
            if r >= 2:
                times.setdefault(("sample", s), []).append(t1 - t0)
                times.setdefault(("update", s), []).append(t3 - t2)

    n_tokens = sum(len(p) for p in prompts) + sum(len(c.token_ids) for c in completions)
    print(f"{args.experiment}: {len(tasks)} prompts x {cfg.rollout.group_size} completions, {n_tokens} tokens, {args.threads} threads, {args.repeats} repeats")
    print(f"{'':28s}{'shared prompts':>16s}{'one per row':>14s}{'ratio':>8s}")
    for what, label in (("sample", "sampling (hf engine) s"), ("update", "learner update s")):
        a, b = statistics.median(times[(what, True)]), statistics.median(times[(what, False)])
        print(f"{label:28s}{a:16.4f}{b:14.4f}{a / b:8.2f}")


if __name__ == "__main__":
    main()
