"""Episodes → padded learner tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rollout.episode import Episode


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [B, L] prompt + all turns (completion, observations, ...), right-padded
    attention_mask: torch.Tensor  # [B, L]
    completion_mask: torch.Tensor  # [B, L-1] 1 where position t predicts a token of a trainable turn
    old_logprobs: torch.Tensor  # [B, L-1] sampler log-probs aligned with completion_mask
    advantages: torch.Tensor  # [B], or [B, L-1] aligned with completion_mask when tokens differ in credit
    pixel_values: torch.Tensor | None = None  # [B, images per episode, C, H, W] for a VLM

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: torch.Tensor | slice) -> "TrainBatch":
        pv = None if self.pixel_values is None else self.pixel_values[idx]
        return TrainBatch(
            self.input_ids[idx], self.attention_mask[idx], self.completion_mask[idx], self.old_logprobs[idx], self.advantages[idx], pv
        )

    def to(self, device: torch.device | str) -> "TrainBatch":
        pv = None if self.pixel_values is None else self.pixel_values.to(device)
        return TrainBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.completion_mask, self.old_logprobs, self.advantages)), pv)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Forward inputs besides ids and mask: the images of a VLM batch, flattened in row order."""
        return {} if self.pixel_values is None else {"pixel_values": self.pixel_values.flatten(0, 1)}

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())


def build_batch(
    episodes: list[Episode], advantages: list[float], pad_token_id: int, image_processor=None, token_advantages: list[list[float] | None] | None = None
) -> TrainBatch:
    """Each row is the prompt then every turn's tokens in order (multi-turn episodes keep their
    tool observations in the sequence); the loss mask covers only the tokens of trainable turns.
    A single-turn episode is prompt + its one completion. Episodes with images also get their
    pixel values (through `image_processor`). `token_advantages[i]`, where given, holds one
    advantage per trainable token of episode i (in order), in place of `advantages[i]`: the batch's
    advantages are then per position."""
    seqs = [e.prompt_ids + [i for t in e.turns for i in t.token_ids] for e in episodes]
    width = max(len(s) for s in seqs)
    n = len(seqs)
    ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    cmask = torch.zeros((n, width - 1), dtype=torch.float32)
    old = torch.zeros((n, width - 1), dtype=torch.float32)
    per_token = token_advantages is not None and any(a is not None for a in token_advantages)
    adv = torch.tensor(advantages, dtype=torch.float32)
    if per_token:
        adv = adv[:, None].repeat(1, width - 1)
    for i, (e, s) in enumerate(zip(episodes, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        pos, k = len(e.prompt_ids), 0
        mine = token_advantages[i] if per_token else None
        if mine is not None and len(mine) != sum(len(t.token_ids) for t in e.turns if t.trainable):
            raise ValueError(f"episode {i}: {len(mine)} token advantages for {sum(len(t.token_ids) for t in e.turns if t.trainable)} trainable tokens")
        for t in e.turns:
            c = len(t.token_ids)
            if t.trainable and c:
                # logits at position t predict token t+1: the turn's token j sits at pos+j, predicted at pos+j-1
                cmask[i, pos - 1 : pos - 1 + c] = 1.0
                old[i, pos - 1 : pos - 1 + c] = torch.tensor(t.logprobs, dtype=torch.float32)
                if mine is not None:
                    adv[i, pos - 1 : pos - 1 + c] = torch.tensor(mine[k : k + c], dtype=torch.float32)
                k += c
            pos += c
    return TrainBatch(ids, attn, cmask, old, adv, _pixel_values(episodes, image_processor))


def _pixel_values(episodes: list[Episode], image_processor) -> torch.Tensor | None:
    counts = {len(e.images) for e in episodes}
    if counts == {0}:
        return None
    if len(counts) > 1:
        raise ValueError(f"a batch mixes episodes with different numbers of images ({sorted(counts)}); batch them separately")
    if image_processor is None:
        raise ValueError("episodes carry images but build_batch got no image_processor")
    from policies.vlm import pixel_values

    flat = pixel_values(image_processor, [b for e in episodes for b in e.images])  # [B*k, C, H, W]
    return flat.view(len(episodes), counts.pop(), *flat.shape[1:])
