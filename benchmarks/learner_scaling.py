"""Per-rank memory and Newton-Schulz time of one learner update: 1 learner process against
`cluster.learner_ranks: 2` (FSDP2 shards, sharded Muon), same model, same batch, same run.

  python benchmarks/learner_scaling.py [--hidden 1024] [--layers 4] [--intermediate 2816] [--rows 8] [--repeats 3]

The policy is the quickstart's llama (its 100-token vocabulary) widened to `--hidden` with
`--layers` blocks, and the batch is `--rows` short rows: the parameters, gradients and optimizer
state fill the learner's memory, not the activations. Optimizer `muonclip`, Newton-Schulz in fp32
(its CPU default), `run.torch_threads=1` in every learner process, one optimizer step per update
(`algorithm.minibatch_size=0`).

Both sides are Ray actors started by the trainer's own classes, so each measurement is one
process's, with the same Python/torch/Ray baseline, and each process receives the whole initial
policy through the object store:

    N=1   `RemoteLearner` (`learner.actor: true`, `cluster.learner_ranks: 1`): one `Learner` in a
          `LearnerProcess` actor, plain tensors, Muon's single-process path
    N=2   `LearnerGroup` (`cluster.learner_ranks: 2`): two `LearnerRank` actors in one gloo process
          group, the policy sharded by FSDP2 after it arrives, Muon's matrices split over the ranks

Both run the model's own forward over whole rows (`algorithm.shared_prefix=false`,
`algorithm.chunked_logprobs=false`): the ranks cannot take the one-process shortcuts, so the
baseline does not either. The measurements are read inside each actor with Ray's `__ray_call__`
(a function run on the actor instance); no actor class is changed.

Per process:

    RSS before      resident size (VmRSS) just before the first update: the model (the rank's
                    shards under N=2) and optimizer are built, no gradient or optimizer state yet
    held after Δ    resident size just after the first update less `RSS before`: what the update
                    leaves allocated (gradients, momentum, AdamW moments), without its transients,
                    plus what glibc keeps of the freed ones (see MALLOC_MMAP_THRESHOLD_ below)
    update peak Δ   the resident high-water mark during the first update less `RSS before`: the
                    mark (VmHWM) is reset to the current size just before it (`/proc/self/clear_refs`,
                    "5"), so this is the first update's own peak: gradients, optimizer state,
                    Newton-Schulz buffers, the gathered layers, the activations
    ru_maxrss Δ     `ru_maxrss` after the first update less before it, the process's high-water mark
                    since it started. Under N=2 the mark before the update already holds the whole
                    model each rank received before sharding it, so an update that peaks below it
                    reads 0: this undercounts the ranks; shown because it is the common measure
    process peak    the high-water mark since the process started (after the first update)
    update (s)      the driver's wall time of `update(batch)`, median of `--repeats` updates after the
                    first; the two sides alternate, so load from elsewhere hits both alike
    NS CPU (s)      `BatchedMuon.last_ns_seconds`, median over the same updates: this thread's CPU
                    time in the orthogonalisation (`time.thread_time`). Under N=2 it spans all of
                    `sharded_orthogonalize`, packing and unpacking its all-to-alls included, but not
                    the wait for the other rank (a blocked thread uses no CPU), so it stays
                    comparable on a loaded machine, where wall time would count the other ranks' work
    matrices, elements   what this process orthogonalised in the last step (`BatchedMuon.last_owned`)
    (by phase)      a second table splits the first update's peak at Muon's step, with optimizer
                    hooks installed in the actor that reset the mark at the step's start and end:
                    forward/backward and gradient clipping, Muon's step, what follows (AdamW, QK-Clip)
    weights out     the driver's wall time of `served.state_dict()`, the weights the trainer hands
                    the rollout workers each step (N=2: rank 0 gathers them one tensor at a time)

glibc keeps freed blocks under its adaptive mmap threshold (up to 32 MiB: every matrix here) for
reuse, so RSS can stay above the live tensors. `MALLOC_MMAP_THRESHOLD_=1048576 python
benchmarks/learner_scaling.py` (inherited by the Ray workers) returns every freed tensor to the
system at once; the peaks hardly move, the `held after` column then shows the live state.

The machine's load average is printed at the start and at the end: other processes compete for
the same cores, which moves the wall times but hardly the CPU times and not the memory. The
default size takes about 3.5 minutes on 2 cores at a load average of 3-4.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 2**20


def _status_mib() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssShmem of this process in MiB (/proc/self/status)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssShmem"):
                out[key] = int(line.split()[1]) / 1024  # kB
    return out


def _probe(actor: Any, reset_peak: bool = False) -> dict[str, Any]:
    """Run inside a learner actor (`__ray_call__`): its memory, its Muon's last step, and (with
    `reset_peak`) the resident high-water mark reset to the current size, after reading it."""
    import torch
    from torch.distributed.tensor import DTensor

    from rl.optim.muon import resolve_ns_dtype

    learner = actor.learner
    muon = learner.optimizer.optimizers["muon"]
    local = [p.to_local() if isinstance(p, DTensor) else p for p in learner.model.parameters()]
    out = {
        **_status_mib(),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB on Linux
        "params_mib": sum(t.numel() * t.element_size() for t in local) / MIB,
        "ns_seconds": muon.last_ns_seconds,
        "owned": (muon.last_owned.matrices, muon.last_owned.numel),
        "threads": torch.get_num_threads(),
        "ns_dtype": str(resolve_ns_dtype(muon.ns_dtype, learner.device)),
        "pid": os.getpid(),
    }
    out.update(getattr(actor, "bench_phases", {}))
    if reset_peak:
        _reset_peak()
    return out


def _reset_peak() -> None:
    """Lower this process's resident high-water mark (VmHWM) to its current resident size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _watch_muon_step(actor: Any) -> None:
    """Run inside a learner actor (`__ray_call__`): split each update's resident peak into before
    Muon's step (forward, backward, gradient clipping), Muon's step, and after it (AdamW's step,
    QK-Clip), with optimizer hooks (`register_step_pre_hook` / `register_step_post_hook`)."""
    phases = actor.bench_phases = {}

    def pre(optimizer, args, kwargs) -> None:
        s = _status_mib()
        phases["hwm_before_step"], phases["rss_before_step"] = s["VmHWM"], s["VmRSS"]
        _reset_peak()

    def post(optimizer, args, kwargs) -> None:
        s = _status_mib()
        phases["hwm_in_step"], phases["rss_after_step"] = s["VmHWM"], s["VmRSS"]
        _reset_peak()

    muon = actor.learner.optimizer.optimizers["muon"]
    muon.register_step_pre_hook(pre)
    muon.register_step_post_hook(post)


