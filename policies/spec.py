"""The policy's schema: the `policy` section of an experiment (`rl.config` embeds it).

It lives with the code that builds the policy, so that `policies` and the rollout workers, which
receive a `PolicyConfig` and build the model it describes, need nothing from `rl`
(DESIGN.md, Packages: dependencies point down the table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PolicySection(BaseModel):
    """A section of the experiment schema: the settings of `rl.config.Section`, which this package
    may not import (tests/test_config.py checks the two agree)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VisionTowerConfig(PolicySection):
    image_size: int = Field(48, ge=8, description="Side of the (square) input image in pixels; images are resized to it by the processor.")
    patch_size: int = Field(8, ge=1, description="Side of a patch; (image_size / patch_size)^2 image tokens per image go into the LM.")
    hidden_size: int = Field(64, ge=8, description="Vision tower width.")
    num_layers: int = Field(2, ge=1, description="Vision tower blocks.")
    num_heads: int = Field(2, ge=1, description="Vision tower attention heads.")
    intermediate_size: int = Field(128, ge=8, description="Vision tower MLP width.")

    @model_validator(mode="after")
    def _patches_tile(self) -> "VisionTowerConfig":
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        return self


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraConfig(PolicySection):
    """Low-rank adapters on the policy's hidden linear layers for RL (`policies/lora.py`)."""

    r: int = Field(8, ge=1, description="Adapter rank: each adapted weight W (out x in) gains B (out x r) @ A (r x in).")
    alpha: float = Field(16.0, gt=0, description="Adapter scale numerator: the served weight is W + (alpha / r) * B @ A.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS),
        min_length=1,
        description="Names (last path component) of the linear layers that get adapters, e.g. q_proj; every name must match a linear layer of the model. Embeddings and the output head stay frozen and cannot be targets.",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter branch's input during learner passes (0: off, and learner log-probs then match the sampler's).")


class PolicyConfig(PolicySection):
    path: str | None = Field(
        None,
        description="Local folder of a Hugging Face causal LM (config + weights + tokenizer). Empty: build `arch` from the fields below with random init.",
    )
    arch: Literal["llama", "qwen2", "llava"] = Field(
        "llama", description="Architecture of a model built from config; `llava`: a SigLIP vision tower + projector + a Llama LM sized by the fields below (vision envs)."
    )
    hidden_size: int = Field(128, ge=8, description="Model width.")
    num_layers: int = Field(4, ge=1, description="Transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention (query) heads.")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads (GQA); empty: equal to num_heads.")
    head_dim: int = Field(32, ge=32, description="Per-head width; at least 32 so vLLM's CPU backend can serve the model.")
    intermediate_size: int = Field(512, ge=8, description="MLP width.")
    max_position_embeddings: int = Field(
        256, ge=16, description="Longest prompt + completion, in tokens. With policy.path and the key not set: the checkpoint's own `max_position_embeddings`."
    )
    tie_embeddings: bool = Field(False, description="Share the input embedding and the output head.")
    tokenizer: str | None = Field(
        None, description="Tokenizer file/folder; empty: the model folder's, or the built-in character tokenizer."
    )
    chat_template: bool = Field(
        False,
        description="Render each task as a chat: the tokenizer's chat template applied to the task (a user message, after `env.system_prompt` if set) with `add_generation_prompt=True`; completions are the assistant's reply and end at the tokenizer's EOS. For a policy.path (or policy.tokenizer) whose tokenizer has a chat template; single-turn envs only (not swarm, vision).",
    )
    vision: VisionTowerConfig = Field(default_factory=VisionTowerConfig, description="The vision tower of a `llava` policy built from config (ignored otherwise).")
    lora: LoraConfig | None = Field(
        None,
        description="Train low-rank adapters instead of the whole policy during RL (needs the `lora` extra: `pip install peft`). Only the adapters train (Muon on each A and B); the KL reference is the same model with its adapters off; rollout workers get the merged weights W + (alpha / r) * B @ A; QK-Clip scales a head's rows of the base q/k weight and of B alike (so with algorithm.kl_coef > 0 set optimizer.qk_clip: false); train.eval_ema averages the merged weights. Checkpoints hold the base and the adapters; `policy/lora.json` in the run lets export merge them. The SFT bootstrap stays a full fine-tune. Empty: full fine-tuning.",
    )

    @model_validator(mode="before")
    @classmethod
    def _context_from_checkpoint(cls, data: Any) -> Any:
        """A checkpoint's own context length unless the YAML sets one: the built-in 256 must not cap a loaded model."""
        if isinstance(data, dict) and data.get("path") and "max_position_embeddings" not in data:
            config = Path(str(data["path"])) / "config.json"
            if config.is_file():
                try:
                    hf = json.loads(config.read_text())
                except ValueError:
                    return data  # from_pretrained reports a broken folder better than we could here
                n = hf.get("max_position_embeddings") or (hf.get("text_config") or {}).get("max_position_embeddings")
                if isinstance(n, int):
                    data = {**data, "max_position_embeddings": n}
        return data

    @model_validator(mode="after")
    def _heads_divide(self) -> "PolicyConfig":
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({kv})")
        return self
