"""The learner's side of ids the engine never samples (a VLM's image placeholder).

The engine sets those logits to -inf before sampling, so its log-probs are normalised over the
other ids; the learner must normalise over the same set or the importance ratio is off by the
probability mass of the masked ids. Only completion positions count, and a completion never
holds a masked id; positions whose target is one (image tokens inside the prompt) are masked out
of the loss, so their targets are clamped to a valid index.
"""

from __future__ import annotations

import torch

from policies.vlm import unsampled_ids


class SampledVocab:
    def __init__(self, model: torch.nn.Module):
        vocab = model.get_output_embeddings().weight.shape[0]
        self.banned = sorted(unsampled_ids(model))
        # the usual layout: placeholders appended after the text vocabulary, so the sampled
        # vocabulary is the prefix [0, size) and the chunked path can simply drop head rows
        self.size = self.banned[0] if self.banned and self.banned == list(range(self.banned[0], vocab)) else vocab
        self.is_prefix = not self.banned or self.size < vocab

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        if not self.banned:
            return targets
        return torch.where(torch.isin(targets, torch.tensor(self.banned, device=targets.device)), torch.zeros_like(targets), targets)

    def head_rows(self, weight: torch.Tensor) -> torch.Tensor:  # [V, D] -> [size, D]
        return weight[: self.size]

    def mask(self, logits: torch.Tensor) -> torch.Tensor:  # [..., V]
        if not self.banned:
            return logits
        # a large finite value, not -inf: the entropy's p * z would be 0 * -inf = nan
        return logits.index_fill(-1, torch.tensor(self.banned, device=logits.device), -1e9)
