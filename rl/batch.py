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

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: torch.Tensor | slice) -> "TrainBatch":
        return TrainBatch(
            self.input_ids[idx], self.attention_mask[idx], self.completion_mask[idx], self.old_logprobs[idx], self.advantages[idx]
        )

    def to(self, device: torch.device | str) -> "TrainBatch":
        return TrainBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.completion_mask, self.old_logprobs, self.advantages)))

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())


def build_batch(episodes: list[Episode], advantages: list[float], pad_token_id: int) -> TrainBatch:
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
    return TrainBatch(ids, attn, cmask, old, torch.tensor(advantages, dtype=torch.float32))
