"""SFT bootstrap for a vision-language policy: a plain torch loop on oracle answers.

TRL's SFTTrainer handles VLMs through chat templates and its own collator for conversational
image datasets; the character tokenizer has no chat template and the prompts here are one
image plus a question, so a dozen lines of torch are simpler than adapting the data to TRL.
Same contract as `rl.sft.run_sft`: loss on the completion (answer + EOS) only, AdamW with
cosine decay, result cached by content hash under `<runs_dir>/sft-cache/` as a
`from_pretrained` folder holding the model and its processor.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from envs.base import Env, Task
from rl.config import ExperimentConfig


def demo_tasks(env: Env, n: int, seed: int) -> list[Task]:
    rng = np.random.default_rng([seed, 7919])  # a stream the RL sampler (seeded by step) never uses
    return env.sample(n, rng)


def vlm_sft_cache_dir(cfg: ExperimentConfig, env: Env) -> Path:
    """Keyed by the settings, the image processor's normalisation and sample demonstrations, images
    included: a policy trained on differently normalised pixels must not be reused."""
    from policies.vlm import build_image_processor

    h = hashlib.sha256(cfg.sft_fingerprint().encode())
    if not cfg.policy.path:
        h.update(build_image_processor(cfg.policy.vision.image_size).to_json_string().encode())
    for t in demo_tasks(env, 32, cfg.sft_seed):
        h.update(t.prompt.encode() + env.oracle(t).encode() + b"".join(t.images))
    return Path(cfg.run.runs_dir) / "sft-cache" / f"{cfg.env.name}-vlm-{h.hexdigest()[:12]}-seed{cfg.sft_seed}"


def run_vlm_sft(cfg: ExperimentConfig, env: Env, *, log=print) -> Path:
    """Train (or reuse) the SFT policy; returns its folder."""
    out = vlm_sft_cache_dir(cfg, env)
    if cfg.sft.cache and (out / "DONE").exists():
        log(f"sft: reusing cached policy {out}")
        return out

    from policies.model import build_policy
    from policies.vlm import pixel_values, processor_for
    from rollout.image_prompt import encode_image_prompt

    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    model, tokenizer = build_policy(cfg.policy, seed=cfg.sft_seed)
    processor = processor_for(cfg.policy, tokenizer)
    tasks = demo_tasks(env, cfg.sft.examples, cfg.sft_seed)
    prompts = [encode_image_prompt(processor, t)["prompt_token_ids"] for t in tasks]
    answers = [tokenizer(env.oracle(t), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in tasks]

    bs = cfg.sft.batch_size
    steps_per_epoch = math.ceil(len(tasks) / bs)
    total = cfg.sft.max_steps if cfg.sft.max_steps > 0 else max(1, round(cfg.sft.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft.lr, weight_decay=cfg.sft.weight_decay)
    warmup = min(10, total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
    )
    gen = torch.Generator().manual_seed(cfg.sft_seed)
    model.train()
    t0, losses, step = time.perf_counter(), [], 0
    while step < total:
        for idx in torch.randperm(len(tasks), generator=gen).split(bs):
            if step == total:
                break
            rows = idx.tolist()
            ids, labels, mask = _pad([prompts[i] for i in rows], [answers[i] for i in rows], tokenizer.pad_token_id)
            pv = pixel_values(processor.image_processor, [b for i in rows for b in tasks[i].images])  # [B, C, H, W]
            loss = model(input_ids=ids, attention_mask=mask, pixel_values=pv, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % 50 == 0:
                log(f"sft: step {step}/{total} loss {np.mean(losses[-50:]):.4f}")
    model.eval()
    log(f"sft: {step} steps, final train loss {np.mean(losses[-20:]):.4f}, {time.perf_counter() - t0:.0f}s")
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    model.save_pretrained(work)
    processor.save_pretrained(work)
    (work / "DONE").write_text(f"steps={step}\nloss={np.mean(losses[-20:])}\n")
    shutil.rmtree(out, ignore_errors=True)
    work.replace(out)
    return out


def _pad(prompts: list[list[int]], answers: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L], labels (-100 except on answer tokens) and attention mask."""
    width = max(len(p) + len(a) for p, a in zip(prompts, answers))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
        mask[i, : len(p) + len(a)] = 1
    return ids, labels, mask
