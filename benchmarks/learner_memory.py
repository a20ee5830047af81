"""Peak memory of one learner update on a batch of long rows: one pass vs micro-batches vs
micro-batches with gradient checkpointing.

  python benchmarks/learner_memory.py [--rows 64] [--prompt 64] [--max-len 512] [--budget 4096] [--threads 2]

The policy is the quickstart's architecture (llama, 4 layers) widened to `--hidden`; the batch is
`--rows` rows in groups of 8 that share a `--prompt`-token prompt, completions of uniformly random
length up to `--max-len` (so the rows are long and padded, and the activations, not the weights,
fill the memory). Each variant runs in its own process: on the CPU the peak is the process's
resident high-water mark (`ru_maxrss`) during the update less its resident size just before, and
a fresh process is the only way to reset that mark. The time is the median of `--repeats` updates
after the measured one, from the same weights.

    plain          one forward/backward over the batch (algorithm.shared_prefix as in the quickstart)
    micro          learner.max_tokens_per_microbatch = --budget, with the shared prefix: the plan
                   that computes fewer positions, prompt groups together or rows sorted by length
                   (`rl.microbatch.plan_microbatches`)
    micro, no shared prefix   the same budget, rows sorted by length, one pass per row
    micro+ckpt     the budget with learner.gradient_checkpointing (which runs the plain pass: rows
                   sorted by length, no shared prefix)

The padding column is the share of the positions computed that are padding (rows x longest row
per pass): one right-padded pass against the length-sorted micro-batches.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "plain": [],
    "micro": ["learner.max_tokens_per_microbatch={budget}"],
    "micro, no shared prefix": ["learner.max_tokens_per_microbatch={budget}", "algorithm.shared_prefix=false"],
    "micro+ckpt": ["learner.max_tokens_per_microbatch={budget}", "learner.gradient_checkpointing=true"],
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def grouped_batch(tokenizer, rows: int, prompt: int, max_len: int, seed: int, group: int = 8):
    """`rows` rows in groups of `group` sharing a `prompt`-token prompt, completions of 1..max_len-prompt tokens."""
    import torch

    from rl.batch import build_batch
    from rollout.episode import Episode, Turn

    g = torch.Generator().manual_seed(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in (tokenizer.pad_token_id, tokenizer.eos_token_id)]

    def tokens(k: int) -> list[int]:
        return [vocab[int(j)] for j in torch.randint(0, len(vocab), (k,), generator=g)]

    episodes = []
    for r in range(rows):
        if r % group == 0:
            shared = tokens(prompt)
        c = int(torch.randint(1, max_len - prompt + 1, (), generator=g))
        turn = Turn("assistant", "", tokens(c), (-torch.rand(c, generator=g) * 3).tolist(), True)
        episodes.append(Episode(task_id=str(r // group), env="math", prompt="", prompt_ids=shared, turns=[turn], group=r // group))
    return build_batch(episodes, torch.randn(rows, generator=g).tolist(), tokenizer.pad_token_id)


def run_variant(args: argparse.Namespace) -> dict[str, float]:
    import copy

    import torch

    from policies.model import build_policy
    from rl.config import load_config
    from rl.learner import Learner
    from rl.microbatch import padding_fraction, plan_microbatches

    torch.set_num_threads(args.threads)
    overrides = [
        "sft.enabled=false",
        f"policy.hidden_size={args.hidden}",
        f"policy.intermediate_size={4 * args.hidden}",
        f"policy.max_position_embeddings={args.max_len}",
        f"rollout.max_new_tokens={args.max_len}",
        *(o.format(budget=args.budget) for o in VARIANTS[args.variant]),
    ]
    cfg = load_config(ROOT / "experiments/quickstart.yaml", overrides)
    model, tok = build_policy(cfg.policy, seed=0)
    batch = grouped_batch(tok, args.rows, args.prompt, args.max_len, seed=1)
    start = copy.deepcopy(model.state_dict())
    learner = Learner.from_config(model, cfg)
    optimizer_start = copy.deepcopy(learner.optimizer.state_dict())
    before = _rss_mib()
    t0 = time.perf_counter()
    learner.update(batch)
    first_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    times = []
    for _ in range(args.repeats):
        model.load_state_dict(start)
        learner.optimizer.load_state_dict(optimizer_start)
        t0 = time.perf_counter()
        learner.update(batch)
        times.append(time.perf_counter() - t0)
    plan = plan_microbatches(batch, cfg.learner.max_tokens_per_microbatch, share_prompts=learner.shared_prefix)
    return {
        "peak_mib": peak,
        "step_s": statistics.median(times) if times else first_s,
        "padding": padding_fraction(batch, plan),
        "passes": len(plan),
        "tokens": int(batch.attention_mask.sum()),
    }


def _passed_on(args: argparse.Namespace) -> list[str]:
    """The measurement's settings, for the child process."""
    keys = ("rows", "prompt", "max_len", "hidden", "budget", "repeats", "threads")
    return [x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--budget", type=int, default=4096, help="learner.max_tokens_per_microbatch of the micro variants")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), help="measure these variants (plain is always measured: it is the baseline)")  # one measurement, in a child process
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    rows = {}
    names = [n for n in VARIANTS if n == "plain" or not args.only or n in args.only]
    for name in names:
        cmd = [sys.executable, __file__, "--variant", name] + _passed_on(args)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    plain = rows["plain"]
    print(f"\nlearner update, {args.rows} rows of up to {args.max_len} tokens ({plain['tokens']} real), hidden {args.hidden}, budget {args.budget} tokens")
    print("| variant | passes | padding | peak (MiB) | vs plain | step (s) | vs plain |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['passes']} | {r['padding']:.1%} | {r['peak_mib']:.0f} | {r['peak_mib'] / plain['peak_mib']:.2f}x "
            f"| {r['step_s']:.2f} | {r['step_s'] / plain['step_s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
