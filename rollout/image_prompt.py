"""A task with images → a multimodal prompt (vLLM's format) through the policy's own processor.

The processor puts one image placeholder per image before the question and expands each to
the model's number of image tokens, so `prompt_token_ids` are exactly the ids the learner later
scores, image tokens included.
"""

from __future__ import annotations

from envs.base import Task
from envs.vision.render import decode_png


def encode_image_prompt(processor, task: Task) -> dict:
    if processor is None:
        raise ValueError(f"task {task.id} has images, but the policy has no image processor: use a vision-language policy (policy.arch: llava)")
    images = [decode_png(b) for b in task.images]
    text = processor.image_token * len(images) + task.prompt
    ids = processor(text=[text], images=images, add_special_tokens=False)["input_ids"][0]
    return {"prompt_token_ids": list(ids), "multi_modal_data": {"image": images[0] if len(images) == 1 else images}}
