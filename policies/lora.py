"""LoRA adapters for RL (`policy.lora`): what trains, what the workers serve, what QK-Clip scales.

A LoRA run keeps the policy's weights W frozen and trains, for every targeted linear layer, two
small matrices A (r x in) and B (out x r), B starting at zero:

    y = W x + b + s · B A dropout(x),      s = alpha / r

The adapters are injected in place with PEFT (`inject_adapter_in_model`), an optional
dependency imported only when a run asks for LoRA. The model stays the transformers model it
was (same class, `base_model_prefix`, output head, config), so the learner's log-prob paths,
the QK probe and the checkpoints see an ordinary model whose targeted layers now hold
`base_layer` + `lora_A` + `lora_B`. Decisions, and why:

- Optimizer: only `lora_A` / `lora_B` require grad. Both are 2-D and neither is an embedding or
  the head, so `rl.optim.split_params` gives them to Muon; nothing trainable is left for AdamW.
  Embeddings, the output head, norms and biases stay frozen (targets must be hidden linear
  layers: `check_targets`).
- KL reference: the same model with its adapters switched off (`adapters_disabled`), not a
  second copy; it is the base policy as long as the base weights do not move.
- QK-Clip: head h's logits come from the merged rows (W + s·B·A)[rows]. Scaling the head's rows
  of the base W (and bias) and of B by the same factor scales exactly those merged rows
  (`output_row_tensors`), so the clip is exact on the merged q/k. The base weights are frozen to
  the optimizer, not to the clip; since that moves the "adapters off" reference, the config
  refuses `algorithm.kl_coef > 0` together with QK-Clip under LoRA.
- Rollout workers are built from the base model folder and load state dicts keyed like it: they
  get `merged_state_dict(model)`, W + s·B·A under the base key names, computed without touching
  the model (what PEFT's `merge_and_unload` would leave, on a copy). `MergedWeights` stands in
  for the model wherever only its served weights are read (pushes, the evaluated average, the
  PARL sub-agent snapshot); `train.eval_ema` therefore averages merged weights, the policy that
  is actually served.
- Checkpoints keep the adapter model's own state dict (base weights included: QK-Clip may have
  rescaled them), so resume is a plain `load_state_dict`. The run writes its LoRA settings to
  `policy/lora.json` (`save_lora_settings`); `merged_checkpoint_state` turns a checkpoint's
  `model.pt` into base-layout weights with that file alone (no PEFT needed to export).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from policies.spec import LoraConfig

ADAPTER = "default"  # the one adapter a run trains (PEFT's default name)
LORA_SETTINGS = "lora.json"  # in the run's policy skeleton folder
_BASE = ".base_layer."
_LORA_A, _LORA_B = f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"


def require_peft() -> Any:
    """The `peft` module, or an ImportError saying how to install it."""
    try:
        import peft
    except ImportError as e:
        raise ImportError("policy.lora needs PEFT: `pip install peft`, or install the project's `lora` extra (`pip install -e '.[lora]'`)") from e
    return peft


def check_targets(model: torch.nn.Module, targets: list[str]) -> None:
    """Every target must name hidden linear layers: a typo would otherwise train nothing there, and
    an adapter on the head or an embedding would not merge into the layout the workers load."""
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if head is not None and m is head}
    for target in targets:
        if target in head_names:
            raise ValueError(f"policy.lora.target_modules: {target!r} is the output head, which stays frozen under LoRA; drop it")
        if target not in linear:
            raise ValueError(f"policy.lora.target_modules: {target!r} names no linear layer of the model; its linear layers are {sorted(linear - head_names)}")


def apply_lora(model: torch.nn.Module, cfg: LoraConfig, seed: int = 0) -> torch.nn.Module:
    """Inject adapters into `model` in place and freeze everything else; returns `model`.

    `seed` fixes the initialisation of A (B starts at zero, so the policy is unchanged) without
    consuming the caller's random stream.
    """
    peft = require_peft()
    check_targets(model, cfg.target_modules)
    peft_cfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules), lora_dropout=cfg.dropout, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(peft_cfg, model, adapter_name=ADAPTER)
    model.requires_grad_(False)
    for p in adapter_parameters(model).values():
        p.requires_grad_(True)
    return model


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{module name: LoRA layer} of `model` (recognised by shape, so no PEFT import is needed)."""
    return {name: m for name, m in model.named_modules() if _is_lora_layer(m)}


def has_lora(model: torch.nn.Module) -> bool:
    return any(_is_lora_layer(m) for m in model.modules())


