"""What cuDNN's attention costs when the shapes keep changing, as they do in RL: decoding with the
`hf` engine (which excludes cuDNN on CUDA, `kernels.sdpa`) and learner updates (which keep
PyTorch's choice, cuDNN first for bf16 on Hopper), each against the other choice.

    python benchmarks/sdpa_kernels.py             # on a GPU: the Qwen2.5-0.5B shape of gpu_check
    python benchmarks/sdpa_kernels.py --dry-run   # the tiny shape on the CPU: no cuDNN there, so the
                                                  # rows differ by noise and first-use costs only

cuDNN builds an execution plan per new input shape and caches it, so the order of the rows is
part of the measurement: a warm-up over every measured shape runs first with cuDNN excluded
(cuBLAS and the other kernels have then seen them all), then each cuDNN row runs at shapes cuDNN
has not seen (what an RL step meets), then again at the same shapes (cached: its best case).

  decoding   the same 128 requests (16 prompts x 8, shared prefill) for `gen_tokens` new tokens
             from one random model: fp32 (the rollout workers' dtype; cuDNN does not apply),
             bf16 with the engine's choice, bf16 with PyTorch's (new shapes, then cached).
             Every decoding step attends over one more key: a new shape per step.
  learner    `rl.learner.Learner.update` at bf16 (gpu_check's b1 settings) on batches of
             `LEARNER_STEPS` different row lengths (a new shape per update): cuDNN excluded,
             then PyTorch's choice (new shapes, then cached).

Figures: seconds, tokens/s and the ratio to the cuDNN-excluded row of the same part, all in one
process. `--profile` adds the top ops by GPU self time of a short bf16 decode under PyTorch's choice.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.nn.attention import SDPBackend  # noqa: E402

import kernels.sdpa  # noqa: E402
from benchmarks.gpu_check import QWEN25_05B, TINY, build_model, encode, experiment, learner_batch, math_tasks  # noqa: E402
from policies.tokenizer import load_tokenizer  # noqa: E402
from rollout.engines.base import SamplingParams  # noqa: E402
from rollout.engines.hf import HFEngine  # noqa: E402

PYTORCH_CHOICE = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
LEARNER_STEPS = 5


@contextmanager
def pytorch_choice():
    """Every SDPA kernel allowed, cuDNN included: the engine as it would run without `kernels.sdpa`."""
    saved = list(kernels.sdpa.CUDA_KERNELS)
    kernels.sdpa.CUDA_KERNELS[:] = PYTORCH_CHOICE
    try:
        yield
    finally:
        kernels.sdpa.CUDA_KERNELS[:] = saved


def cudnn_excluded(device: str):
    """The engine's choice, applied around a learner update (which itself keeps PyTorch's)."""
    return kernels.sdpa.attention_kernels(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def decode_rows(model, tokenizer, scale, device) -> list[tuple]:
    prompts = [p for p in encode(tokenizer, math_tasks(scale.gen_prompts, seed=1)) for _ in range(scale.gen_group)]
    engines = {dtype: HFEngine(copy.deepcopy(model).to(dtype), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=len(prompts))
               for dtype in (torch.float32, torch.bfloat16)}
    # a whole warm-up run per engine with cuDNN excluded: cuBLAS, the allocator and the math and
    # fused kernels have then seen every shape, so a cuDNN row below pays for cuDNN's plans only
    for engine in engines.values():
        engine.generate(prompts, SamplingParams(max_new_tokens=scale.gen_tokens, temperature=1.0), seed=0)

    def run(dtype) -> tuple[float, int]:
        _sync(device)
        start = time.perf_counter()
        out = engines[dtype].generate(prompts, SamplingParams(max_new_tokens=scale.gen_tokens, temperature=1.0), seed=1)
        _sync(device)
        return time.perf_counter() - start, sum(len(c.token_ids) for c in out)

    rows = []
    for name, dtype, choice in (
        ("fp32, engine's choice", torch.float32, False),
        ("bf16, engine's choice (cuDNN excluded)", torch.bfloat16, False),
        ("bf16, PyTorch's choice, new shapes", torch.bfloat16, True),
        ("bf16, PyTorch's choice, same shapes again", torch.bfloat16, True),
    ):
        with pytorch_choice() if choice else nullcontext():
            seconds, tokens = run(dtype)
        rows.append((name, seconds, tokens))
        print(f"  decoding {name}: {seconds:.2f} s, {tokens / seconds:,.0f} tok/s", flush=True)
    return rows


def learner_rows(scale, device) -> list[tuple]:
    from rl.learner import Learner

    cfg = experiment(scale, device)
    learner = Learner.from_config(build_model(scale, load_tokenizer(None), device), cfg)
    tokens = scale.learner_runs[0][0]
    step = max(1, scale.row_len // 64)
    lengths = [scale.row_len + step * (k + 1) for k in range(LEARNER_STEPS)]

    def batch(length: int):
        shaped = dataclasses.replace(scale, row_len=length)
        return learner_batch(shaped, tokens, seed=length)

    batches = [batch(n) for n in lengths]
    with cudnn_excluded(device):  # warm-up over the measured lengths: a cuDNN row then pays for cuDNN's plans only
        for b in batches:
            learner.update(b)

    def run() -> tuple[float, int, float]:
        times = []
        for b in batches:
            _sync(device)
            start = time.perf_counter()
            learner.update(b)
            _sync(device)
            times.append(time.perf_counter() - start)
        return sum(times), sum(int(b.attention_mask.sum()) for b in batches), statistics.median(times)

    rows = []
    for name, exclude in (
        ("cuDNN excluded", True),
        ("PyTorch's choice (the learner's), new shapes", False),
        ("PyTorch's choice (the learner's), same shapes again", False),
    ):
        with cudnn_excluded(device) if exclude else nullcontext():
            seconds, n_tokens, median = run()
        rows.append((f"{name}: {LEARNER_STEPS} updates, lengths {lengths[0]}-{lengths[-1]}", seconds, n_tokens, median))
        print(f"  learner {name}: {seconds:.2f} s, median update {median:.3f} s", flush=True)
    return rows


def profile(model, tokenizer, scale, device) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    prompts = [p for p in encode(tokenizer, math_tasks(scale.gen_prompts, seed=2)) for _ in range(scale.gen_group)]
    engine = HFEngine(copy.deepcopy(model).to(torch.bfloat16), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=len(prompts))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with pytorch_choice(), torch_profile(activities=activities) as prof:
        engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=1.0), seed=1)
        _sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"\n### bf16 decode, PyTorch's choice, 8 new tokens: top ops by {key}\n")
    print(prof.key_averages().table(sort_by=key, row_limit=10, max_name_column_width=60))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="the tiny shape on the CPU")
    ap.add_argument("--parts", default="dl", help="d: decoding, l: learner updates")
    ap.add_argument("--profile", action="store_true", help="also print the top ops of a short bf16 decode")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    scale = TINY if device == "cpu" else QWEN25_05B
    tokenizer = load_tokenizer(None)
    print(f"sdpa_kernels: {device}, torch {torch.__version__}", flush=True)

    if "d" in args.parts:
        model = build_model(scale, tokenizer, device)
        rows = decode_rows(model, tokenizer, scale, device)
        base = rows[1][2] / rows[1][1]
        print(f"\n| decoding, {scale.gen_prompts} prompts x {scale.gen_group}, {scale.gen_tokens} new tokens | s | tok/s | vs bf16 engine's choice |\n|---|---|---|---|")
        for name, seconds, tokens in rows:
            print(f"| {name} | {seconds:.2f} | {tokens / seconds:,.0f} | {tokens / seconds / base:.2f}x |")
        if args.profile:
            profile(model, tokenizer, scale, device)
        del model
    if "l" in args.parts:
        rows = learner_rows(scale, device)
        base = rows[0][2] / rows[0][1]
        print("\n| learner update bf16, a new row length per update | s (all) | median update s | tok/s | vs cuDNN excluded |\n|---|---|---|---|---|")
        for name, seconds, tokens, median in rows:
            print(f"| {name} | {seconds:.2f} | {median:.3f} | {tokens / seconds:,.0f} | {tokens / seconds / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
