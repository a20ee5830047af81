"""`swarmrl export`: a run's checkpoint as a stand-alone Hugging Face model folder.

A run keeps its weights as `torch.save`d state dicts (`checkpoints/step_N/model.pt`, and `ema.pt`,
the evaluated average, with `train.eval_ema`) and the rest of the model once, in `policy/`: the
config, generation config and tokenizer (`rl.checkpoint.save_policy_skeleton`). An export joins
the two into a folder that loads without this project: `AutoModelForCausalLM.from_pretrained`
(safetensors, stock attention) and vLLM.

The training attention (`policies.qk_probe`) is transformers' SDPA plus a probe that only
records logits, so the exported model gives the same logits under `attn_implementation="sdpa"`.
Its name must never reach the exported `config.json`: a consumer without the project installed
could not resolve it.

The folder is written under a temporary name next to the destination and renamed into place,
so an interrupted export never leaves a half-written model where a finished one is expected.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from rl.checkpoint import POLICY_SKELETON, checkpoint_dir
from rl.config import ConfigError

_STEP_DIR = re.compile(r"^step_(\d+)$")


def export(run_dir: str | Path, out_dir: str | Path, step: int | None = None, average: bool = False, *, force: bool = False) -> Path:
    """Write the weights of `run_dir`'s checkpoint at `step` (default: the latest) as a Hugging
    Face model folder `out_dir` (safetensors, tokenizer with its chat template, generation
    config). `average`: the checkpoint's weight average (`ema.pt`) instead of the trained weights.
    `force`: replace an earlier export at `out_dir`. Returns `out_dir`; raises `ConfigError` with
    the fix when the run, the checkpoint or the destination does not allow it."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    skeleton = policy_skeleton(run_dir)
    ckpt = choose_checkpoint(run_dir, step)
    from policies.lora import merged_checkpoint_state

    state = merged_checkpoint_state(checkpoint_weights(ckpt, average), skeleton)  # a LoRA run's adapters folded in
    check_destination(out_dir, run_dir, force)
    model = rebuild_model(skeleton, state, source=ckpt)

    work = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")  # same filesystem: the rename is atomic
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        model.save_pretrained(work, safe_serialization=True)
        save_tokenizer(skeleton, work)
        scrub_custom_attention(work / "config.json")
        if out_dir.exists():  # check_destination allowed it: empty, or an earlier export with force
            shutil.rmtree(out_dir)
        work.replace(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


def policy_skeleton(run_dir: Path) -> Path:
    """`run_dir/policy/`, the model minus its weights; a clear error for anything else."""
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    skeleton = run_dir / POLICY_SKELETON
    if not (skeleton / "config.json").is_file():
        raise ConfigError(
            f"{run_dir}: no {POLICY_SKELETON}/config.json (the model's config and tokenizer, written at the start of a run); "
            "runs trained before `swarmrl export` existed cannot be exported"
        )
    from policies.vlm import is_vlm_folder

    if is_vlm_folder(skeleton):
        raise ConfigError(f"{run_dir}: the policy is a vision-language model (llava); export supports text models (llama, qwen2)")
    return skeleton


def checkpoint_steps(run_dir: Path) -> dict[int, Path]:
    """Every complete checkpoint of the run, by step (temporary folders of an interrupted write are not listed)."""
    found = {}
    for p in checkpoint_dir(run_dir).glob("step_*"):
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "model.pt").is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def choose_checkpoint(run_dir: Path, step: int | None) -> Path:
    """The checkpoint of `step`, or the latest one when `step` is None."""
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise ConfigError(f"{run_dir}: no checkpoints (checkpoints/step_*/model.pt); the run saved none yet (checkpoint.every, or let it finish)")
    if step is None:
        return steps[max(steps)]
    if step not in steps:
        raise ConfigError(f"{run_dir}: no checkpoint for step {step}; available steps: {', '.join(map(str, steps))}")
    return steps[step]


def checkpoint_weights(ckpt: Path, average: bool) -> dict[str, torch.Tensor]:
    """The trained weights (`model.pt`) or, with `average`, the evaluated average (`ema.pt`)."""
    name = "ema.pt" if average else "model.pt"
    f = ckpt / name
    if not f.is_file():
        if average:
            raise ConfigError(f"{ckpt}: no ema.pt (the run did not set train.eval_ema, so it kept no weight average); drop --average")
        raise ConfigError(f"{ckpt}: no {name}")
    return torch.load(f, map_location="cpu", weights_only=True, mmap=True)


def rebuild_model(skeleton: Path, state: dict[str, torch.Tensor], source: Path | None = None) -> Any:
    """The causal LM of `skeleton`'s config in float32 with stock SDPA attention, holding `state`
    (every key must fit: a checkpoint of another model is refused, not half-loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(skeleton)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"{source or 'the checkpoint'} does not fit {skeleton}: missing {sorted(result.missing_keys)[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]}"
        )
    if (skeleton / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(skeleton)
    return model.eval()


def save_tokenizer(skeleton: Path, out: Path) -> None:
    """The run's tokenizer with its chat template, through `AutoTokenizer` (so the export holds
    what a stock loader reads, and none of the run's other files)."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(skeleton).save_pretrained(out)


def scrub_custom_attention(config_json: Path) -> None:
    """Drop every config key that names the project's attention implementation (a nested
    `text_config` included): stock loaders choose their own attention."""
    from policies.qk_probe import QK_PROBE_ATTENTION

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if not _names(v, QK_PROBE_ATTENTION)}
        return node

    data = json.loads(config_json.read_text())
    cleaned = clean(data)
    if cleaned != data:
        config_json.write_text(json.dumps(cleaned, indent=2, sort_keys=True) + "\n")


def _names(value: Any, attention: str) -> bool:
    if isinstance(value, str):
        return value == attention
    if isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
        return attention in value.values()  # a per-sub-config mapping of implementations
    return False


def check_destination(out_dir: Path, run_dir: Path, force: bool) -> None:
    """`out_dir` may be new or empty; with `force`, an earlier export (a folder with a
    config.json) is replaced. Anything else is refused: `force` never deletes an unrelated folder."""
    out, run = out_dir.resolve(), run_dir.resolve()
    if out == run or out in run.parents or out == run / POLICY_SKELETON or checkpoint_dir(run) in (out, *out.parents):
        raise ConfigError(f"{out_dir}: would overwrite the run itself; export to a folder outside {run_dir}/policy and {run_dir}/checkpoints")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise ConfigError(f"{out_dir}: exists and is not empty; choose another folder, or pass --force to replace an earlier export")
    if not (out_dir / "config.json").is_file():
        raise ConfigError(f"{out_dir}: not empty and not an earlier export (no config.json); --force only replaces a model folder")
