"""Kernel benchmarks on CPU: chunked vs naive log-prob + entropy, batched Newton-Schulz vs torch's Muon.

  python benchmarks/kernels.py [--threads 1] [--repeats 3] [--tokens 1024,2048,4096,8192]
                               [--ns-layers 1] [--slow-seconds 20] [--skip-logprob] [--skip-ns]

Log-prob + entropy, forward and backward (gradients for hidden states and the output head),
float32, vocabulary 32000, hidden 512, temperature 1. The goal is at most 25% of the naive peak
memory at no more than 1.1x its time.
  memory: every (implementation, tokens) pair runs in a fresh subprocess: peak resident set
          size (VmHWM, reset through /proc/self/clear_refs just before the call) minus the
          resident size right before it, around one forward + backward. This is what the OS
          sees of torch's CPU allocations, gradients included ([V, D] float32 = 62.5 MiB).
  time:   one subprocess per token count alternates naive and chunked runs (one warm-up each,
          then `--repeats` each) and reports the medians, so a load change hits both alike.

Newton-Schulz: one optimizer step over Qwen2-shaped hidden matrices (q, k, v, o, gate, up, down
per layer) with random gradients: `torch.optim.Muon.step()` (one matrix at a time, bfloat16),
against the same step with `kernels.newton_schulz.orthogonalize` (one batched call per shape)
in bfloat16 and in float32. The batched bf16 step must give Muon's parameters (checked). The
0.5B-shaped set has 1 of Qwen2-0.5B's 24 layers by default (`--ns-layers`): the cost is linear
in the layers, and on a CPU without bf16 matrix units one bf16 Muon step over a single layer of
those shapes already takes minutes. Such slow cases run once (`--slow-seconds`).

Threads: `torch.set_num_threads(--threads)`, 1 by default, in every process: the machine has two
cores and another process may be using one. Each timing is the median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kernels.logprob import CHUNK_ELEMENTS, chunked_logprobs, naive_logprobs  # noqa: E402
from kernels.newton_schulz import orthogonalize  # noqa: E402

VOCAB, HIDDEN = 32000, 512
IMPLS = {"naive": naive_logprobs, "chunked": lambda h, w, t: chunked_logprobs(h, w, t, backend="torch")}


# ------------------------------------------------------------------------------------------
# log-prob + entropy


def _logprob_inputs(tokens: int):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, HIDDEN, generator=g).requires_grad_()
    w = (torch.randn(VOCAB, HIDDEN, generator=g) * HIDDEN**-0.5).requires_grad_()
    t = torch.randint(0, VOCAB, (tokens,), generator=g)
    return h, w, t


def _fwd_bwd(fn, h, w, t) -> None:
    h.grad = w.grad = None
    lp, ent = fn(h, w, t)
    (lp.sum() - 0.01 * ent.sum()).backward()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(impl: str, tokens: int) -> dict:
    """Runs in its own process: peak RSS growth (MiB) over one forward + backward."""
    h, w, t = _logprob_inputs(tokens)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    _fwd_bwd(IMPLS[impl], h, w, t)
    return {"peak_mib": (_status_kib("VmHWM") - before) / 1024}


def measure_time(tokens: int, repeats: int) -> dict:
    """Runs in its own process: median seconds per forward + backward, naive and chunked interleaved."""
    h, w, t = _logprob_inputs(tokens)
    times: dict[str, list[float]] = {k: [] for k in IMPLS}
    for i in range(repeats + 1):
        for name, fn in IMPLS.items():
            start = time.perf_counter()
            _fwd_bwd(fn, h, w, t)
            if i:  # the first round is a warm-up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def _in_subprocess(args: list[str], threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def logprob_table(token_counts: list[int], threads: int, repeats: int) -> None:
    rows = []
    for n in token_counts:
        mem = {impl: _in_subprocess(["--measure-memory", impl, str(n)], threads)["peak_mib"] for impl in IMPLS}
        sec = _in_subprocess(["--measure-time", str(n), "--repeats", str(repeats)], threads)
        rows.append((n, mem, sec))
    rows_per_chunk = max(1, CHUNK_ELEMENTS["cpu"] // VOCAB)
    print(f"\nlog-prob + entropy, forward + backward: vocab {VOCAB}, hidden {HIDDEN}, float32, "
          f"chunk {rows_per_chunk} rows, {threads} thread(s), median of {repeats}")
    print(f"{'tokens':>6} {'naive MiB':>10} {'chunked MiB':>11} {'mem ratio':>9} {'naive s':>8} {'chunked s':>9} {'time ratio':>10}")
    for n, mem, sec in rows:
        print(f"{n:>6} {mem['naive']:>10.0f} {mem['chunked']:>11.0f} {mem['chunked'] / mem['naive']:>8.0%} "
              f"{sec['naive']:>8.2f} {sec['chunked']:>9.2f} {sec['chunked'] / sec['naive']:>9.2f}x")


# ------------------------------------------------------------------------------------------
# Newton-Schulz inside a Muon step


def qwen2_shapes(hidden: int, intermediate: int, heads: int, kv_heads: int, layers: int) -> list[tuple[int, int]]:
    """[out, in] of the Muon-updated matrices of a Qwen2-style decoder, layer by layer."""
    kv = hidden // heads * kv_heads
    per_layer = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),  # q, k, v, o
                 (intermediate, hidden), (intermediate, hidden), (hidden, intermediate)]  # gate, up, down
    return per_layer * layers


MUON = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw")


def batched_muon_step(params, bufs, dtype) -> None:
    """torch.optim.Muon's update (see its `_single_tensor_muon`), orthogonalising one stack per shape."""
    lr, wd, mu = MUON["lr"], MUON["weight_decay"], MUON["momentum"]
    grads = [p.grad for p in params]
    torch._foreach_lerp_(bufs, grads, 1 - mu)
    updates = [g.lerp(b, mu) for g, b in zip(grads, bufs)]  # nesterov
    for p, o in zip(params, orthogonalize(updates, dtype=dtype)):
        p.mul_(1 - lr * wd)
        p.add_(o, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))  # match_rms_adamw


