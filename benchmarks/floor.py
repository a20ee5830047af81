"""The floor: a minimal GRPO loop in one process with plain torch, next to the quickstart.

    python benchmarks/floor.py                         # quickstart settings: both rows, 40 steps each
    python benchmarks/floor.py --rows floor --steps 20 # the floor alone
    python benchmarks/floor.py a.b=c ...               # overrides for both rows

Both rows read `experiments/quickstart.yaml` (with the overrides): the same model class and size,
tokenizer, env (levels, fixed width, level weights), batch shape (`train.tasks_per_step` tasks x
`rollout.group_size` completions of at most `rollout.max_new_tokens` tokens, at
`rollout.temperature`), and the same starting policy: the quickstart's SFT bootstrap (cached by
`rl.sft`; `--no-sft`: the same random initialisation for both).

  floor       everything in this process and nothing else. Per step: `env.sample` tasks, prompts
              tokenized, completions sampled with a KV cache (one left-padded batch, one forward
              per token), `env.verify`, reward = the outcome reward (`partial_credit` as the
              YAML says), GRPO advantages (`rl.algorithms.grpo`), groups of equal rewards
              dropped, then one update on the rest: the project's `ppo_clip` on the completion
              tokens against the sampler's log-probs, AdamW at `optimizer.adamw_lr`. No Ray,
              MLflow, Parquet, evaluation, checkpoints, entropy bonus, QK-Clip or lr schedule.
  quickstart  `rl.trainer.train` on the same settings in this process (a Ray worker generates,
              the driver learns with MuonClip, MLflow and Parquet record), evaluation only at the
              end. Its step time is the trainer's own `time/step_s`.

The figure is completions/s: completions generated per second of step time, over the steps after
`--warmup`. The quickstart's completions/s as a fraction of the floor's is the framework's
overhead figure. `rl wall` adds what a step's time leaves out (the quickstart's checkpoints and
evaluations; nothing for the floor). Steps are timed, not learning: the rewards are shown so that
a row that stopped sampling sensible answers is seen, not to compare the optimizers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

QUICKSTART = REPO / "experiments" / "quickstart.yaml"


@dataclass
class Result:
    row: str
    step_s: list[float] = field(default_factory=list)  # the measured steps, after the warm-up
    completions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    trained: list[float] = field(default_factory=list)  # rows the update trained on (groups of equal rewards dropped)
    tokens: list[float] = field(default_factory=list)  # mean completion tokens
    rl_wall_s: float = 0.0
    optimizer: str = ""

    @property
    def completions_per_s(self) -> float:
        return sum(self.completions) / sum(self.step_s)

    @property
    def wall_completions_per_s(self) -> float:
        return sum(self.completions) / self.rl_wall_s


def load(overrides: list[str], steps: int, no_sft: bool):
    from rl.config import load_config

    base = ["train.max_minutes=null", f"train.steps={steps}", "train.eval_every=0", "checkpoint.every=0"]
    return load_config(QUICKSTART, [*base, *(["sft.enabled=false"] if no_sft else []), *overrides])


def starting_policy(cfg):
    """The model and tokenizer both rows start from: the SFT bootstrap, or the random init."""
    from policies.model import build_policy
    from rl.experiment_env import experiment_env
    from rl.sft import run_sft

    policy = cfg.policy
    if cfg.sft.enabled:
        policy = policy.model_copy(update={"path": str(run_sft(cfg, experiment_env(cfg)))})
    return build_policy(policy, seed=cfg.run.seed)


# ------------------------------------------------------------------------------------------ floor


@torch.no_grad()
def sample(model, prompts: list[list[int]], pad_id: int, eos_id: int, max_new: int, temperature: float, gen: torch.Generator):
    """Completions (token ids, per-token log-probs) for left-padded `prompts`, one forward per token."""
    from transformers import DynamicCache

    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True).logits[:, -1]
    next_pos, done = pos[:, -1] + 1, torch.zeros(n, dtype=torch.bool)
    tokens, logps = [], []
    for _ in range(max_new):
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        tok = torch.multinomial(logp.exp(), 1, generator=gen)[:, 0]
        tokens.append(torch.where(done, pad_id, tok))
        logps.append(logp.gather(-1, tok[:, None])[:, 0])
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
        done = done | (tok == eos_id)
        if bool(done.all()):
            break
        logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None], past_key_values=cache, use_cache=True).logits[:, -1]
        next_pos = next_pos + 1
    out = []
    for row_t, row_lp in zip(torch.stack(tokens, 1).tolist(), torch.stack(logps, 1).tolist()):
        length = next((j + 1 for j, t in enumerate(row_t) if t == eos_id), len(row_t))
        out.append((row_t[:length], row_lp[:length]))
    return out


def floor_step(model, optimizer, env, tokenizer, cfg, rng: np.random.Generator, gen: torch.Generator) -> tuple[int, float, int, float]:
    """One step; (completions, mean reward, rows trained on, mean completion tokens)."""
    from rewards.outcome import outcome
    from rl.algorithms import grpo, ppo_clip, token_logprobs

    g, a = cfg.rollout.group_size, cfg.algorithm
    tasks = env.sample(cfg.train.tasks_per_step, rng)
    prompts = [tokenizer(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks for _ in range(g)]
    model.eval()
    completions = sample(model, prompts, tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.rollout.max_new_tokens, cfg.rollout.temperature, gen)
    partial = bool(cfg.rewards.root["outcome"].params.get("partial_credit", False))
    rewards = torch.tensor([
        outcome(None, tasks[i // g], env.verify(tasks[i // g], tokenizer.decode(ids, skip_special_tokens=True)), partial_credit=partial)
        for i, (ids, _) in enumerate(completions)
    ])
    groups = torch.arange(len(prompts)) // g
    adv = grpo(rewards, groups)
    keep = [i for i in range(len(prompts)) if float(rewards[groups == groups[i]].std()) > 0]
    if keep:
        rows = [prompts[i] + completions[i][0] for i in keep]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        cmask = torch.zeros(len(rows), width - 1)
        old = torch.zeros(len(rows), width - 1)
        for r, i in enumerate(keep):
            p, (c, lp) = len(prompts[i]), completions[i]
            ids[r, : p + len(c)], attn[r, : p + len(c)] = torch.tensor(prompts[i] + c), 1
            cmask[r, p - 1 : p - 1 + len(c)] = 1.0  # position t predicts token t+1
            old[r, p - 1 : p - 1 + len(c)] = torch.tensor(lp)
        model.train()
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / cfg.rollout.temperature
        logprobs = token_logprobs(logits, ids[:, 1:])
        loss, _ = ppo_clip(logprobs, old, adv[keep], cmask, clip_low=a.clip_low, clip_high=a.clip_high, agg_mode=a.loss_agg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(prompts), float(rewards.mean()), len(keep), statistics.fmean(len(c) for c, _ in completions)


def run_floor(cfg, model, tokenizer, steps: int, warmup: int) -> Result:
    from rl.experiment_env import experiment_env

    env = experiment_env(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.adamw_lr, weight_decay=cfg.optimizer.weight_decay)
    rng, gen = np.random.default_rng(cfg.run.seed), torch.Generator().manual_seed(cfg.run.seed)
    res = Result("floor", optimizer="adamw")
    start = None
    for step in range(1, steps + 1):
        if step == warmup + 1:
            start = time.perf_counter()
        t0 = time.perf_counter()
        n, reward, trained, tokens = floor_step(model, optimizer, env, tokenizer, cfg, rng, gen)
        if step > warmup:
            res.step_s.append(time.perf_counter() - t0)
            res.completions.append(n)
            res.rewards.append(reward)
            res.trained.append(trained)
            res.tokens.append(tokens)
    res.rl_wall_s = time.perf_counter() - start
    return res


# ------------------------------------------------------------------------------------------ quickstart


def run_quickstart(cfg, steps: int, warmup: int, runs_dir: Path) -> Result:
    from mlflow.tracking import MlflowClient

    from rl.tracking import default_uri
    from rl.trainer import train

    # the run's folder is `runs_dir`'s; the SFT cache and the MLflow store stay the YAML's
    # (`run.runs_dir`), so the row starts from the cached bootstrap the floor row used
    run_dir = runs_dir / f"floor-quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    train(cfg, run_dir)
    client = MlflowClient(cfg.tracking.uri or default_uri(cfg.run.runs_dir))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    step_s, reward, wall = history("time/step_s"), history("reward/mean"), history("time/rl_wall_s")
    kept, tokens = history("train/kept_fraction"), history("train/completion_tokens")
    group = cfg.train.tasks_per_step * cfg.rollout.group_size
    measured = [s for s in sorted(step_s) if s > warmup]
    res = Result("quickstart", optimizer=cfg.optimizer.name)
    res.step_s = [step_s[s] for s in measured]
    res.completions = [group] * len(measured)
    res.rewards = [reward[s] for s in measured]
    res.trained = [kept[s] * group for s in measured]
    res.tokens = [tokens[s] for s in measured]
    res.rl_wall_s = wall[measured[-1]] - wall[warmup] if warmup in wall else sum(res.step_s)
    return res


# ------------------------------------------------------------------------------------------ report


def table(results: list[Result]) -> str:
    floor = next((r for r in results if r.row == "floor"), None)
    lines = [
        "| row | optimizer | steps | completions/s | vs floor | step s (median) | rl wall completions/s | reward (mean) | rows trained per step | tokens per completion |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r.completions_per_s / floor.completions_per_s:.2f}x" if floor else "-"
        lines.append(
            f"| {r.row} | {r.optimizer} | {len(r.step_s)} | {r.completions_per_s:,.0f} | {ratio} | {statistics.median(r.step_s):.3f} "
            f"| {r.wall_completions_per_s:,.0f} | {statistics.fmean(r.rewards):.3f} | {statistics.fmean(r.trained):.0f} | {statistics.fmean(r.tokens):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="measured steps per row")
    ap.add_argument("--warmup", type=int, default=5, help="steps run first and not measured")
    ap.add_argument("--rows", default="floor,quickstart", help="comma-separated: floor, quickstart")
    ap.add_argument("--no-sft", action="store_true", help="both rows from the random initialisation")
    ap.add_argument("--runs-dir", type=Path, default=None, help="where the quickstart row's run folder goes (default: a temporary folder; its MLflow run is in run.runs_dir's store)")
    ap.add_argument("overrides", nargs="*", help="a.b=c overrides of quickstart.yaml, for both rows")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(rows) - {"floor", "quickstart"}
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}: choose from floor, quickstart")
    total = args.warmup + args.steps
    cfg = load(args.overrides, total, args.no_sft)
    if set(cfg.rewards.root) != {"outcome"}:
        ap.error(f"the floor computes the outcome reward only; these settings have {sorted(cfg.rewards.root)}")
    print(f"floor: {cfg.train.tasks_per_step} tasks x {cfg.rollout.group_size}, {cfg.rollout.max_new_tokens} new tokens, "
          f"{total} steps per row ({args.warmup} warm-up), torch threads {torch.get_num_threads()}", flush=True)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            t0 = time.perf_counter()
            if row == "floor":
                model, tokenizer = starting_policy(cfg)
                results.append(run_floor(cfg, model, tokenizer, total, args.warmup))
            else:
                results.append(run_quickstart(cfg, total, args.warmup, args.runs_dir or Path(tmp)))
            print(f"  {row}: {results[-1].completions_per_s:,.0f} completions/s ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
