"""MuonClip vs AdamW token efficiency on the math SFT task (Moonlight's claim: Muon needs ~half the tokens).

  python benchmarks/muonclip.py            # lr sweep per optimizer, then 3 seeds each at the tuned lr
  python benchmarks/muonclip.py --quick    # smaller sweep and runs, a smoke test of the numbers

Both optimizers come from `rl.optim.build_optimizer` ("muonclip": Muon on hidden matrices +
AdamW elsewhere + QK-Clip at τ; "adamw": AdamW everywhere) and train the quickstart's tiny Llama
(`experiments/quickstart.yaml` `policy:`) on the same oracle demonstrations of the math env
(levels 1-3), in the same order per seed, with next-token loss on the completion (answer + EOS).
The loop is plain torch, one thread: deterministic per seed, and no trainer overhead in the timing.

Held-out metric: exact match on the env's held-out problems, read off one teacher-forced forward
pass: every completion token (answer and EOS) is the argmax. That is the same event as greedy
decoding writing exactly the oracle answer, at a fraction of the cost; the final value is also
checked by greedy generation (`rollout.engines.hf`) scored with the env's verifier.

Newton-Schulz precision is the optimizer's `ns_dtype` ("auto": float32 on CPU, bfloat16 on
CUDA); `--ns-dtype bfloat16` forces torch's precision (15-30x slower on a CPU without bfloat16
matrix units).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

LEVELS = (1, 2, 3)
EVAL_SIZE = 512
IGNORE = -100


# ---------------------------------------------------------------- data


@dataclass
class Encoded:
    """Right-padded prompt+completion rows; labels are the completion tokens only."""

    ids: torch.Tensor  # long [N, T]
    labels: torch.Tensor  # long [N, T], IGNORE outside the completion
    mask: torch.Tensor  # long [N, T]

    def __len__(self) -> int:
        return self.ids.shape[0]

    def rows(self, index: torch.Tensor) -> "Encoded":
        """Selected rows, trimmed to their longest: a batch of short problems stays short."""
        mask = self.mask[index]
        width = int(mask.sum(1).max())
        return Encoded(self.ids[index, :width], self.labels[index, :width], mask[:, :width])

    def tokens(self) -> int:
        """Tokens the model reads (prompt + completion, no padding)."""
        return int(self.mask.sum())


def encode(demos: list[dict[str, str]], tokenizer) -> Encoded:
    """Prompt ids as the rollout engine sees them (no special tokens), then answer + EOS."""
    pairs = []
    for d in demos:
        prompt = tokenizer(d["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(d["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        pairs.append((prompt, answer))
    width = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (p, a) in enumerate(pairs):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        labels[i, len(p) : n] = torch.tensor(a)
        mask[i, :n] = 1
    return Encoded(ids, labels, mask)


@dataclass
class Task:
    """The training pool, the held-out set (encoded and as env tasks), and what built them."""

    train: Encoded
    heldout: Encoded
    heldout_tasks: list
    env: object
    tokenizer: object
    policy_cfg: object


def load_task(examples: int, data_seed: int = 0, eval_size: int = EVAL_SIZE) -> Task:
    """`examples` oracle demonstrations from the training split (`rl.sft.demonstrations`) and
    the env's first `eval_size` held-out problems, for the quickstart policy."""
    from envs.registry import make_env
    from policies.tokenizer import load_tokenizer
    from rl.config import load_config
    from rl.sft import demonstrations

    cfg = load_config(REPO / "experiments" / "quickstart.yaml")
    env = make_env("math", levels=LEVELS, eval_size=eval_size)
    tokenizer = load_tokenizer(cfg.policy.tokenizer)
    heldout_tasks = env.eval_tasks(eval_size)
    heldout = encode([{"prompt": t.prompt, "completion": env.oracle(t)} for t in heldout_tasks], tokenizer)
    train = encode(demonstrations(env, examples, data_seed), tokenizer)
    return Task(train, heldout, heldout_tasks, env, tokenizer, cfg.policy)


# ---------------------------------------------------------------- model, optimizer, schedule