def _ns_setup(shapes):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    return params


def ns_row(name: str, shapes, repeats: int, slow_seconds: float) -> tuple:
    params = _ns_setup(shapes)
    start = [p.detach().clone() for p in params]

    def reset():
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)

    muon = torch.optim.Muon(params, **MUON)
    bufs = [torch.zeros_like(p) for p in params]

    def run_muon():
        muon.state.clear()  # fresh momentum: every run is the same first step
        muon.step()

    def run_batched(dtype):
        for b in bufs:
            b.zero_()
        batched_muon_step(params, bufs, dtype)

    cases = {"muon": run_muon, "bf16": lambda: run_batched(torch.bfloat16), "fp32": lambda: run_batched(torch.float32)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    results = {}
    for i in range(repeats):
        for key, fn in cases.items():
            if i and times[key][0] > slow_seconds:
                continue  # one run of a case this slow is enough; the table says how many ran
            reset()
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            times[key].append(time.perf_counter() - t0)
            results[key] = [p.detach().clone() for p in params]
    for a, b in zip(results["bf16"], results["muon"]):  # same step, same bf16 arithmetic
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)
    med = {k: statistics.median(v) for k, v in times.items()}
    runs = "/".join(str(len(v)) for v in times.values())
    n_params = sum(math.prod(s) for s in shapes)
    return name, len(shapes), len({tuple(s) for s in shapes}), n_params, med, runs


def ns_table(layers_05b: int, threads: int, repeats: int, slow_seconds: float) -> None:
    rows = [
        ns_row("tiny (hidden 128, 4 layers)", qwen2_shapes(128, 512, 4, 2, 4), repeats, slow_seconds),
        ns_row(f"Qwen2-0.5B shapes, {layers_05b} of 24 layers", qwen2_shapes(896, 4864, 14, 2, layers_05b), repeats, slow_seconds),
    ]
    print(f"\nMuon step (5 Newton-Schulz steps per matrix), {threads} thread(s), median of {repeats} "
          f"(1 run for a case whose first run took over {slow_seconds:g} s; runs = Muon/bf16/fp32); "
          "batched = kernels.newton_schulz.orthogonalize, torch backend")
    print(f"{'parameter set':<34} {'matrices':>8} {'shapes':>6} {'params':>7} {'Muon.step s':>11} "
          f"{'batched bf16 s':>14} {'ratio':>6} {'batched fp32 s':>14} {'ratio':>6} {'runs':>6}")
    for name, n_mat, n_shapes, n_params, med, runs in rows:
        print(f"{name:<34} {n_mat:>8} {n_shapes:>6} {n_params / 1e6:>6.1f}M {med['muon']:>11.3f} "
              f"{med['bf16']:>14.3f} {med['bf16'] / med['muon']:>5.2f}x {med['fp32']:>14.3f} {med['fp32'] / med['muon']:>5.2f}x {runs:>6}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", default="1024,2048,4096,8192")
    ap.add_argument("--ns-layers", type=int, default=1, help="layers of the 0.5B-shaped set (24 in the model)")
    ap.add_argument("--slow-seconds", type=float, default=20.0, help="a case whose first run takes longer runs once")
    ap.add_argument("--skip-logprob", action="store_true")
    ap.add_argument("--skip-ns", action="store_true")
    ap.add_argument("--measure-memory", nargs=2, metavar=("IMPL", "TOKENS"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-time", type=int, metavar="TOKENS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure_memory:
        print(json.dumps(measure_memory(args.measure_memory[0], int(args.measure_memory[1]))))
        return 0
    if args.measure_time:
        print(json.dumps(measure_time(args.measure_time, args.repeats)))
        return 0
    if not args.skip_logprob:
        logprob_table([int(n) for n in args.tokens.split(",")], args.threads, args.repeats)
    if not args.skip_ns:
        ns_table(args.ns_layers, args.threads, args.repeats, args.slow_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
