"""Chat prompts: a task's text rendered with the tokenizer's own chat template.

With `policy.chat_template`, the policy sees each task as a conversation (an optional system
message, then the task as the user's message) rendered with `add_generation_prompt=True`, exactly
as `tokenizer.apply_chat_template` renders it; the completion is the assistant's reply and ends
at the tokenizer's EOS (`<|im_end|>` for ChatML templates).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def has_chat_template(folder: str | Path) -> bool:
    """Whether the tokenizer saved in `folder` carries a chat template (read from its files, no load)."""
    import json

    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def chat_messages(text: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*head, {"role": "user", "content": text}]


def chat_renderer(tokenizer, system_prompt: str | None = None) -> Callable[[str], str]:
    """`text -> prompt string` for `tokenizer`'s chat template. The string tokenises (special
    tokens included, `add_special_tokens=False`) to the ids `apply_chat_template` would give."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("policy.chat_template: the policy's tokenizer has no chat template; set it to false or use a tokenizer that has one")

    def render(text: str) -> str:
        return tokenizer.apply_chat_template(chat_messages(text, system_prompt), add_generation_prompt=True, tokenize=False)

    return render