def _batch(tokenizer, rows: int, prompt: int, max_len: int, seed: int):
    """`rows` rows in groups of 4 sharing a `prompt`-token prompt (`benchmarks/learner_memory.py`'s batch)."""
    from benchmarks.learner_memory import grouped_batch

    return grouped_batch(tokenizer, rows, prompt, max_len, seed, group=4)


class Side:
    """One learner under test: its handle, its actors, and what was measured in them."""

    def __init__(self, name: str, handle: Any, actors: list[Any]):
        self.name, self.handle, self.actors = name, handle, actors
        self.before: list[dict] = []
        self.after: list[dict] = []
        self.wall: list[float] = []
        self.ns: list[list[float]] = [[] for _ in actors]
        self.weights_out: list[float] = []

    def probe(self, reset_peak: bool = False) -> list[dict]:
        import ray

        return ray.get([a.__ray_call__.remote(_probe, reset_peak) for a in self.actors])

    def update(self, batch) -> float:
        t0 = time.perf_counter()
        self.handle.update(batch)
        return time.perf_counter() - t0

    def pull_weights(self) -> float:
        """The weights the rollout workers get, as the trainer pulls them into the driver each step."""
        t0 = time.perf_counter()
        self.handle.served.state_dict()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=2816, help="MLP width (default: about 2.75x the default hidden, as llama)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=24, help="longest row, prompt included")
    ap.add_argument("--repeats", type=int, default=3, help="timed updates per side after the first (measured) one")
    args = ap.parse_args()
    if args.hidden % args.head_dim:
        ap.error("--hidden must be a multiple of --head-dim")

    load_start = os.getloadavg()
    t_start = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {what}", file=sys.stderr, flush=True)
    import ray

    from policies.model import build_policy
    from rl.config import load_config
    from rl.learner_group import LearnerGroup
    from rl.learner_host import RemoteLearner

    common = [
        "sft.enabled=false",
        f"policy.hidden_size={args.hidden}",
        f"policy.num_layers={args.layers}",
        f"policy.intermediate_size={args.intermediate}",
        f"policy.head_dim={args.head_dim}",
        f"policy.num_heads={args.hidden // args.head_dim}",
        f"policy.max_position_embeddings={args.max_len}",
        f"rollout.max_new_tokens={args.max_len - args.prompt}",
        "optimizer.name=muonclip",
        "run.torch_threads=1",
        "algorithm.minibatch_size=0",  # one optimizer step per update: last_ns_seconds is the update's
        "algorithm.epochs=1",
        "algorithm.shared_prefix=false",
        "algorithm.chunked_logprobs=false",
        "learner.actor=true",
        "cluster.learner_timeout_s=1800",  # a loaded machine may be slow; nothing here should hang
    ]
    cfgs = {n: load_config(ROOT / "experiments/quickstart.yaml", [*common, f"cluster.learner_ranks={n}"]) for n in (1, 2)}
    assert cfgs[1].learner_device == "cpu"  # Newton-Schulz "auto" is then fp32 (checked in each actor below)
    model, tok = build_policy(cfgs[1].policy, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    batch = _batch(tok, args.rows, args.prompt, args.max_len, seed=1)

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    sides: list[Side] = []
    try:
        one = RemoteLearner(model, cfgs[1])
        sides.append(Side("N=1", one, [one.actor]))
        two = LearnerGroup(model, cfgs[2])
        sides.append(Side("N=2", two, two.actors))
        progress("learners started")
        del model
        for side in sides:  # the first update: the memory measurement (and the warm-up)
            ray.get([a.__ray_call__.remote(_watch_muon_step) for a in side.actors])
            side.before = side.probe(reset_peak=True)
            side.update(batch)
            side.after = side.probe()
            progress(f"{side.name}: first update")
        for r in range(args.repeats):  # alternating, so load from elsewhere hits both sides alike
            for side in sides:
                side.wall.append(side.update(batch))
                for rank, p in enumerate(side.probe()):
                    side.ns[rank].append(p["ns_seconds"])
                side.weights_out.append(side.pull_weights())
            progress(f"repeat {r + 1}/{args.repeats}")
    finally:
        for side in sides:
            side.handle.close()
        ray.shutdown()
    load_end = os.getloadavg()

    rows = []
    for side in sides:
        for rank, (b, a) in enumerate(zip(side.before, side.after)):
            assert a["threads"] == 1 and a["ns_dtype"] == "torch.float32", a
            # the update's peak: the largest of its three phases' (the hooks reset the mark between them)
            update_hwm = max(a["hwm_before_step"], a["hwm_in_step"], a["VmHWM"])
            peak = max(b["ru_maxrss"], update_hwm)  # since the process started (the resets lowered VmHWM, not the earlier mark)
            rows.append(
                {
                    "name": side.name,
                    "rank": rank,
                    "params": b["params_mib"],
                    "rss_before": b["VmRSS"],
                    "shmem_before": b["RssShmem"],
                    "delta": update_hwm - b["VmRSS"],
                    "fwd_bwd": a["hwm_before_step"] - b["VmRSS"],
                    "muon": a["hwm_in_step"] - b["VmRSS"],
                    "after_muon": a["VmHWM"] - b["VmRSS"],
                    "pre_step": a["rss_before_step"] - b["VmRSS"],
                    "held": a["VmRSS"] - b["VmRSS"],
                    "ru_delta": peak - b["ru_maxrss"],
                    "peak": peak,
                    "setup_peak": b["ru_maxrss"],
                    "wall": statistics.median(side.wall),
                    "ns": statistics.median(side.ns[rank]),
                    "owned": a["owned"],
                }
            )

    print(
        f"\nlearner update, llama hidden {args.hidden}, {args.layers} layers, MLP {args.intermediate}, "
        f"{n_params / 1e6:.1f}M parameters ({n_params * 4 / MIB:.0f} MiB fp32); {args.rows} rows of up to {args.max_len} tokens "
        f"({int(batch.attention_mask.sum())} real); muonclip, fp32 Newton-Schulz, 1 torch thread per process; "
        f"median of {args.repeats} updates after the first"
    )
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} ({os.cpu_count()} CPUs)")
    print(
        "\n| learner | rank | params held (MiB) | RSS before (MiB) | held after Δ (MiB) | update peak Δ (MiB) | ru_maxrss Δ (MiB) | process peak (MiB) "
        "| update (s) | NS CPU (s) | matrices | elements (M) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['rank']} | {r['params']:.0f} | {r['rss_before']:.0f} | {r['held']:.0f} | {r['delta']:.0f} | {r['ru_delta']:.0f} | {r['peak']:.0f} "
            f"| {r['wall']:.2f} | {r['ns']:.2f} | {r['owned'][0]} | {r['owned'][1] / 1e6:.1f} |"
        )
    base = rows[0]
    print("\nN=2 / N=1, per rank (target: update peak Δ and NS CPU at most 0.6x)")
    print("| rank | update peak Δ | held after Δ | ru_maxrss Δ | process peak | RSS before | update (s) | NS CPU | elements |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows[1:]:
        ratio = lambda k: r[k] / base[k] if base[k] else float("nan")  # noqa: E731
        print(
            f"| {r['rank']} | {ratio('delta'):.2f}x | {ratio('held'):.2f}x | {ratio('ru_delta'):.2f}x | {ratio('peak'):.2f}x | {ratio('rss_before'):.2f}x "
            f"| {ratio('wall'):.2f}x | {ratio('ns'):.2f}x | {r['owned'][1] / base['owned'][1]:.2f}x |"
        )
    print(
        "\nsetup high-water mark (ru_maxrss before the first update; the ranks' includes the whole policy they "
        "received before sharding it): " + ", ".join(f"{r['name']} rank {r['rank']} {r['setup_peak']:.0f} MiB" for r in rows)
    )
    print(
        "weights out (the served state dict into the driver; N=2: rank 0 gathers one tensor at a time), median: "
        + ", ".join(f"{side.name} {statistics.median(side.weights_out):.2f} s" for side in sides)
    )
    print("object-store pages mapped before the first update (RssShmem, part of RSS before): " + ", ".join(f"{r['name']} rank {r['rank']} {r['shmem_before']:.0f} MiB" for r in rows))
    print("\nwhere the first update peaks: resident size over `RSS before` (MiB), by phase")
    print("| learner | rank | peak in forward/backward | resident at Muon's step | peak in Muon's step | peak after it (AdamW, QK-Clip) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['rank']} | {r['fwd_bwd']:.0f} | {r['pre_step']:.0f} | {r['muon']:.0f} | {r['after_muon']:.0f} |")


if __name__ == "__main__":
    main()