def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay to 0 at `total` (the SFT bootstrap's schedule) or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------- training


@dataclass
class RunConfig:
    optimizer: str  # "muonclip" | "adamw"
    lr: float  # Muon's and AdamW's (RMS-matched: one scale for both parts)
    steps: int
    seed: int = 0
    batch_size: int = 64
    weight_decay: float = 0.1
    warmup: int = 20
    schedule: str = "cosine"  # | "constant"
    grad_clip: float = 1.0  # the learner's default
    qk_clip: bool = True  # muonclip only; False: plain Muon (+ AdamW)
    tau: float = 100.0
    eval_every: int = 25
    probe: bool = True  # record the max attention logit each step (muonclip always does)
    remeasure: bool = False  # also probe the step's batch again after the update and QK-Clip
    clip_on: str = "step"  # QK-Clip on the logits of "step" (the step's forward pass) or "remeasured" (after the update)
    ns_dtype: str = "auto"  # Muon's Newton-Schulz precision


@dataclass
class RunResult:
    cfg: RunConfig
    steps: list[int] = field(default_factory=list)  # per training step
    tokens: list[int] = field(default_factory=list)  # cumulative training tokens after the step
    train_loss: list[float] = field(default_factory=list)
    max_logit: list[float] = field(default_factory=list)  # measured in the step's forward pass
    max_logit_after: list[float] = field(default_factory=list)  # same batch, after update and clip
    clipped_heads: list[int] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)  # {"step", "tokens", "loss", "exact"}
    seconds: float = 0.0
    pass_at_1: float = float("nan")  # greedy generation + the env's verifier, at the end
    model: object = None

    def first_reaching(self, key: str, target: float, higher_is_better: bool = True) -> dict | None:
        for e in self.evals:
            if (e[key] >= target) if higher_is_better else (e[key] <= target):
                return e
        return None


@torch.no_grad()
def evaluate(model, data: Encoded, batch: int = 512) -> dict[str, float]:
    """Held-out completion loss (per token) and exact match (every completion token is the argmax)."""
    was_training = model.training
    model.eval()
    loss_sum, tokens, exact = 0.0, 0, 0
    for start in range(0, len(data), batch):
        part = data.rows(torch.arange(start, min(start + batch, len(data))))
        logits = model(input_ids=part.ids, attention_mask=part.mask).logits[:, :-1].float()
        target = part.labels[:, 1:]
        counted = target != IGNORE
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
        loss_sum += float(ce[counted].sum())
        tokens += int(counted.sum())
        right = (logits.argmax(-1) == target) | ~counted
        exact += int(right.all(dim=1).sum())
    model.train(was_training)
    return {"loss": loss_sum / tokens, "exact": exact / len(data)}


