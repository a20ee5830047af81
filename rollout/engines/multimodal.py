"""Multimodal prompts in vLLM's format, turned into the inputs of a transformers VLM.

A prompt is either a list of token ids (text only) or, as vLLM takes it,

    {"prompt_token_ids": [...], "multi_modal_data": {"image": PIL.Image | [PIL.Image, ...]}}

The ids hold the image placeholder token either once per image (vLLM expands it itself) or
already expanded to one token per image feature, as the model's processor writes it; both are
accepted here, so the same prompts can go to a vLLM engine later.
"""

from __future__ import annotations

from typing import Any

import torch

Prompt = list[int] | dict[str, Any]


def prompt_parts(prompt: Prompt) -> tuple[list[int], list]:
    """(token ids, images) of one prompt."""
    if isinstance(prompt, dict):
        images = (prompt.get("multi_modal_data") or {}).get("image", [])
        return list(prompt["prompt_token_ids"]), list(images) if isinstance(images, (list, tuple)) else [images]
    return list(prompt), []


def expand_placeholders(ids: list[int], n_images: int, image_token_id: int, tokens_per_image: int) -> list[int]:
    """Ids with every image placeholder repeated `tokens_per_image` times, unless already expanded."""
    count = sum(t == image_token_id for t in ids)
    if count == n_images * tokens_per_image:
        return ids
    if count != n_images:
        raise ValueError(
            f"prompt has {count} image tokens for {n_images} image(s): expected {n_images} or {n_images * tokens_per_image}"
        )
    out: list[int] = []
    for t in ids:
        out.extend([t] * tokens_per_image if t == image_token_id else [t])
    return out


class ImageInputs:
    """What a VLM needs besides the ids: the image processor and the placeholder layout."""

    def __init__(self, image_processor, image_token_id: int, tokens_per_image: int):
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.tokens_per_image = tokens_per_image

    def prepare(self, prompts: list[Prompt]) -> tuple[list[list[int]], torch.Tensor | None]:
        """Expanded ids per prompt and the pixel values of all images in prompt order ([N_img, C, H, W])."""
        ids, images = [], []
        for p in prompts:
            toks, imgs = prompt_parts(p)
            ids.append(expand_placeholders(toks, len(imgs), self.image_token_id, self.tokens_per_image) if imgs else toks)
            images.extend(imgs)
        if not images:
            return ids, None
        return ids, self.image_processor(images, return_tensors="pt")["pixel_values"]
