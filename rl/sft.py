"""SFT bootstrap: teach the random-init policy the task format from oracle solutions.

RL needs a policy that is right some of the time; from noise every group has zero reward
variance and GRPO learns nothing. We fine-tune on `sft.examples` oracle demonstrations from the
training split with TRL's `SFTTrainer` (loss on completion tokens only). The result is cached
under `<runs_dir>/sft-cache/<hash of policy, env, sft, seed>` and reused by later runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from envs.base import Env
from rl.config import ExperimentConfig


def sft_cache_dir(cfg: ExperimentConfig, env: Env) -> Path:
    """Keyed by the settings and by the demonstrations themselves: a change to an env's generator
    must not reuse a policy trained on the old tasks."""
    sample = json.dumps(demonstrations(env, 32, cfg.sft_seed), sort_keys=True)
    key = hashlib.sha256((cfg.sft_fingerprint() + sample).encode()).hexdigest()[:12]
    return Path(cfg.run.runs_dir) / "sft-cache" / f"{cfg.env.name}-{key}-seed{cfg.sft_seed}"


def demonstrations(env: Env, n: int, seed: int) -> list[dict]:
    """Prompt/completion pairs: the env's own multi-turn `demonstrations` if it has them (the
    completion is then a whole transcript, with `segments` marking the observation text that is
    not trained on), else `oracle` answers."""
    rng = np.random.default_rng([seed, 7919])  # a stream the RL sampler (seeded by step) never uses
    if hasattr(env, "demonstrations"):
        return env.demonstrations(n, rng)
    return [{"prompt": t.prompt, "completion": env.oracle(t)} for t in env.sample(n, rng)]


def segment_masked(demos: list[dict], tokenizer) -> list[dict]:
    """Pre-tokenised examples for multi-turn demonstrations: `input_ids` = prompt + every segment
    + EOS, `assistant_masks` = 1 on the trainable segments and the EOS only (TRL turns the mask into
    labels), so environment observations inside a transcript are context, never targets."""
    out = []
    for d in demos:
        ids = tokenizer(d["prompt"], add_special_tokens=False)["input_ids"]
        mask = [0] * len(ids)
        for text, trainable in d["segments"]:
            seg = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids, mask = ids + seg, mask + [int(trainable)] * len(seg)
        out.append({"input_ids": ids + [tokenizer.eos_token_id], "assistant_masks": mask + [1]})
    return out


def run_sft(cfg: ExperimentConfig, env: Env, *, log=print) -> Path:
    """Train (or reuse) the SFT policy; returns its folder (a `from_pretrained` folder). With
    `sft.self_verdict_problems`, the answer policy then learns to judge its answers
    (`rl.sft_verdicts`), and that policy is returned."""
    if cfg.policy.arch == "llava":
        from rl.sft_vlm import run_vlm_sft

        return run_vlm_sft(cfg, env, log=log)
    out = sft_cache_dir(cfg, env)
    if cfg.sft.cache and (out / "DONE").exists():
        log(f"sft: reusing cached policy {out}")
    else:
        from policies.model import build_policy

        model, tokenizer = build_policy(cfg.policy, seed=cfg.sft_seed)
        demos = demonstrations(env, cfg.sft.examples, cfg.sft_seed)
        work = out.with_name(out.name + ".tmp")
        fit(cfg, model, tokenizer, segment_masked(demos, tokenizer) if "segments" in demos[0] else demos, work, log=log)
        shutil.rmtree(out, ignore_errors=True)
        work.replace(out)
    if cfg.sft.self_verdict_problems:
        from rl.sft_verdicts import run_verdict_sft

        return run_verdict_sft(cfg, env, out, log=log)
    return out


def fit(cfg: ExperimentConfig, model, tokenizer, examples: list[dict], work: Path, *, log=print, epochs: float | None = None) -> None:
    """Fine-tune `model` on `examples` (prompt/completion pairs, or pre-tokenised `segment_masked`
    rows) with TRL's `SFTTrainer` and the `sft` settings; the result goes to `work` (with `DONE`)."""
    import torch

    threads_before = torch.get_num_threads()  # the learner that runs after the bootstrap keeps its own
    threads = cfg.sft.torch_threads or cfg.run.torch_threads
    if threads:
        torch.set_num_threads(threads)
    try:
        _train(cfg, model, tokenizer, examples, work, log=log, epochs=epochs)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: ExperimentConfig, model, tokenizer, examples: list[dict], work: Path, *, log, epochs: float | None) -> None:
    import datasets
    import torch
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from policies.model import save_policy

    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if cfg.sft.group_by_length:
        order = length_grouped_order([_length(e) for e in examples], cfg.sft.batch_size, np.random.default_rng([cfg.sft_seed, 104729]))
        examples = [examples[i] for i in order]
    data = Dataset.from_list(examples)
    shutil.rmtree(work, ignore_errors=True)
    args = TRLSFTConfig(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=cfg.sft.batch_size,
        num_train_epochs=cfg.sft.epochs if epochs is None else epochs,
        max_steps=cfg.sft.max_steps if epochs is None else -1,
        learning_rate=cfg.sft.lr,
        lr_scheduler_type="cosine",
        warmup_steps=10,
        weight_decay=cfg.sft.weight_decay,
        logging_steps=25,
        save_strategy="no",
        report_to="none",
        seed=cfg.sft_seed,
        completion_only_loss=True,
        max_length=cfg.policy.max_position_embeddings,
        use_cpu=not torch.cuda.is_available(),
        # TRL defaults to bf16 autocast; on CPU that is ~20x slower than fp32 for a model this size.
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        train_sampling_strategy="sequential" if cfg.sft.group_by_length else "random",  # grouped: the order above
        disable_tqdm=not cfg.tracking.progress,
    )
    t0 = time.perf_counter()
    callbacks = [QKClipCallback(cfg.sft.qk_clip_tau)] if cfg.sft.qk_clip_tau else []
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=callbacks)
    result = trainer.train()
    log(f"sft: {result.global_step} steps, final train loss {result.training_loss:.4f}, {time.perf_counter() - t0:.0f}s")
    shutil.rmtree(work / "trainer", ignore_errors=True)
    save_policy(trainer.model, tokenizer, work)
    (work / "DONE").write_text(f"steps={result.global_step}\nloss={result.training_loss}\n")


