"""benchmarks/gpu_check.py --dry-run: every part of the GPU check runs on the CPU, and its table has
every row and no error. On the GPU machine the same code runs at full size (`benchmarks/gpu_check.sh`)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["a1", "a2", "b1", "b2", "b3", "b4", *(f"c{i}" for i in range(1, 9)), "d1", "d2", "e1", "e2", "f1", "f2"]
# the run's (and the JSON's) order: parts e and f run after b, the table lists them last
RUN_ORDER = [*ROWS[:6], "e1", "e2", "f1", "f2", *ROWS[6:-4]]
CPU_SKIPS = {"c5", "c8"}  # the Triton log-prob rows: compiled for CUDA only


@pytest.mark.slow
def test_dry_run_reports_every_row_without_errors(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("id", "---"):
            table[cells[0]] = cells
    assert list(table) == ROWS, proc.stdout
    for rid, (_, name, status, _, figures) in table.items():
        expected = "skipped" if rid in CPU_SKIPS else "ok"
        assert status == expected, f"{rid} {name}: {status}: {figures}"

    rows = {r["id"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == RUN_ORDER
    for rid in ("b1", "b2", "b3", "b4"):
        assert rows[rid]["figures"]["tok/s"] > 0 and rows[rid]["figures"]["skipped steps"] == 0
    for rid in ("d1", "d2"):
        f = rows[rid]["figures"]
        assert f["completions"] > 0 and f["trained rows"] == f["completions"]
        assert rows[rid]["seconds"] >= f["rollout s"] + f["learner s"]
    # the sharded learner (FSDP2 at world size 1, gloo on the CPU): Muon's sharded step, DTensor
    # parameters, and a checkpoint that loads back into a fresh sharded learner exactly
    e1, e2 = rows["e1"]["figures"], rows["e2"]["figures"]
    assert e1["backend"] == "gloo" and e1["skipped steps"] == 0 and e1["tok/s"] > 0
    assert e1["muon sharded matrices"] > 0
    assert e1["chunked logprobs"] is True and e1["shared prefix"] is False
    n, total = map(int, e1["DTensor params"].split("/"))
    assert n == total > 0
    assert e2["checkpoint GiB"] > 0 and e2["save s"] > 0 and e2["load s"] > 0
    f1, f2 = rows["f1"]["figures"], rows["f2"]["figures"]
    assert len([k for k in f1 if k.startswith("tok/s ")]) == 4 and all(v > 0 for k, v in f1.items() if k.startswith("tok/s "))
    assert len([k for k in f2 if k.startswith("tok/s ")]) == 3 and all(v > 0 for k, v in f2.items() if k.startswith("tok/s "))
    for key in ("params equal", "optimizer tensors equal"):
        same, total = map(int, e2[key].split("/"))
        assert same == total > 0, (key, e2)


def _gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts the repository root first
    spec.loader.exec_module(module)
    return module


def test_sharded_part_tries_the_next_backend_and_says_why(monkeypatch):
    gc = _gpu_check(monkeypatch)
    assert gc.sharded_backends("cuda") == ["cpu:gloo,cuda:nccl"]
    assert gc.sharded_backends("cpu") == ["gloo"]
    cleanups = []

    def run(backend):
        if backend == "nccl":
            raise RuntimeError("No backend type associated with device type cpu")
        return f"ran on {backend}"

    backend, out, failures = gc.try_backends(["nccl", "cpu:gloo,cuda:nccl"], run, lambda: cleanups.append(1))
    assert (backend, out, cleanups) == ("cpu:gloo,cuda:nccl", "ran on cpu:gloo,cuda:nccl", [1])
    assert failures == ["nccl: RuntimeError: No backend type associated with device type cpu"]
    with pytest.raises(RuntimeError, match="every backend failed: a: ValueError: x .* b: ValueError: x"):
        gc.try_backends(["a", "b"], lambda b: (_ for _ in ()).throw(ValueError("x")), lambda: None)
