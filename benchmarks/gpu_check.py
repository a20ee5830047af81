"""The GPU check: what only a CUDA machine can show, in one run that fits a short GPU loan with no network.

On the GPU machine (one H200, Python 3.12 with torch, transformers, triton, peft, pyarrow, pyyaml;
no network, no ray / vllm / trl / mlflow / pydantic), from the repository root:

    make gpu-wheels                  # here, once, with network: pydantic's wheels into benchmarks/.gpu_wheels
    bash benchmarks/gpu_check.sh     # there: the whole check, at most --minutes (8) of work

The wheel folder is ignored by git, so the device run names it: command `bash benchmarks/gpu_check.sh`,
carry=["benchmarks/.gpu_wheels"], timeout_s=600. The wrapper sets the offline environment, caps
the run's wall-clock time at --minutes + 75 s and, when `$OUT` is set, writes `gpu_check.json` and
`gpu_check.log` there. `python benchmarks/gpu_check.py --dry-run` runs every code path on the CPU
with a tiny model, in about 30 s on the 2-core CPU machine (`tests/test_gpu_check.py`).

What it measures, one table row each (markdown, printed at the end; `--json FILE` has the figures):

  a1  the `gpu`-marked tests (pytest, in a subprocess), those whose imports this machine has;
      files that import ray / vllm / ... are listed as not runnable, not run
  a2  the Triton kernel tests (`tests/test_kernels.py::test_triton_*`), compiled for the real GPU
  b1-b4  one learner update (`rl.learner.Learner`: forward, backward, MuonClip step with QK-Clip)
      of a random Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, 14 heads, 2 KV heads,
      MLP 4864, vocab 151936, tied embeddings) at `learner.precision: bf16`: 8k and 32k tokens per
      step; gradient checkpointing off / on; micro-batches of 8k tokens. Tokens/s, peak GPU memory
      (torch.cuda.max_memory_allocated: weights, optimizer state and activations) and MFU
  c1-c2  `hf` engine sampling (rollout/engines/hf.py) from the same model in fp32 (the worker's
      dtype) and bf16: generated tokens/s, G completions per prompt (shared prefill)
  c3-c8  per-token log-prob + entropy, forward and backward, from bf16 hidden states and head
      (vocab 151936, hidden 896): naive full logits vs `chunked_logprobs` with the torch and the
      Triton row kernels (kernels/logprob.py, kernels/logprob_triton.py); time and the memory
      the call takes on top of its inputs
  d1-dN  GRPO steps end to end without Ray or MLflow, as rl/trainer.py runs them: sample math
      tasks, generate with the hf engine, verify_batch, score_batch, group advantages, build_batch,
      learner.update, then "push weights" = engine.load_weights(model.state_dict()) into the
      engine's own copy of the policy. The step's split: rollout, verify + score, learner,
      weight load. The policy is random, so rewards are mostly 0: dynamic sampling is off so that
      every step trains (the timings are the point, not the rewards).
  e1-e2  the sharded learner without Ray, at world size 1: one process group of one rank
      (`cpu:gloo,cuda:nccl`, as rl/learner_group.py starts its ranks; `gloo` in --dry-run), a device mesh of
      one, and b1's learner and batch with `ranks=ProcessGroupRanks(mesh)`: the policy wrapped by
      FSDP2 (`fully_shard` per decoder layer and the root, bf16 parameters, fp32 gradient
      reduction), Muon's sharded step, QK-Clip's maxima reduced over ranks. e1: its update time
      (tok/s against b1's), peak GPU memory, that every parameter is a DTensor and that Muon
      orthogonalised its matrices on the sharded path; the log-probs are chunked as in b (the
      head's weight taken inside the root's forward, rl/distributed/head.py), the shared-prefix
      pass is off for any ProcessGroupRanks. e2: `save_train_state` (DCP) to a temporary folder, `load_train_state`
      into a fresh sharded learner of other weights, and every parameter and optimizer tensor
      compared with what was saved: save and load seconds, the checkpoint's size on disk.
      Part e runs after b, before c and d (the sharded path is the newest code: if the time cap
      skips anything, it should be an older part); the table lists it after d.
  f1-f2  the SDPA kernel choice where shapes keep changing (benchmarks/sdpa_kernels.py): f1 the
      hf engine's bf16 decoding with cuDNN attention excluded (the engine's choice, kernels/sdpa.py)
      against PyTorch's choice at new, then cached shapes, and fp32; f2 learner updates at a new
      row length each, cuDNN excluded against PyTorch's choice (the learner's) new, then cached.
      Runs after e, before c and d.

MFU (model FLOPs utilisation) counts the model's work, not what the implementation adds to it:

    FLOPs per update = 6 * N * T  +  6 * layers * heads * head_dim * sum over rows of L_row^2

N is the parameters of every matmul (each nn.Linear; the tied head counts once, the embedding
lookup not at all), T the tokens of the batch (no padding: every row is full), the second term
causal attention (QK^T and PV, forward and backward). Gradient checkpointing's recomputation,
the QK probe's extra logits and the chunked log-prob's recomputed head are not counted. The peak
is the GPU's dense bf16 figure, `--peak-tflops` (989 for an H200 SXM). Part b's learner runs one
pass per row (`algorithm.shared_prefix: false`, every prompt distinct), so the formula is the work
done; what sharing a prompt saves is `benchmarks/shared_prefix.py`'s measurement. Part d shares
prompts, as training does.

Why pydantic comes along: `rl.learner` imports `rl.config` (the experiment schema, pydantic) and
reads an `ExperimentConfig`; the reward registry (`rewards`) and `rl.experiment_env` import pydantic
too. The check runs them as training does rather than beside a stand-in config. ray, vllm, trl
and mlflow are never imported: nothing imported here pulls them in (`rollout.collect` imports the
Ray workers, so part d's rollout loop is written out below). Part c and the Triton tests of a do
not need pydantic; without the wheels, b and d end in error rows that say so, and a1 lists the
test files that need it as not runnable.

Each measurement runs in its own try/except: a failure is a row with its error, and the rest
still runs. `--minutes` caps the whole run: a measurement that would start after the cap is a
`skipped` row. `--parts` runs some of a, b, c, d, e, f (e.g. `--parts be` for a rerun).
"""

from __future__ import annotations