def adapter_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """{name: parameter} of every A and B matrix."""
    return {n: p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def lora_scaling(model: torch.nn.Module) -> float:
    """s = alpha / r, the same for every layer of a run (one `policy.lora` section)."""
    scales = {float(layer.scaling[ADAPTER]) for layer in lora_layers(model).values()}
    if len(scales) != 1:
        raise ValueError(f"expected one LoRA scaling across the model, found {sorted(scales)}")
    return scales.pop()


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as the base model lays them out, each adapted W replaced by W + s·B·A.
    The model is left as it is (adapters separate, gradients untouched)."""
    with torch.no_grad():
        return merge_lora_state(model.state_dict(), lora_scaling(model))


def merge_lora_state(state: Mapping[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Fold the adapters of an adapter-model state dict into base-layout weights:
    `p.base_layer.weight` + `p.lora_{A,B}.default.weight` → `p.weight` = W + scaling·B·A (in
    float32, cast back to W's dtype), `p.base_layer.bias` → `p.bias`, other keys unchanged. A
    state dict without adapters comes back as it is."""
    merged: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, value in state.items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        if key.endswith(_BASE + "weight"):
            prefix = key[: -len(_BASE + "weight")]
            a, b = state[prefix + _LORA_A], state[prefix + _LORA_B]
            used.update((prefix + _LORA_A, prefix + _LORA_B))
            merged[prefix + ".weight"] = (value.float() + scaling * (b.float() @ a.float())).to(value.dtype)
        elif _BASE in key:
            merged[key.replace(_BASE, ".")] = value
        else:
            merged[key] = value
    stray = sorted(k for k in state if (".lora_A." in k or ".lora_B." in k) and k not in used)
    if stray:
        raise ValueError(f"adapter weights without a base layer to merge into (or of another adapter than {ADAPTER!r}): {stray[:3]}")
    return merged


class MergedWeights:
    """The policy the rollout workers serve: an adapter model seen through `merged_state_dict`.
    It offers the one method of a module that serving needs, `state_dict()`."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return merged_state_dict(self.model)


def served_weights(model: torch.nn.Module) -> Any:
    """What to read the workers' weights from: the model itself, or its merged view under LoRA."""
    return MergedWeights(model) if has_lora(model) else model


@contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Run the base model: every adapter branch off inside the block, restored on exit.

    PEFT's switch also sets requires_grad on the adapters, so the flags are put back as they were
    (an adapter frozen on purpose, e.g. in a frozen vision tower, stays frozen)."""
    layers = list(lora_layers(model).values())
    was_disabled = [layer.disable_adapters for layer in layers]
    grads = {n: p.requires_grad for n, p in adapter_parameters(model).items()}
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, off in zip(layers, was_disabled):
            layer.enable_adapters(not off)
        for n, p in adapter_parameters(model).items():
            p.requires_grad_(grads[n])


def output_row_tensors(linear: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors whose row i makes output i of `linear`: its weight and bias, and for a LoRA
    layer also each B (output i of the adapter branch is s·B[i]·A x). Scaling the same rows of
    all of them by c scales those rows of the merged weight (and bias) by c."""
    if not _is_lora_layer(linear):
        return [t for t in (linear.weight, linear.bias) if t is not None]
    base = linear.base_layer
    tensors = [t for t in (base.weight, base.bias) if t is not None]
    tensors.extend(b.weight for b in linear.lora_B.values())
    return tensors


def save_lora_settings(cfg: LoraConfig, folder: Path) -> Path:
    """`folder/lora.json`: the settings a checkpoint's `model.pt` needs to be merged (export)."""
    out = Path(folder) / LORA_SETTINGS
    data = {**cfg.model_dump(mode="json"), "adapter": ADAPTER, "scaling": cfg.alpha / cfg.r}
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def merged_checkpoint_state(state: Mapping[str, torch.Tensor], policy_dir: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights (`model.pt` or `ema.pt`) in the base model's layout, with the adapters
    merged when the run trained LoRA (`policy_dir/lora.json`). Anything else comes back as is:
    a full fine-tuning run, or the average of a LoRA run (already merged)."""
    has_adapters = any(".lora_A." in k or ".lora_B." in k for k in state)
    settings = Path(policy_dir) / LORA_SETTINGS
    if not has_adapters:
        return dict(state)
    if not settings.is_file():
        raise ValueError(f"the checkpoint holds LoRA adapters but {settings} is missing: the run's LoRA scale (alpha / r) is unknown")
    return merge_lora_state(state, float(json.loads(settings.read_text())["scaling"]))


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "lora_B")
