"""Vision-language policies: LLaVA-style (a SigLIP vision tower + an MLP projector + the tiny
causal LM), built from configs with random init, or loaded from a local VLM folder.

The vision tower reads a 48x48 image (by default) as 6x6 patches; every patch becomes one
embedding in the language model's input, at the place of one `<image>` token. The model's own
processor (`LlavaProcessor`: SigLIP's PIL/numpy image processor + the tokenizer) turns the
single `<image>` placeholder of a prompt into that many tokens and the image into
`pixel_values`. The PIL image processor is used on purpose: the fast one needs torchvision,
which the vLLM CPU wheel needs absent.

Only the language model's attention uses the QK-probe attention (QK-Clip acts on the LM's
heads); the vision tower keeps plain SDPA.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForImageTextToText,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SiglipVisionConfig,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from policies.model import text_config_kwargs
from policies.qk_probe import QK_PROBE_ATTENTION, register_qk_probe
from policies.spec import PolicyConfig

IMAGE_TOKEN = "<image>"
ATTENTION = {"text_config": QK_PROBE_ATTENTION, "vision_config": "sdpa", "": "sdpa"}


def is_vlm_folder(path: str | Path) -> bool:
    """A saved model whose config has a vision tower."""
    cfg = Path(path) / "config.json"
    return cfg.is_file() and "vision_config" in json.loads(cfg.read_text())


def add_image_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The text tokenizer plus `<image>` as a special token appended after the vocabulary, so
    every existing id keeps its meaning (a text checkpoint's embeddings still line up)."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def build_image_processor(image_size: int) -> SiglipImageProcessorPil:
    """SigLIP resizing, with white mapped to 0 (mean 1, std 0.5; colours land in [-2, 0]).

    The rendered scenes are mostly white background. SigLIP's own normalisation (mean 0.5) maps
    white to +1, so every background patch embeds to one large shared vector (on the default
    tower: norm 7.5 shared by all 36 patches against 3.3 that depends on the image) that swamps
    the position embeddings; the policy then cannot tell where or how many shapes there are and
    answers from the question alone. With white at 0 a small SFT learns to count (level-1 counting
    26-42% -> 74-88% after 300 steps, 3 seeds).
    """
    return SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[1.0, 1.0, 1.0], image_std=[0.5, 0.5, 0.5]
    )


def build_processor(tokenizer: PreTrainedTokenizerBase, image_size: int, patch_size: int) -> LlavaProcessor:
    return LlavaProcessor(
        image_processor=build_image_processor(image_size),
        tokenizer=add_image_token(tokenizer),
        patch_size=patch_size,
        vision_feature_select_strategy="full",  # SigLIP has no CLS token to drop
        num_additional_image_tokens=0,
        image_token=IMAGE_TOKEN,
    )


def build_vlm(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised LLaVA of `cfg` (text part sized like the text policy), deterministic per seed."""
    register_qk_probe()
    tokenizer = add_image_token(tokenizer)
    v = cfg.vision
    vision = SiglipVisionConfig(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_layers,
        num_attention_heads=v.num_heads,
        image_size=v.image_size,
        patch_size=v.patch_size,
    )
    num_patches = (v.image_size // v.patch_size) ** 2
    if cfg.max_position_embeddings <= num_patches:
        raise ValueError(
            f"policy.max_position_embeddings ({cfg.max_position_embeddings}) must exceed the {num_patches} image tokens of one image"
        )
    text = LlamaConfig(**text_config_kwargs(cfg, tokenizer))
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=cfg.tie_embeddings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration._from_config(config, attn_implementation=ATTENTION)
    return model.float()


def load_vlm(path: str | Path) -> PreTrainedModel:
    """Any local image-text-to-text folder (`from_pretrained`); the LM gets the QK-probe attention."""
    from transformers.utils import logging as hf_logging

    register_qk_probe()
    hf_logging.disable_progress_bar()
    return AutoModelForImageTextToText.from_pretrained(str(path), attn_implementation=ATTENTION, dtype=torch.float32)


def load_processor(path: str | Path):
    """The processor saved in a VLM folder, with its PIL image processor (no torchvision)."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(str(path), backend="pil")
    proc.tokenizer.padding_side = "left"
    return proc


def processor_for(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase):
    """The processor of the policy `cfg` names: the folder's own, or one built for `cfg.vision`;
    None for a text-only policy."""
    if cfg.path and is_vlm_folder(cfg.path):
        return load_processor(cfg.path)
    if cfg.arch == "llava" and not cfg.path:
        return build_processor(tokenizer, cfg.vision.image_size, cfg.vision.patch_size)
    return None


def tokens_per_image(config) -> int:
    """Image features (= placeholder tokens) one image becomes in a LLaVA with a ViT tower."""
    v = config.vision_config
    return (v.image_size // v.patch_size) ** 2


def pixel_values(image_processor, images: list[bytes]) -> torch.Tensor:
    """[N, C, H, W] model inputs of encoded images (PNG/JPEG bytes), in order."""
    import io

    from PIL import Image

    return image_processor([Image.open(io.BytesIO(b)).convert("RGB") for b in images], return_tensors="pt")["pixel_values"]


def freeze_vision_tower(model: torch.nn.Module) -> None:
    """Stop gradients into the vision tower (the projector and the LM still train). The learner's
    backward pass then ends at the projector, and the image features stay the ones the SFT
    bootstrap taught the LM to read."""
    towers = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "vision_tower"]
    if not towers:
        raise ValueError("optimizer.freeze_vision_tower: the policy has no vision tower (a text-only model); set it to false")
    for tower in towers:
        tower.requires_grad_(False)


def unsampled_ids(model) -> list[int]:
    """Token ids a policy must never generate: a VLM's image placeholder (in a completion it
    would claim an image feature that does not exist). The engine masks them before sampling and
    the learner normalises over the same vocabulary, so sampler and learner log-probs agree."""
    image = getattr(model.config, "image_token_id", None)
    return [] if image is None else [int(image)]