def length_grouped_order(lengths: list[int], batch_size: int, rng: np.random.Generator, window: int = 50) -> list[int]:
    """An epoch's order in which each run of `batch_size` examples has similar lengths (few pad
    tokens) and the batches come in random order: shuffle, sort each window of `window` batches by
    length, cut it into batches, shuffle the batches.

    transformers' length-grouped sampler keeps each window's batches longest first, so a mix of
    kinds of demonstration arrives as runs of one kind; on the swarm bootstrap at width 16 that
    left the policy far behind a random order after the same steps (loss 2.14 against 1.78 after
    150 steps), while this order keeps the kinds interleaved."""
    idx = rng.permutation(len(lengths)).tolist()
    span = window * batch_size
    batches = []
    for start in range(0, len(idx), span):
        chunk = sorted(idx[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    full = [batches[j] for j in rng.permutation(len(batches)) if len(batches[j]) == batch_size]
    short = [b for b in batches if len(b) < batch_size]  # last: the loader cuts every batch_size examples
    return [i for b in full + short for i in b]


def _length(example: dict) -> int:
    if "input_ids" in example:
        return len(example["input_ids"])
    return len(example.get("prompt", "")) + len(example.get("completion", ""))


def _qk_clip_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class QKClipCallback(_qk_clip_callback_base()):
    """QK-Clip inside TRL's loop: probe every forward pass, clip heads over tau after every step."""

    def __init__(self, tau: float):
        self.tau = tau
        self.clipped = 0

    def on_train_begin(self, args, state, control, model=None, **kw):
        from policies.qk_probe import attention_modules

        for m in attention_modules(model):
            m.qk_probe_enabled = True

    def on_optimizer_step(self, args, state, control, model=None, **kw):
        from policies.qk_probe import read_max_logits
        from rl.optim import qk_clip

        self.clipped += qk_clip(model, read_max_logits(model, reset=True), self.tau)["clipped_heads"]

    def on_train_end(self, args, state, control, model=None, **kw):
        from policies.qk_probe import attention_modules

        for m in attention_modules(model):
            m.qk_probe_enabled = False
