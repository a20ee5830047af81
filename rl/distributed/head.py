"""The output head's full weight on an FSDP2-sharded policy, for the chunked log-probs.

The chunked log-probs (`kernels.logprob`) take the final hidden states and the head's weight
instead of the model's [tokens, vocab] logits. On a sharded model the weight is a DTensor shard
except inside the root module's forward, where FSDP2 gathers the root's parameters (the
embedding, the final norm, the head). So the learner runs the root's own forward with the head
replaced by a pass-through: the forward returns the hidden states where it would return logits,
and the pass-through keeps the gathered weight it was handed. FSDP2 does not reshard the root
after its forward (it would gather it again at once for the backward), so that weight stays
whole until the backward, whose gradient FSDP2 reduce-scatters into the head's shard as usual.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class PassThroughHead(torch.nn.Module):
    """Returns its input and records `head.weight` as it is during the forward that calls it."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        # not registered as a submodule: the model's parameter tree must not change
        object.__setattr__(self, "head", head)
        self.weight: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # a plain attribute: assigning a Parameter the usual way would register it in the model
        object.__setattr__(self, "weight", self.head.weight)
        return hidden


@contextmanager
def head_passed_through(model) -> Iterator[PassThroughHead]:
    """Within the block the model's forward returns hidden states as `.logits`; the yielded
    object's `weight` is the head's weight that the last forward saw."""
    head = model.get_output_embeddings()
    through = PassThroughHead(head)
    model.set_output_embeddings(through)
    try:
        yield through
    finally:
        model.set_output_embeddings(head)
    if through.weight is None:
        raise RuntimeError("the model's forward never called its output head: cannot take the chunked log-prob path")
