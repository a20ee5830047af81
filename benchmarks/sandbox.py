"""Sandbox overhead: sandboxed executions vs a bare `python -c` subprocess, side by side.

  python benchmarks/sandbox.py [--n 200] [--workers 4]

Two programs: trivial (`pass`) and test-running (a function plus 20 asserts). Prints, per
program: executions/s and mean ms per execution for the bare subprocess (the baseline), the
sandbox run sequentially, and the sandbox pool; and the overhead ratio sandbox / bare.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.sandbox import SandboxPool, run_python  # noqa: E402
from envs.sandbox.runner import PYTHON  # noqa: E402

PROGRAMS = {
    "trivial": "pass",
    "tests": "def add(a, b):\n    return a + b\n" + "".join(f"assert add({i}, {i}) == {2 * i}\n" for i in range(20)) + "print('ok')\n",
}


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    rows = []
    for name, src in PROGRAMS.items():
        bare = timed(lambda n: [subprocess.run([PYTHON, "-I", "-B", "-c", src], capture_output=True, check=True) for _ in range(n)], args.n)

        def seq(n):
            for _ in range(n):
                assert run_python(src).status == "ok"

        sandboxed = timed(seq, args.n)
        with SandboxPool(args.workers) as pool:
            pooled = timed(lambda n: [r for r in pool.map_python([src] * n) if r.status != "ok"] == [] or sys.exit("failure"), args.n)
        rows.append((name, bare, sandboxed, pooled))
    n = args.n
    print(f"\nsandbox benchmark: {n} executions per cell, pool of {args.workers}, interpreter {PYTHON}")
    print(f"{'program':<9} {'bare exec/s':>11} {'bare ms':>8} {'sandbox exec/s':>14} {'sandbox ms':>10} {'overhead':>8} {'pool exec/s':>11}")
    for name, bare, sandboxed, pooled in rows:
        print(
            f"{name:<9} {n / bare:>11.1f} {1000 * bare / n:>8.1f} {n / sandboxed:>14.1f} {1000 * sandboxed / n:>10.1f} "
            f"{sandboxed / bare:>7.2f}x {n / pooled:>11.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
