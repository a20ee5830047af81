"""Episodes → padded learner tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rollout.episode import Episode


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [B, L] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [B, L]
    completion_mask: torch.Tensor  # [B, L-1] 1 where position t predicts a completion token
    old_logprobs: torch.Tensor  # [B, L-1] sampler log-probs aligned with completion_mask
    advantages: torch.Tensor  # [B]
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


def build_batch(episodes: list[Episode], advantages: list[float], pad_token_id: int, image_processor=None) -> TrainBatch:
    """Padded tensors; episodes with images also get their pixel values (through `image_processor`)."""
    seqs = [e.prompt_ids + e.completion_ids for e in episodes]
    width = max(len(s) for s in seqs)
    n = len(seqs)
    ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    cmask = torch.zeros((n, width - 1), dtype=torch.float32)
    old = torch.zeros((n, width - 1), dtype=torch.float32)
    for i, (e, s) in enumerate(zip(episodes, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        p, c = len(e.prompt_ids), len(e.completion_ids)
        # logits at position t predict token t+1: completion token j sits at p+j, predicted at p+j-1
        cmask[i, p - 1 : p - 1 + c] = 1.0
        old[i, p - 1 : p - 1 + c] = torch.tensor(e.completion_logprobs, dtype=torch.float32)
    return TrainBatch(ids, attn, cmask, old, torch.tensor(advantages, dtype=torch.float32), _pixel_values(episodes, image_processor))


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
