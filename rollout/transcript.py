"""Token-level transcripts of multi-turn episodes (PARL, tool envs): what the policy sees before its next turn."""

from __future__ import annotations

from dataclasses import replace

from rollout.engines.base import SamplingParams
from rollout.episode import Episode, Turn


def transcript_ids(episode: Episode) -> list[int]:
    """Prompt then every turn's tokens, in order (the learner sees the same sequence)."""
    return episode.prompt_ids + [i for t in episode.turns for i in t.token_ids]


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def observation_turn(tokenizer, text: str, stage: int) -> Turn:
    return Turn(role="tool", text=text, token_ids=encode(tokenizer, text), trainable=False, stage=stage)


def line_params(tokenizer, params: SamplingParams, temperature: float | None = None) -> SamplingParams:
    """`params` that stop at the end of a line: one turn is one line."""
    newline = tokenizer.convert_tokens_to_ids("\n")
    return replace(
        params,
        stop_token_ids=tuple(sorted({*params.stop_token_ids, newline})),
        temperature=params.temperature if temperature is None else temperature,
    )
