"""Policy construction: a tiny causal LM built from a transformers config, or a local HF folder.

Models built here use the QK-probe attention (`policies.qk_probe`): plain SDPA, plus the
per-head max pre-softmax logit when the learner asks for it (QK-Clip needs it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config

from policies.qk_probe import QK_PROBE_ATTENTION, register_qk_probe
from policies.spec import PolicyConfig
from policies.tokenizer import load_tokenizer

_CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config}


def text_config_kwargs(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase) -> dict:
    """The transformers config fields of the causal LM `cfg` describes (also the text half of a VLM)."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_model(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised model of `cfg.arch` sized by `cfg` (deterministic per seed)."""
    if cfg.arch == "llava":
        from policies.vlm import build_vlm

        return build_vlm(cfg, tokenizer, seed)
    register_qk_probe()
    config = _CONFIGS[cfg.arch](**text_config_kwargs(cfg, tokenizer), attn_implementation=QK_PROBE_ATTENTION)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=QK_PROBE_ATTENTION)
    return model.float()


def load_model(path: str | Path) -> PreTrainedModel:
    """Any local HF causal-LM or VLM folder (`from_pretrained`), with the QK-probe attention."""
    from transformers.utils import logging as hf_logging

    from policies.vlm import is_vlm_folder, load_vlm

    if is_vlm_folder(path):
        return load_vlm(path)
    register_qk_probe()
    hf_logging.disable_progress_bar()  # a per-load bar in every worker log says nothing useful
    model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=QK_PROBE_ATTENTION, dtype=torch.float32)
    return model


def build_policy(cfg: PolicyConfig, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer the experiment asks for."""
    if cfg.path:
        path = Path(cfg.path)
        if not path.is_dir():
            raise FileNotFoundError(f"policy.path {cfg.path!r} is not a folder")
        tokenizer = load_tokenizer(cfg.tokenizer or path)
        return load_model(path), tokenizer
    tokenizer = load_tokenizer(cfg.tokenizer)
    return build_model(cfg, tokenizer, seed), tokenizer


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
