"""Where the quickstart's memory goes: peak resident memory of each process of a training run.

Runs `swarmrl train` on an experiment in a subprocess (default: the quickstart, a short run) and
samples every 0.2 s the RSS of each process of its tree, by role: the driver (trainer loop,
learner, MLflow, Parquet), the rollout worker(s) (their own copy of the policy and the engine),
Ray's own services (GCS server, raylet, dashboard and its agents, log monitor, idle Ray workers)
and anything else. Prints a table of each role's peak and its share of the tree's peak, beside
the TRL row of `benchmarks/vs_trl.py` (one process) when a figure is given with `--trl-mib`.

    python benchmarks/memory_breakdown.py                      # quickstart settings, 20 steps
    python benchmarks/memory_breakdown.py --steps 40 --trl-mib 1035

RSS counts shared pages (the torch libraries mapped by both driver and worker) in each process,
so the sum over processes overstates the machine's use by what they share; the table also gives
the tree's proportional set size (PSS, shared pages split between their users) where /proc
allows it, which does sum to the machine's use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
ROLES = (  # matched in order, case-insensitively, against the command line
    ("rollout worker", ("ray::rolloutworker",)),
    ("ray: idle workers", ("ray::idle", "default_worker.py")),
    ("ray: dashboard + agents", ("dashboard", "runtimeenvagent", "agent.py")),
    ("ray: log monitor", ("log_monitor",)),
    ("ray: autoscaler monitor", ("autoscaler", "monitor.py")),
)


def role_of(proc: psutil.Process, driver_pid: int) -> str:
    if proc.pid == driver_pid:
        return "driver (trainer, learner)"
    try:
        argv = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    binary = Path(argv[0]).name if argv else ""
    if binary in ("raylet", "gcs_server"):  # their flags name the dashboard and the other services
        return f"ray: {binary.replace('_', ' ')}"
    cmd = " ".join(argv).lower()
    for role, marks in ROLES:
        if any(m in cmd for m in marks):
            return role
    OTHERS.add(binary if not binary.startswith("python") else next((Path(a).name for a in argv[1:] if a.endswith(".py")), " ".join(argv)))
    return "other"


OTHERS: set[str] = set()  # what "other" was, for the report


def sample(driver_pid: int) -> tuple[dict[str, int], int, int]:
    """RSS by role, the tree's RSS and its PSS (0 where /proc hides it), in bytes."""
    try:
        root = psutil.Process(driver_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}, 0, 0
    by_role: dict[str, int] = defaultdict(int)
    rss = pss = 0
    for p in procs:
        try:
            mem = p.memory_full_info() if hasattr(p, "memory_full_info") else p.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        by_role[role_of(p, driver_pid)] += mem.rss
        rss += mem.rss
        pss += getattr(mem, "pss", 0)
    return by_role, rss, pss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default=str(REPO / "experiments" / "quickstart.yaml"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "bench-memory"))
    p.add_argument("--trl-mib", type=float, default=None, help="peak RSS of TRL's row in benchmarks/vs_trl.py, for the ratio")
    p.add_argument("overrides", nargs="*", help="extra a.b=c overrides of the experiment")
    args = p.parse_args()

    # no SFT (the processes and model sizes are the same with random weights), no evaluation
    overrides = [f"train.steps={args.steps}", "train.eval_every=0", "sft.enabled=false", "tracking.progress=false", f"run.runs_dir={args.runs_dir}", "checkpoint.every=0", *args.overrides]
    cmd = [sys.executable, "-m", "rl", "train", args.experiment, *overrides]
    child = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    peak_role: dict[str, int] = defaultdict(int)
    peak_rss = peak_pss = 0
    t0 = time.time()
    while child.poll() is None:
        by_role, rss, pss = sample(child.pid)
        for role, v in by_role.items():
            peak_role[role] = max(peak_role[role], v)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    if child.returncode != 0:
        raise SystemExit(f"training exited with {child.returncode}: {' '.join(cmd)}")
    mib = 2**20
    print(f"{args.experiment}, {args.steps} steps without SFT, {time.time() - t0:.0f} s; peak RSS per role (MiB)\n")
    print("| process role | peak RSS (MiB) | share of the tree's peak |")
    print("|---|---|---|")
    for role, v in sorted(peak_role.items(), key=lambda kv: -kv[1]):
        print(f"| {role} | {v / mib:.0f} | {v / peak_rss:.0%} |")
    print(f"| **tree, RSS** | **{peak_rss / mib:.0f}** | |")
    if peak_pss:
        print(f"| tree, PSS (shared pages counted once) | {peak_pss / mib:.0f} | |")
    if OTHERS:
        print(f"\nother: {', '.join(sorted(OTHERS))}")
    if args.trl_mib:
        print(f"\nTRL's row (one process, vs_trl.py): {args.trl_mib:.0f} MiB; the tree's RSS is {peak_rss / mib / args.trl_mib:.2f}x it"
              + (f", its PSS {peak_pss / mib / args.trl_mib:.2f}x" if peak_pss else ""))


if __name__ == "__main__":
    main()