import argparse
import ast
import atexit
import copy
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WHEELS = ROOT / "benchmarks" / ".gpu_wheels"


# ------------------------------------------------------------------------------------------
# what runs, at which size


@dataclass(frozen=True)
class Scale:
    """The sizes of one run: the real one on the GPU, a tiny one for `--dry-run` on the CPU."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    row_len: int  # learner rows: all this long, so T = rows x row_len exactly
    prompt_len: int
    learner_runs: tuple[tuple[int, bool, int], ...]  # (tokens per step, gradient checkpointing, max tokens per micro-batch)
    timed_updates: int
    gen_prompts: int
    gen_group: int
    gen_tokens: int
    logprob_tokens: tuple[int, ...]
    grpo_steps: int
    grpo_tasks: int
    grpo_group: int
    grpo_tokens: int


QWEN25_05B = Scale(
    hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, intermediate_size=4864, vocab_size=151936,
    max_position_embeddings=32768, row_len=1024, prompt_len=256,
    learner_runs=((8192, False, 0), (32768, False, 0), (32768, True, 0), (32768, False, 8192)), timed_updates=3,
    # 128 rows: sampling over the whole 151936-token vocabulary each step is not free, and the
    # rows' point is tokens/s, not a long run
    gen_prompts=16, gen_group=8, gen_tokens=128,
    # naive log-probs hold several fp32 [T, V] tensors (20 GB each at 32k): 16k is as far as it safely goes
    logprob_tokens=(8192, 16384),
    grpo_steps=3, grpo_tasks=16, grpo_group=8, grpo_tokens=128,
)
TINY = Scale(
    hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128, vocab_size=512,
    max_position_embeddings=256, row_len=64, prompt_len=16,
    learner_runs=((128, False, 0), (256, False, 0), (256, True, 0), (256, False, 128)), timed_updates=1,
    gen_prompts=2, gen_group=4, gen_tokens=8,
    logprob_tokens=(64, 256),
    grpo_steps=2, grpo_tasks=2, grpo_group=4, grpo_tokens=8,
)

# dry-run rows have the same ids as the real ones: the test checks the whole table
ROW_IDS = ("a1", "a2", "b1", "b2", "b3", "b4", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8")


@dataclass
class Row:
    id: str
    name: str
    status: str = "ok"  # ok | fail (tests failed) | error (the measurement raised) | skipped
    seconds: float | None = None  # the measured time (per update, per call, per step), not the row's wall time
    figures: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    wall_s: float | None = None  # the whole measurement, set-up and warm-up included


class Budget:
    """The `--minutes` cap: a measurement that would start after it is skipped, not cut short."""

    def __init__(self, minutes: float):
        self.end = time.monotonic() + 60 * minutes

    def left(self) -> float:
        return self.end - time.monotonic()


class Report:
    """Rows in table order; written to `--json` after each one, so a run cut short keeps what it measured."""

    def __init__(self, json_path: Path | None, meta: dict[str, Any]):
        self.rows: list[Row] = []
        self.json_path = json_path
        self.meta = meta

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        wall = f"{row.wall_s:.1f} s" if row.wall_s is not None else "-"
        print(f"[{row.id}] {row.status:7} {_fmt_seconds(row.seconds):>8} (wall {wall})  {row.name}: {_fmt_figures(row)}", file=sys.stderr, flush=True)
        self.write_json()
        return row

    def write_json(self) -> None:
        if self.json_path is not None:
            self.json_path.write_text(json.dumps({"meta": self.meta, "rows": [asdict(r) for r in self.rows]}, indent=2, default=str))

    def table(self) -> str:
        order = {rid: i for i, rid in enumerate(ROW_IDS)}
        rows = sorted(self.rows, key=lambda r: (order.get(r.id, len(order)), _natural(r.id)))
        lines = ["| id | measurement | status | s | figures |", "|---|---|---|---|---|"]
        for r in rows:
            text = _fmt_figures(r).replace("|", "/")
            lines.append(f"| {r.id} | {r.name} | {r.status} | {_fmt_seconds(r.seconds)} | {text} |")
        return "\n".join(lines)


def measure(report: Report, budget: Budget, rid: str, name: str, fn: Callable[[], Row | dict[str, Any]], need_s: float = 0.0) -> Row:
    """Run one measurement; whatever it raises becomes its row, and the run goes on."""
    if budget.left() < need_s:
        return report.add(Row(rid, name, "skipped", note=f"time cap: {budget.left():.0f} s left, needs about {need_s:.0f} s"))
    t0 = time.monotonic()
    try:
        out = fn()
        row = out if isinstance(out, Row) else Row(rid, name, figures=out)
    except Exception as e:  # the point of the check: one failure must not hide the other figures
        traceback.print_exc()
        row = Row(rid, name, "error", note=_error_text(e))
    finally:
        _free_memory()
    row.id, row.name, row.wall_s = rid, name, round(time.monotonic() - t0, 2)
    return report.add(row)


# ------------------------------------------------------------------------------------------
# carried wheels


def use_carried_wheels(folder: Path = WHEELS) -> str:
    """Put the wheels of `folder` that this Python lacks on the import path; how pydantic was found.

    Unpacked (a wheel is a zip of its import tree) into a temporary folder, not installed: the
    machine's packages stay as they are and win wherever both exist (typing_extensions, say).
    PYTHONPATH carries the folder to the pytest subprocess.
    """
    if importlib.util.find_spec("pydantic") is not None:
        return "installed"
    if not folder.is_dir() or not any(folder.glob("*.whl")):
        return "absent (no benchmarks/.gpu_wheels: `make gpu-wheels` here, carry it there)"
    import zipfile
    from importlib import metadata

    site = Path(tempfile.mkdtemp(prefix="gpu_check_site_"))
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    ours = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for wheel in sorted(folder.glob("*.whl")):
        dist, _version, *tags = wheel.name[: -len(".whl")].split("-")
        py_tag, _abi, plat = tags[-3:]
        if plat != "any" and (platform.machine() not in plat or ours not in py_tag.split(".")):
            continue  # another platform's or Python's build
        try:
            metadata.version(dist)
            continue  # the machine's own copy wins
        except metadata.PackageNotFoundError:
            pass
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    sys.path.insert(1, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    importlib.invalidate_caches()
    return f"carried ({site})" if importlib.util.find_spec("pydantic") is not None else "absent (the carried wheels do not fit this Python)"


# ------------------------------------------------------------------------------------------
# a. the tests that need a GPU


@dataclass
class GpuTests:
    gpu_marked: list[str]  # pytest node ids (file::function): every parametrisation runs
    triton: list[str]
    not_runnable: dict[str, str]  # test file -> the missing module that keeps it from importing

    @property
    def node_ids(self) -> list[str]:
        return self.gpu_marked + self.triton


def plan_gpu_tests(tests_dir: Path = ROOT / "tests") -> GpuTests:
    """The `gpu`-marked tests and the Triton kernel tests, minus those whose modules cannot import here.

    Found by reading the sources (a marker on the function or `pytestmark` on the module), so a new
    gpu test joins the check without editing it. A file whose import chain (through this
    repository's modules) needs a module this Python does not have is left out rather than run
    into a collection error."""
    plan = GpuTests([], [], {})
    for path in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module_gpu = any(
            isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets) and _mentions_gpu_mark(n.value)
            for n in tree.body
        )
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        gpu = [f.name for f in funcs if module_gpu or any(_mentions_gpu_mark(d) for d in f.decorator_list)]
        triton = [f.name for f in funcs if f.name.startswith("test_triton_") and f.name not in gpu]
        if not gpu and not triton:
            continue
        missing = _missing_import(path)
        rel = path.relative_to(ROOT).as_posix()
        if missing:
            plan.not_runnable[rel] = missing
            continue
        plan.gpu_marked += [f"{rel}::{name}" for name in gpu]
        plan.triton += [f"{rel}::{name}" for name in triton]
    return plan


def _mentions_gpu_mark(node: ast.AST) -> bool:
    """`pytest.mark.gpu`, alone or inside a list / call."""
    return any(isinstance(n, ast.Attribute) and n.attr == "gpu" and isinstance(n.value, ast.Attribute) and n.value.attr == "mark" for n in ast.walk(node))


def _missing_import(path: Path, seen: set[Path] | None = None) -> str | None:
    """The first module-level import of `path` (followed through this repository's modules) that
    this Python cannot find. Imports inside functions, `try` and `if` blocks are optional by design."""
    seen = set() if seen is None else seen
    if path in seen:
        return None
    seen.add(path)
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if not (ROOT / parts[0]).is_dir() and not (ROOT / f"{parts[0]}.py").is_file():
                if importlib.util.find_spec(parts[0]) is None:
                    return parts[0]
                continue
            for i in range(1, len(parts) + 1):  # each package on the way runs its __init__
                base = ROOT.joinpath(*parts[:i])
                for candidate in (base / "__init__.py", base.with_suffix(".py")):
                    if candidate.is_file() and (missing := _missing_import(candidate, seen)):
                        return missing
    return None


@dataclass
class PytestRun:
    proc: subprocess.Popen
    started: float  # time.monotonic()


def start_pytest(plan: GpuTests, xml_path: Path, log_path: Path) -> PytestRun | None:
    """One pytest process for both groups (one import of the project, not two); None without pytest."""
    if importlib.util.find_spec("pytest") is None or not plan.node_ids:
        return None
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={xml_path}", *plan.node_ids]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)
    return PytestRun(proc, time.monotonic())


def finish_pytest(report: Report, run: PytestRun | None, plan: GpuTests, xml_path: Path, log_path: Path, timeout_s: float) -> None:
    names = {"a1": "pytest: gpu-marked tests", "a2": "pytest: Triton kernels compiled for this GPU"}
    not_runnable = "; ".join(f"{f} needs {m}" for f, m in plan.not_runnable.items())
    if run is None:
        why = "pytest absent" if importlib.util.find_spec("pytest") is None else "no such tests found"
        for rid, name in names.items():
            report.add(Row(rid, name, "skipped", note=why + (f"; not runnable here: {not_runnable}" if not_runnable else "")))
        return
    proc, limit = run.proc, max(1.0, timeout_s)
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        # an interrupted pytest still writes its report of the tests that finished; a killed one writes nothing
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        rc = None
    wall = time.monotonic() - run.started
    results = _junit_results(xml_path)
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    for rid, name, group in (("a1", names["a1"], plan.gpu_marked), ("a2", names["a2"], plan.triton)):
        counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
        failed: list[str] = []
        skip_reasons: set[str] = set()
        for node, (outcome, message) in results.items():
            if not any(node == g or node.startswith(g + "[") for g in group):
                continue
            counts[outcome] += 1
            if outcome in ("failed", "errors"):
                failed.append(f"{node.split('::')[-1]}: {message}")
            elif outcome == "skipped":
                skip_reasons.add(message)
        notes = []
        if rid == "a1" and not_runnable:
            notes.append(f"not runnable here: {not_runnable}")
        if rc is None:
            notes.append(f"pytest stopped at its limit ({limit:.0f} s after the check's imports)")
        elif sum(counts.values()) == 0 and group:
            notes.append(f"no results (pytest exit {rc}): {' '.join(tail)}")
        if skip_reasons:
            notes.append("skipped: " + "; ".join(sorted(skip_reasons))[:200])
        if failed:
            notes.append("; ".join(failed[:4]))
        bad = counts["failed"] + counts["errors"] > 0 or rc is None or (group and sum(counts.values()) == 0)
        report.add(Row(rid, name, "fail" if bad else "ok", figures={**counts, "functions": len(group), "pytest s": round(wall, 1)}, note=" | ".join(notes)))


def _junit_results(xml_path: Path) -> dict[str, tuple[str, str]]:
    """node id -> (passed | failed | skipped | errors, message)."""
    if not xml_path.exists():
        return {}
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        node = "/".join(module) + ".py::" + case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            tag = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(child.tag)
            if tag:
                lines = (child.get("message") or "").splitlines()
                outcome, message = tag, lines[0][:160] if lines else ""
        out[node] = (outcome, message)
    return out


# ------------------------------------------------------------------------------------------
# models and configs


@dataclass(frozen=True)
class PolicyShape:
    """The `policy` section's size fields (rl.config.PolicyConfig's names), without pydantic."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    tie_embeddings: bool = True  # as Qwen2.5-0.5B
    arch: str = "qwen2"

    @classmethod
    def of(cls, s: Scale) -> "PolicyShape":
        return cls(s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim, s.intermediate_size, s.max_position_embeddings)


def build_model(scale: Scale, tokenizer, device, seed: int = 0):
    """A random Qwen2 with the project's QK-probe attention, built on `device`, fp32 (the learner's master weights).

    `policies.model.build_model` sizes the vocabulary by the tokenizer; Qwen2.5's head has 151936
    rows for a 151665-token tokenizer, and there is no such tokenizer offline, so the vocabulary
    is set here (ids past the tokenizer's decode to nothing). Built on the GPU directly: a CPU
    initialisation of 0.5B parameters takes longer than the update it feeds."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from policies.model import text_config_kwargs
    from policies.qk_probe import QK_PROBE_ATTENTION, register_qk_probe

    register_qk_probe()
    kwargs = {**text_config_kwargs(PolicyShape.of(scale), tokenizer), "vocab_size": scale.vocab_size}
    config = Qwen2Config(**kwargs, attn_implementation=QK_PROBE_ATTENTION)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=QK_PROBE_ATTENTION)
    return model.float()


def experiment(
    scale: Scale,
    device: str,
    *,
    gradient_checkpointing: bool = False,
    microbatch_tokens: int = 0,
    shared_prefix: bool = False,
    tasks: int = 1,
    group: int = 8,
    max_new_tokens: int = 16,
):
    """The `ExperimentConfig` the learner (and part d's loop) reads: validated as a YAML would be."""
    from rl.config import validate_config

    shape = PolicyShape.of(scale)
    data = {
        "run": {"name": "gpu_check", "seed": 0},
        "policy": {k: getattr(shape, k) for k in ("arch", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "max_position_embeddings", "tie_embeddings")},
        "sft": {"enabled": False},
        "env": {"name": "math", "levels": [1, 2, 3]},
        "rollout": {"group_size": group, "max_new_tokens": max_new_tokens, "temperature": 1.0},
        # a random policy's groups are mostly all-zero: without this no step would train
        "algorithm": {"advantage": "grpo", "dynamic_sampling": False, "shared_prefix": shared_prefix, "chunked_logprobs": True},
        # a small lr keeps a random model finite over the timed updates (a skipped step times nothing)
        "optimizer": {"name": "muonclip", "lr": 1e-5, "adamw_lr": 1e-5, "qk_clip": True},
        "learner": {
            "device": device,
            "precision": "bf16",
            "gradient_checkpointing": gradient_checkpointing,
            "max_tokens_per_microbatch": microbatch_tokens,
        },
        "cluster": {"learner_gpus": 1 if device == "cuda" else 0},
        "train": {"tasks_per_step": tasks},
    }
    return validate_config(data, "<gpu_check>")


def matmul_params(model) -> int:
    """Parameters that take part in a matmul: every nn.Linear's weight, a tied head once."""
    import torch

    seen: set[int] = set()
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            n += m.weight.numel()
    return n


def update_flops(scale: Scale, n_matmul: int, row_lengths: list[int]) -> float:
    """Model FLOPs of one forward + backward (the module docstring's formula)."""
    tokens = sum(row_lengths)
    attention = 6 * scale.num_layers * scale.num_heads * scale.head_dim * sum(L * L for L in row_lengths)
    return 6.0 * n_matmul * tokens + attention


# ------------------------------------------------------------------------------------------
# timing helpers


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _timed_updates(learner: Any, batch: Any, device, repeats: int) -> tuple[float, float, dict[str, float], float | None]:
    """One warm-up update (Triton compiles, cuBLAS picks its kernels), then `repeats` timed ones:
    (warm-up s, median s, the last update's metrics, peak GiB over the timed ones)."""
    warm_s, _ = _timed(lambda: learner.update(batch), device)
    _reset_peak(device)
    times, metrics = [], {}
    for _ in range(repeats):
        dt, metrics = _timed(lambda: learner.update(batch), device)
        times.append(dt)
    return warm_s, statistics.median(times), metrics, _peak_gib(device)


def _reset_peak(device) -> int:
    """Resets the peak counter; returns the bytes allocated now (the baseline of 'extra')."""
    import torch

    if torch.device(device).type != "cuda":
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_gib(device, baseline: int = 0) -> float | None:
    import torch

    if torch.device(device).type != "cuda":
        return None  # the CPU allocator has no peak counter; the dry run checks paths, not memory
    return (torch.cuda.max_memory_allocated() - baseline) / 2**30


def _free_memory() -> None:
    """Give the last measurement's GPU memory back before the next one's peak is read."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():  # on the CPU there is no peak to protect, and gc is slow
        gc.collect()
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------
# b. learner updates


def learner_batch(scale: Scale, tokens: int, seed: int):
    """A `TrainBatch` of full rows (prompt + completion, no padding), every prompt distinct."""
    import torch

    from rl.batch import TrainBatch

    rows = max(1, tokens // scale.row_len)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, scale.vocab_size, (rows, scale.row_len), generator=g)
    attn = torch.ones_like(ids)
    cmask = torch.zeros(rows, scale.row_len - 1)
    cmask[:, scale.prompt_len - 1 :] = 1.0  # position t predicts token t+1: the completion's tokens
    # near a random policy's own log-probs (-ln V), so the PPO ratio clips as it would on-policy
    old = (-math.log(scale.vocab_size) + 0.1 * torch.randn(rows, scale.row_len - 1, generator=g)) * cmask
    adv = torch.randn(rows, generator=g)
    return TrainBatch(ids, attn, cmask, old, adv)


def measure_learner(scale: Scale, device: str, tokens: int, checkpointing: bool, microbatch: int, peak_tflops: float) -> Row:
    import torch

    from policies.tokenizer import load_tokenizer
    from rl.learner import Learner

    cfg = experiment(scale, device, gradient_checkpointing=checkpointing, microbatch_tokens=microbatch)
    model = build_model(scale, load_tokenizer(None), device)
    learner = Learner.from_config(model, cfg)
    batch = learner_batch(scale, tokens, seed=tokens)
    n_matmul = matmul_params(learner.model)
    warm_s, step_s, metrics, peak = _timed_updates(learner, batch, device, scale.timed_updates)
    n_tokens = int(batch.attention_mask.sum())
    flops = update_flops(scale, n_matmul, batch.attention_mask.sum(dim=1).tolist())
    figures: dict[str, Any] = {
        "tokens": n_tokens,
        "rows": len(batch),
        "tok/s": n_tokens / step_s,
        "peak GiB": peak,
        "TFLOP/s": flops / step_s / 1e12,
        "MFU %": 100 * flops / step_s / (peak_tflops * 1e12) if torch.device(device).type == "cuda" else None,
        "first update s": warm_s,
        "skipped steps": metrics.get("learner/skipped_steps"),
        "qk max logit": metrics.get("learner/qk_max_logit"),
        "matmul params M": n_matmul / 1e6,
    }
    note = "a step was skipped (non-finite loss or gradient): the timing lacks an optimizer step" if metrics.get("learner/skipped_steps") else ""
    return Row("", "", seconds=step_s, figures=figures, note=note)


def part_b(report: Report, budget: Budget, scale: Scale, device: str, peak_tflops: float) -> None:
    for i, (tokens, ckpt, micro) in enumerate(scale.learner_runs, start=1):
        name = f"learner update bf16, {_k(tokens)} tokens, checkpointing {'on' if ckpt else 'off'}" + (f", micro-batches of {_k(micro)}" if micro else "")
        measure(report, budget, f"b{i}", name, lambda t=tokens, c=ckpt, m=micro: measure_learner(scale, device, t, c, m, peak_tflops), need_s=30)


# ------------------------------------------------------------------------------------------
# c. sampling and log-prob kernels


def encode(tokenizer, tasks) -> list[list[int]]:
    """`rollout.collect.encode_prompt` for text tasks (that module imports the Ray workers)."""
    return [tokenizer(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks]


def math_tasks(n: int, seed: int):
    import numpy as np

    from envs.math import MathEnv

    return MathEnv(levels=(1, 2, 3)).sample(n, np.random.default_rng(seed))


def measure_generation(scale: Scale, model, tokenizer, device: str, dtype_name: str) -> Row:
    import torch

    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    engine = HFEngine(copy.deepcopy(model).to(dtype), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=scale.gen_prompts * scale.gen_group)
    prompts = [p for p in encode(tokenizer, math_tasks(scale.gen_prompts, seed=1)) for _ in range(scale.gen_group)]
    engine.generate(prompts[: scale.gen_group], SamplingParams(max_new_tokens=2), seed=0)  # warm-up
    base = _reset_peak(device)
    params = SamplingParams(max_new_tokens=scale.gen_tokens, temperature=1.0)
    dt, completions = _timed(lambda: engine.generate(prompts, params, seed=1), device)
    peak = _peak_gib(device, base)
    new = sum(len(c.token_ids) for c in completions)
    return Row("", "", seconds=dt, figures={
        "completions": len(completions),
        "new tokens": new,
        "tok/s": new / dt,
        "completions/s": len(completions) / dt,
        "extra peak GiB": peak,
    })


def measure_logprobs(scale: Scale, device: str, tokens: int, impl: str, repeats: int) -> Row:
    import torch

    from kernels.logprob import chunked_logprobs, naive_logprobs

    if impl == "chunked triton" and torch.device(device).type != "cuda":
        return Row("", "", "skipped", note="Triton kernels compile for CUDA only (the CPU interpreter run is tests/test_kernels.py)")
    fns = {
        "naive": naive_logprobs,
        "chunked torch": lambda h, w, t: chunked_logprobs(h, w, t, backend="torch"),
        "chunked triton": lambda h, w, t: chunked_logprobs(h, w, t, backend="triton"),
    }
    fn = fns[impl]
    # the learner's bf16 path hands the chunked kernel bf16 hidden states and head (rl/learner.py)
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(tokens)
    d, v = scale.hidden_size, scale.vocab_size
    h = torch.randn(tokens, d, generator=g, device=device).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=g, device=device) * d**-0.5).to(dtype).requires_grad_()
    t = torch.randint(0, v, (tokens,), generator=g, device=device)

    def step() -> None:
        h.grad = w.grad = None
        lp, ent = fn(h, w, t)
        (lp.sum() - 0.01 * ent.sum()).backward()

    step()  # warm-up (compiles on first use)
    h.grad = w.grad = None
    base = _reset_peak(device)
    times = [_timed(step, device)[0] for _ in range(repeats)]
    peak = _peak_gib(device, base)
    dt = statistics.median(times)
    return Row("", "", seconds=dt, figures={"tokens": tokens, "vocab": v, "tok/s": tokens / dt, "extra peak GiB": peak, "dtype": str(dtype).removeprefix("torch.")})


def part_c(report: Report, budget: Budget, scale: Scale, device: str) -> None:
    from policies.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(None)
    holder: dict[str, Any] = {}

    def model():
        if "model" not in holder:
            holder["model"] = build_model(scale, tokenizer, device)
        return holder["model"]

    try:
        for rid, dtype_name in (("c1", "fp32"), ("c2", "bf16")):
            name = f"hf generate {dtype_name}, {scale.gen_prompts} prompts x {scale.gen_group}, {scale.gen_tokens} new tokens"
            measure(report, budget, rid, name, lambda d=dtype_name: measure_generation(scale, model(), tokenizer, device, d), need_s=20)
    finally:
        holder.clear()
        _free_memory()
    rid = 3
    for tokens in scale.logprob_tokens:
        for impl in ("naive", "chunked torch", "chunked triton"):
            name = f"log-prob + entropy fwd+bwd, {impl}, {_k(tokens)} tokens"
            measure(report, budget, f"c{rid}", name, lambda t=tokens, i=impl: measure_logprobs(scale, device, t, i, repeats=5), need_s=10)
            rid += 1


# ------------------------------------------------------------------------------------------
# d. GRPO end to end


def collect(engine, tasks, tokenizer, params, group: int, seed: int, step: int) -> list:
    """`rollout.collect.collect` with the engine in this process instead of Ray workers."""
    from rollout.episode import Episode, Turn

    prompts = encode(tokenizer, tasks)
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(group)]
    completions = engine.generate([p for _, p in flat], params, seed)
    episodes = []
    for (i, prompt), c in zip(flat, completions):
        text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
        turn = Turn(role="assistant", text=text, token_ids=c.token_ids, logprobs=c.logprobs, trainable=True)
        episodes.append(Episode(task_id=tasks[i].id, env=tasks[i].env, prompt=tasks[i].prompt, prompt_ids=prompt, turns=[turn], finish_reason=c.finish_reason, group=i, step=step))
    return episodes


def part_d(report: Report, budget: Budget, scale: Scale, device: str) -> None:
    import numpy as np
    import torch

    state: dict[str, Any] = {}

    def setup() -> None:
        from policies.tokenizer import load_tokenizer
        from rl.algorithms import get_advantage
        from rl.experiment_env import experiment_env
        from rl.learner import Learner
        from rollout.engines.base import SamplingParams
        from rollout.engines.hf import HFEngine

        # as training runs: the G completions of a task share its prompt, computed once
        cfg = experiment(scale, device, shared_prefix=True, tasks=scale.grpo_tasks, group=scale.grpo_group, max_new_tokens=scale.grpo_tokens)
        tokenizer = load_tokenizer(cfg.policy.tokenizer)
        model = build_model(scale, tokenizer, device)
        learner = Learner.from_config(model, cfg)
        # the rollout side's own copy, in the dtype a GPU sampler serves; loading casts the fp32 master weights
        engine_dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        engine = HFEngine(copy.deepcopy(model).to(engine_dtype), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=cfg.rollout.batch_size)
        engine.load_weights(model.state_dict())
        params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
        state.update(cfg=cfg, tokenizer=tokenizer, model=model, learner=learner, engine=engine, params=params, env=experiment_env(cfg), advantage=get_advantage(cfg.algorithm.advantage))

    def grpo_step(step: int) -> Row:
        from envs.registry import verify_batch
        from rewards.scoring import score_batch
        from rl.algorithms import nonzero_variance_groups
        from rl.batch import build_batch
        from rl.task_sampling import sample_tasks

        setup_s = _timed(setup, device)[0] if not state else None
        cfg, env, tokenizer, learner, engine = state["cfg"], state["env"], state["tokenizer"], state["learner"], state["engine"]
        t0 = time.perf_counter()
        tasks = sample_tasks(env, cfg.train.tasks_per_step, np.random.default_rng([cfg.run.seed, step]), cfg.env.level_weights)
        rollout_s, episodes = _timed(lambda: collect(engine, tasks, tokenizer, state["params"], cfg.rollout.group_size, cfg.run.seed * 1_000_003 + step, step), device)

        t1 = time.perf_counter()
        verdicts = verify_batch(env, [tasks[e.group] for e in episodes], [e.completion_text for e in episodes], cfg.sandbox.workers)
        scored = score_batch(episodes, [tasks[e.group] for e in episodes], verdicts, cfg.rewards, step)
        for e, r in zip(episodes, scored.breakdowns):
            e.reward = r
        rewards = torch.tensor([e.reward.total for e in episodes], dtype=torch.float32)
        groups = torch.tensor([e.group for e in episodes], dtype=torch.long)
        advantages = state["advantage"](rewards, groups)
        keep = nonzero_variance_groups(rewards, groups) if cfg.algorithm.dynamic_sampling else torch.ones_like(rewards, dtype=torch.bool)
        score_s = time.perf_counter() - t1

        kept = [i for i, k in enumerate(keep.tolist()) if k]
        metrics: dict[str, float] = {}

        def train() -> None:
            if kept:
                batch = build_batch([episodes[i] for i in kept], [float(advantages[i]) for i in kept], tokenizer.pad_token_id)
                metrics.update(learner.update(batch))

        learner_s, _ = _timed(train, device)
        weights_s, _ = _timed(lambda: engine.load_weights(state["model"].state_dict()), device)
        step_s = time.perf_counter() - t0
        new_tokens = sum(len(e.completion_ids) for e in episodes)
        return Row("", "", seconds=step_s, figures={
            "rollout s": rollout_s,
            "verify+score s": score_s,
            "learner s": learner_s,
            "weight load s": weights_s,
            "completions": len(episodes),
            "new tokens": new_tokens,
            "rollout tok/s": new_tokens / rollout_s,
            "trained rows": len(kept),
            "pass rate": float(np.mean([v.passed for v in verdicts])),
            "reward mean": float(rewards.mean()),
            "skipped steps": metrics.get("learner/skipped_steps"),
            "set-up s": setup_s,  # model, learner, engine copy, env: before the step's clock starts
        }, note="the first step pays for first-use compiles and allocations" if setup_s is not None else "")

    try:
        for step in range(1, scale.grpo_steps + 1):
            name = f"GRPO step {step}: {scale.grpo_tasks} math tasks x {scale.grpo_group}, {scale.grpo_tokens} new tokens, hf engine + learner bf16"
            measure(report, budget, f"d{step}", name, lambda s=step: grpo_step(s), need_s=30 if step == 1 else 15)
    finally:
        state.clear()
        _free_memory()


# ------------------------------------------------------------------------------------------
# e. the sharded learner (FSDP2) at world size 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sharded_backends(device: str) -> list[str]:
    """The process group backends part e tries, in turn: the learner ranks' own
    (`rl.distributed.ranks.process_group_backend`: `cpu:gloo,cuda:nccl` on CUDA, since the ranks
    agree on small CPU tensors that NCCL alone cannot carry)."""
    from rl.distributed.ranks import process_group_backend

    return [process_group_backend(device)]


def try_backends(backends: list[str], run: Callable[[str], Any], cleanup: Callable[[], None]) -> tuple[str, Any, list[str]]:
    """`run(backend)` for each backend in turn until one returns: (that backend, what it returned,
    the failures before it). `cleanup()` after each failure; all failed: RuntimeError naming each."""
    failures: list[str] = []
    for backend in backends:
        try:
            return backend, run(backend), failures
        except Exception as e:
            traceback.print_exc()
            failures.append(f"{backend}: {_error_text(e)}")
            cleanup()
    raise RuntimeError("every backend failed: " + " | ".join(failures))


def _full(t):
    full = getattr(t, "full_tensor", None)
    return full() if full is not None else t


def train_state_tensors(learner) -> dict[str, Any]:
    """The learner's parameters and optimizer state tensors by name (the tensors, not copies;
    DTensors under FSDP2)."""
    import torch

    params = dict(learner.model.named_parameters())
    out: dict[str, Any] = {f"model.{n}": p.detach() for n, p in params.items()}
    for part, opt in learner.optimizer.optimizers.items():
        for n in learner.optimizer.params_of(part):
            for k, v in opt.state.get(params[n], {}).items():
                if torch.is_tensor(v):
                    out[f"optim.{part}.{n}.{k}"] = v
    return out


def equal_tensors(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> tuple[int, int, list[str]]:
    """(how many of `a`'s tensors under `prefix` equal `b`'s, how many there are, the first names that do not)."""
    import torch

    names = [n for n in a if n.startswith(prefix)]
    same, differ = 0, []
    for n in names:
        x = _full(a[n])  # a copy at world size 1 too: one tensor at a time
        if n in b and torch.equal(x, _full(b[n]).to(x.device)):
            same += 1
        else:
            differ.append(n)
    return same, len(names), differ[:3]


def part_f(report: Report, budget: Budget, scale: Scale, device: str) -> None:
    """The SDPA kernel choice at changing shapes (benchmarks/sdpa_kernels.py: its rows as figures)."""
    from benchmarks import sdpa_kernels
    from policies.tokenizer import load_tokenizer

    def decoding() -> dict[str, Any]:
        tokenizer = load_tokenizer(None)
        rows = sdpa_kernels.decode_rows(build_model(scale, tokenizer, device), tokenizer, scale, device)
        rate = {name: tokens / seconds for name, seconds, tokens in rows}
        base = rows[1][2] / rows[1][1]
        return {"tok/s " + name: r for name, r in rate.items()} | {"PyTorch's choice new / engine's": rate[rows[2][0]] / base}

    def updates() -> dict[str, Any]:
        rows = sdpa_kernels.learner_rows(scale, device)
        base = rows[0][2] / rows[0][1]
        figures = {"lengths": rows[0][0].split("lengths ")[-1]}
        for name, seconds, tokens, median in rows:
            figures["tok/s " + name.split(":")[0]] = tokens / seconds
        figures["PyTorch's choice new / cuDNN excluded"] = rows[1][2] / rows[1][1] / base
        return figures

    measure(report, budget, "f1", f"hf decoding, SDPA kernels at new and cached shapes, {scale.gen_prompts} prompts x {scale.gen_group}, {scale.gen_tokens} new tokens", decoding, need_s=60)
    measure(report, budget, "f2", f"learner updates bf16, SDPA kernels at new and cached row lengths, {sdpa_kernels.LEARNER_STEPS} updates each", updates, need_s=45)


def part_e(report: Report, budget: Budget, scale: Scale, device: str) -> None:
    """The learner's FSDP2 path in one process: the sharded code (fully_shard per decoder layer +
    root, bf16 mixed precision, Muon's sharded step, QK-Clip's reduced maxima, the DCP checkpoint)
    without Ray, at world size 1."""
    import torch
    import torch.distributed as dist

    tokens = scale.learner_runs[0][0]  # b1's batch: its tok/s is the unsharded figure to compare with
    state: dict[str, Any] = {}

    def teardown() -> None:
        state.clear()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        _free_memory()

    def sharded_learner(seed: int):
        from policies.tokenizer import load_tokenizer
        from rl.distributed.ranks import ProcessGroupRanks
        from rl.learner import Learner

        # chunked_logprobs stays on in the config: the learner itself takes the model's own forward
        # for any ProcessGroupRanks (`ranks.sharded` is true at world size 1 too), since the chunked
        # path reads the head's weight outside the model's forward, where FSDP holds it sharded
        cfg = experiment(scale, device)
        model = build_model(scale, load_tokenizer(None), device, seed=seed)
        return cfg, Learner.from_config(model, cfg, ranks=ProcessGroupRanks(state["mesh"]))

    def update_on(backend: str) -> Row:
        from datetime import timedelta

        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor

        if device == "cuda":
            torch.cuda.set_device(0)
        # a collective that waits for a rank that is not there should fail, not hang the loan
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, timeout=timedelta(seconds=120))
        state["mesh"] = init_device_mesh(device, (1,))
        cfg, learner = sharded_learner(seed=0)
        state["learner"] = learner
        batch = learner_batch(scale, tokens, seed=tokens)
        warm_s, step_s, metrics, peak = _timed_updates(learner, batch, device, scale.timed_updates)
        n_tokens = int(batch.attention_mask.sum())
        params = list(learner.model.parameters())
        dtensors = sum(isinstance(p, DTensor) for p in params)
        owned = learner.optimizer.optimizers["muon"].last_owned
        b1 = next((r for r in report.rows if r.id == "b1" and r.status == "ok"), None)
        problems = []
        if dtensors != len(params):
            problems.append(f"{len(params) - dtensors} parameters are not DTensors")
        if owned.matrices == 0:
            problems.append("Muon's last step orthogonalised no matrix on the sharded path")
        if metrics.get("learner/skipped_steps"):
            problems.append("a step was skipped (non-finite loss or gradient)")
        return Row("", "", "fail" if problems else "ok", seconds=step_s, figures={
            "backend": backend,
            "tokens": n_tokens,
            "rows": len(batch),
            "tok/s": n_tokens / step_s,
            "tok/s vs b1": n_tokens / step_s / b1.figures["tok/s"] if b1 and b1.figures.get("tokens") == n_tokens else None,
            "peak GiB": peak,
            "first update s": warm_s,
            "updates": 1 + scale.timed_updates,
            "skipped steps": metrics.get("learner/skipped_steps"),
            "qk max logit": metrics.get("learner/qk_max_logit"),
            "DTensor params": f"{dtensors}/{len(params)}",
            "muon sharded matrices": owned.matrices,
            "muon sharded numel M": owned.numel / 1e6,
            "chunked logprobs": learner.logprob_path == "chunked",
            "shared prefix": learner.shared_prefix,
        }, note="; ".join(problems))

    def sharded_update() -> Row:
        backend, row, failures = try_backends(sharded_backends(device), update_on, teardown)
        if failures:
            row.status = "fail"
            row.note = "; ".join(p for p in (f"{' | '.join(failures)}; figures with {backend}", row.note) if p)
        return row

    def checkpoint_round_trip() -> Row:
        from rl.distributed.checkpoint import load_train_state, save_train_state

        if "learner" not in state:
            return Row("", "", "skipped", note="no sharded learner: e1 did not build one")
        learner = state["learner"]
        folder = Path(tempfile.mkdtemp(prefix="gpu_check_ckpt_"))
        try:
            save_s, _ = _timed(lambda: save_train_state(folder / "step_1", learner.model, learner.optimizer), device)
            files = [f for f in (folder / "step_1").rglob("*") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            _, fresh = sharded_learner(seed=1)  # other weights, no optimizer state yet
            saved = train_state_tensors(learner)
            differed = len(equal_tensors(saved, train_state_tensors(fresh), "model.")[2])  # > 0, or the check below proves nothing
            load_s, _ = _timed(lambda: load_train_state(folder / "step_1", fresh.model, fresh.optimizer), device)
            loaded = train_state_tensors(fresh)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        p_same, p_all, p_diff = equal_tensors(saved, loaded, "model.")
        o_same, o_all, o_diff = equal_tensors(saved, loaded, "optim.")
        extra = sorted(set(loaded) - set(saved))[:3]
        problems = []
        if not differed:
            problems.append("the fresh learner's weights already equalled the saved ones")
        if p_same != p_all or o_same != o_all or extra:
            problems.append(f"not as saved: {p_diff + o_diff + extra}")
        if o_all == 0:
            problems.append("no optimizer state was saved")
        return Row("", "", "fail" if problems else "ok", seconds=save_s + load_s, figures={
            "save s": save_s,
            "load s": load_s,
            "checkpoint GiB": size / 2**30,
            "files": len(files),
            "params equal": f"{p_same}/{p_all}",
            "optimizer tensors equal": f"{o_same}/{o_all}",
        }, note="; ".join(problems))

    try:
        name = f"sharded learner (FSDP2, world size 1) update bf16, {_k(tokens)} tokens, muonclip"
        measure(report, budget, "e1", name, sharded_update, need_s=30)
        measure(report, budget, "e2", "sharded checkpoint: save, load into a fresh sharded learner, compare", checkpoint_round_trip, need_s=20)
    finally:
        teardown()


# ------------------------------------------------------------------------------------------
# formatting


def _k(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _natural(rid: str) -> tuple[str, int]:
    head = rid.rstrip("0123456789")
    tail = rid[len(head) :]
    return head, int(tail) if tail else 0


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.3g}" if s < 100 else f"{s:.0f}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)


def _fmt_figures(row: Row) -> str:
    parts = [f"{k} {_fmt_value(v)}" for k, v in row.figures.items() if v is not None]
    if row.note:
        parts.append(row.note)
    return ", ".join(parts) if parts else "-"


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    if isinstance(e, ModuleNotFoundError) and e.name == "pydantic":
        text += " (rl.config needs it: `make gpu-wheels` here, carry benchmarks/.gpu_wheels there)"
    return text


def environment(device: str, pydantic_from: str) -> dict[str, Any]:
    import torch
    import transformers

    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": _version_of("triton"),
        "pydantic": pydantic_from,
        "device": device,
    }
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
        meta["gpu memory GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return meta


def _version_of(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every code path on the CPU with a tiny model (seconds, not minutes)")
    ap.add_argument("--minutes", type=float, default=8.0, help="cap on the whole run; measurements that would start later are skipped")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows and figures here (rewritten after each row)")
    ap.add_argument("--parts", default="abcdef", help="which parts run: any of a, b, c, d, e, f")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak, for MFU (H200 SXM: 989)")
    args = ap.parse_args(argv)

    budget = Budget(args.minutes)
    t_start = time.monotonic()
    pydantic_from = use_carried_wheels()
    # pytest starts first: its imports overlap ours, and it is done before any timing starts
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # the log's tail is printed when pytest fails
    xml_path, log_path = scratch / "pytest.xml", scratch / "pytest.log"
    plan = plan_gpu_tests() if "a" in args.parts else GpuTests([], [], {})
    pytest_run = start_pytest(plan, xml_path, log_path) if "a" in args.parts else None

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run for the CPU check", file=sys.stderr)
        if pytest_run is not None:
            os.killpg(pytest_run.proc.pid, signal.SIGKILL)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    scale = TINY if args.dry_run else QWEN25_05B
    report = Report(args.json, environment(device, pydantic_from))
    if "a" in args.parts:
        report.meta["pytest"] = {"gpu-marked": plan.gpu_marked, "triton": plan.triton, "not runnable": plan.not_runnable}
    print(f"gpu_check: {json.dumps(report.meta)}", file=sys.stderr, flush=True)

    try:
        if "a" in args.parts:
            # at most 40% of the budget: the measurements are what the loan is for
            finish_pytest(report, pytest_run, plan, xml_path, log_path, timeout_s=min(0.4 * 60 * args.minutes, budget.left() - 60))
            if pytest_run is not None and pytest_run.proc.returncode not in (0, 5):  # failures, a crash or the time limit: the log says which
                print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
        if "b" in args.parts:
            part_b(report, budget, scale, device, args.peak_tflops)
        if "e" in args.parts:  # before c and d: the newest code, the most in need of the GPU (module docstring)
            part_e(report, budget, scale, device)
        if "f" in args.parts:  # the SDPA kernel choice, also new
            part_f(report, budget, scale, device)
        if "c" in args.parts:
            part_c(report, budget, scale, device)
        if "d" in args.parts:
            part_d(report, budget, scale, device)
    except KeyboardInterrupt:  # the wrapper's time limit: still print what was measured
        report.add(Row("zz", "run interrupted", "error", note="stopped by a signal (the wrapper's time limit?)"))
    finally:
        if pytest_run is not None and pytest_run.proc.poll() is None:
            os.killpg(pytest_run.proc.pid, signal.SIGKILL)

    report.meta["wall_s"] = round(time.monotonic() - t_start, 1)
    report.write_json()
    print(f"\n## gpu_check ({'dry run, CPU' if args.dry_run else report.meta.get('gpu', device)}; {report.meta['wall_s']} s)\n")
    print(" ".join(f"{k}: {v}." for k, v in report.meta.items() if k not in ("wall_s", "pytest")))
    print()
    print(report.table())
    errors = [r for r in report.rows if r.status in ("error", "fail")]
    print(f"\n{len(report.rows)} rows, {len(errors)} with errors or failures")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