def train(
    task: Task,
    cfg: RunConfig,
    on_step: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """One run: build the policy (seeded), the project optimizer, then `cfg.steps` SFT steps."""
    from policies.model import build_model
    from policies.qk_probe import overall_max_logit, probe_qk, read_max_logits
    from rl.optim import build_optimizer, qk_clip

    torch.manual_seed(cfg.seed)
    model = build_model(task.policy_cfg, task.tokenizer, seed=cfg.seed)
    model.train()
    precision = {} if cfg.ns_dtype == "auto" else {"ns_dtype": cfg.ns_dtype}  # "auto" is the builder's default
    opt = build_optimizer(model, name=cfg.optimizer, lr=cfg.lr, adamw_lr=cfg.lr, weight_decay=cfg.weight_decay, **precision)
    base_lrs = [g["lr"] for g in opt.param_groups]
    clipping = cfg.optimizer == "muonclip" and cfg.qk_clip
    probing = cfg.probe or clipping
    order = torch.from_numpy(np.random.default_rng([cfg.seed, 31]).permutation(len(task.train)))
    need = cfg.steps * cfg.batch_size
    if need > len(order):
        raise ValueError(f"{cfg.steps} steps of {cfg.batch_size} need {need} examples, the pool has {len(order)}")
    result = RunResult(cfg)
    seen = 0
    t0 = time.perf_counter()
    result.evals.append({"step": 0, "tokens": 0, **evaluate(model, task.heldout)})
    for step in range(cfg.steps):
        factor = lr_factor(step, cfg.steps, cfg.warmup, cfg.schedule)
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * factor
        batch = task.train.rows(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
        with probe_qk(model, enabled=probing):
            loss = model(input_ids=batch.ids, attention_mask=batch.mask, labels=batch.labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        logits = read_max_logits(model, reset=True)
        clip_logits = logits
        if clipping and cfg.clip_on == "remeasured":
            with torch.no_grad(), probe_qk(model):
                model(input_ids=batch.ids, attention_mask=batch.mask)
            clip_logits = read_max_logits(model, reset=True)
        clipped = qk_clip(model, clip_logits, cfg.tau)["clipped_heads"] if clipping else 0
        if cfg.remeasure:
            with torch.no_grad(), probe_qk(model):
                model(input_ids=batch.ids, attention_mask=batch.mask)
            result.max_logit_after.append(overall_max_logit(read_max_logits(model, reset=True)))
        seen += batch.tokens()
        result.steps.append(step + 1)
        result.tokens.append(seen)
        result.train_loss.append(float(loss.detach()))
        result.max_logit.append(overall_max_logit(logits) if probing else float("nan"))
        result.clipped_heads.append(int(clipped))
        if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            result.evals.append({"step": step + 1, "tokens": seen, **evaluate(model, task.heldout)})
        if on_step is not None:
            on_step(result)
    result.seconds = time.perf_counter() - t0
    result.model = model
    return result


def greedy_pass_at_1(model, task: Task) -> float:
    """Greedy completions of the held-out prompts from the rollout engine, scored by the env's verifier."""
    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine

    was_training = model.training
    engine = HFEngine(model, task.tokenizer.eos_token_id, task.tokenizer.pad_token_id)
    prompts = [task.tokenizer(t.prompt, add_special_tokens=False)["input_ids"] for t in task.heldout_tasks]
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0.0), seed=0)
    model.train(was_training)
    texts = [task.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in completions]
    return sum(task.env.verify(t, x).passed for t, x in zip(task.heldout_tasks, texts)) / len(texts)


# ---------------------------------------------------------------- the benchmark


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# (metric, higher is better) of the targets, in the order the tables print them
TARGETS = (("loss", False), ("exact", True))


def sweep(task: Task, grid: dict[str, list[float]], steps: int, args) -> dict[str, float]:
    """Short runs (seed 0) over each optimizer's lr grid; the best final held-out loss wins."""
    best: dict[str, float] = {}
    rows = []
    for name, lrs in grid.items():
        scores = {}
        for lr in lrs:
            cfg = RunConfig(name, lr, steps, seed=0, batch_size=args.batch_size, eval_every=steps, tau=args.tau, probe=False,
                            ns_dtype=args.ns_dtype)
            r = train(task, cfg)
            final = r.evals[-1]
            scores[lr] = final["loss"]
            rows.append([name, f"{lr:g}", f"{final['loss']:.4f}", f"{final['exact']:.1%}", f"{r.seconds:.0f}s"])
            print(f"  sweep {name:8s} lr={lr:<7g} held-out loss {final['loss']:.4f}  exact {final['exact']:.1%}  ({r.seconds:.0f}s)", flush=True)
        best[name] = min(scores, key=scores.get)
        if len(lrs) > 2 and best[name] in (min(lrs), max(lrs)):
            print(f"  note: {name}'s best lr {best[name]:g} is at the edge of its grid")
    print(f"\nlr sweep ({steps} steps of {args.batch_size}, seed 0, warm-up + cosine over the run; pick: lowest held-out loss):")
    print(table(["optimizer", "lr", "held-out loss", "exact", "time"], rows))
    print("tuned: " + ", ".join(f"{k} lr={v:g}" for k, v in best.items()))
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sweep and shorter runs (~4 min)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, help="steps of the seeded runs (default 400; --quick 150)")
    p.add_argument("--sweep-steps", type=int, help="steps of the sweep runs (default 150; --quick 60)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--loss-target", type=float, help="held-out loss to reach (default 1.30; --quick 1.55)")
    p.add_argument("--exact-target", type=float, help="held-out exact match to reach (default 0.10; --quick 0.03)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--tau", type=float, default=100.0, help="QK-Clip threshold of the muonclip runs")
    p.add_argument("--ns-dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="Muon's Newton-Schulz precision")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    steps = args.steps or (150 if args.quick else 400)
    sweep_steps = args.sweep_steps or (60 if args.quick else 150)
    targets = {
        "loss": args.loss_target if args.loss_target is not None else (1.55 if args.quick else 1.30),
        "exact": args.exact_target if args.exact_target is not None else (0.03 if args.quick else 0.10),
    }
    # Three points each, bracketing each optimizer's optimum (found in earlier, longer runs).
    grid = {"muonclip": [6e-3, 1.5e-2], "adamw": [2.5e-3, 6e-3]} if args.quick else {
        "muonclip": [2.5e-3, 6e-3, 1.5e-2], "adamw": [1e-3, 2.5e-3, 6e-3]}

    t0 = time.perf_counter()
    task = load_task(max(steps, sweep_steps) * args.batch_size)
    print(f"data: {len(task.train)} demonstrations (levels {list(LEVELS)}), {len(task.heldout)} held-out problems; "
          f"policy {task.policy_cfg.arch} hidden {task.policy_cfg.hidden_size}, {task.policy_cfg.num_layers} layers; "
          f"Newton-Schulz in {args.ns_dtype}; {args.threads} thread(s)", flush=True)
    best = sweep(task, grid, sweep_steps, args)
    runs: dict[str, list[RunResult]] = {name: [] for name in best}
    for seed in range(args.seeds):
        for name, lr in best.items():
            cfg = RunConfig(name, lr, steps, seed=seed, batch_size=args.batch_size, tau=args.tau, eval_every=args.eval_every,
                            ns_dtype=args.ns_dtype)
            r = train(task, cfg)
            r.pass_at_1 = greedy_pass_at_1(r.model, task)
            r.model = None
            runs[name].append(r)
            print(f"  seed {seed} {name:8s} lr={lr:g}: held-out loss {r.evals[-1]['loss']:.4f}, exact {r.evals[-1]['exact']:.1%}, "
                  f"greedy pass@1 {r.pass_at_1:.1%}, max logit {max(r.max_logit):.1f}, "
                  f"clipped heads {sum(r.clipped_heads)} ({r.seconds:.0f}s)", flush=True)
    report(runs, best, targets, steps, args)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


def report(runs: dict[str, list[RunResult]], best: dict[str, float], targets: dict[str, float], steps: int, args) -> None:
    def hit(r: RunResult, metric: str) -> dict | None:
        return r.first_reaching(metric, targets[metric], dict(TARGETS)[metric])

    def cell(e: dict | None, key: str) -> str:
        return f"{e[key]:,}" if e else f">{steps}" if key == "step" else "-"

    rows = []
    for name, rs in runs.items():
        for r in rs:
            h_loss, h_exact = hit(r, "loss"), hit(r, "exact")
            rows.append([
                name, f"{best[name]:g}", str(r.cfg.seed),
                cell(h_loss, "step"), cell(h_loss, "tokens"), cell(h_exact, "step"), cell(h_exact, "tokens"),
                f"{r.evals[-1]['loss']:.4f}", f"{r.evals[-1]['exact']:.1%}", f"{r.pass_at_1:.1%}", f"{max(r.max_logit):.1f}",
            ])
    print(f"\nseeded runs: {steps} steps of {args.batch_size} demonstrations, held-out metrics every {args.eval_every} steps; "
          f"targets: held-out loss <= {targets['loss']:.2f}, exact match >= {targets['exact']:.0%}")
    print(table(["optimizer", "lr", "seed", "steps to loss", "tokens to loss", "steps to exact", "tokens to exact",
                 "final loss", "final exact", "greedy pass@1", "max logit"], rows))

    seeds = sorted({r.cfg.seed for rs in runs.values() for r in rs})
    by = {(n, r.cfg.seed): r for n, rs in runs.items() for r in rs}
    for metric, _ in TARGETS:
        ratio_rows, pairs = [], []
        for seed in seeds:
            m, a = hit(by[("muonclip", seed)], metric), hit(by[("adamw", seed)], metric)
            ratio = f"{m['tokens'] / a['tokens']:.2f}x" if m and a else "n/a (not reached)"
            ratio_rows.append([str(seed), cell(m, "tokens"), cell(a, "tokens"), ratio])
            if m and a:
                pairs.append((m["tokens"], a["tokens"]))
        if pairs:
            mean_m, mean_a = statistics.mean(p[0] for p in pairs), statistics.mean(p[1] for p in pairs)
            ratio_rows.append(["mean", f"{mean_m:,.0f}", f"{mean_a:,.0f}", f"{mean_m / mean_a:.2f}x"])
        what = f"held-out loss <= {targets[metric]:.2f}" if metric == "loss" else f"held-out exact match >= {targets[metric]:.0%}"
        print(f"\ntraining tokens to {what}, MuonClip / AdamW (Moonlight's goal: <= 0.6x):")
        print(table(["seed", "muonclip tokens", "adamw tokens", "ratio"], ratio_rows))
    final = lambda n, k: statistics.mean(r.evals[-1][k] for r in runs[n])  # noqa: E731
    print("final, mean over seeds: " + "; ".join(
        f"{n}: held-out loss {final(n, 'loss'):.4f}, exact {final(n, 'exact'):.1%}, "
        f"greedy pass@1 {statistics.mean(r.pass_at_1 for r in runs[n]):.1%}" for n in runs))


if __name__ == "__main__":
    raise SystemExit(main())
