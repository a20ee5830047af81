"""Micro-batches: one minibatch's rows split under a padded-token budget, gradients accumulated.

A minibatch is one optimizer step. When its activations do not fit, the learner runs it as
several forward/backward passes over subsets of its rows and sums their gradients before the
step. The loss of each pass is scaled so that the sum is the minibatch's loss exactly:

    token_mean               Σ_micro (Σ_tokens ℓ) / T_micro · (T_micro / T)   = Σ ℓ / T
    seq_mean_token_mean      Σ_micro mean_rows(...)         · (B_micro / B)   = mean over B rows
    seq_mean_token_sum_norm  the same, per row

with T the minibatch's trained tokens and B its rows, so the update does not depend on the
budget (`tests/test_microbatch.py`).

What a pass costs is rows x its longest row (right padding), so rows are sorted by length
before they are cut: similar lengths share a pass and little of it is padding. When the learner
computes shared prompts once (`rl.shared_prefix`) the rows of one prompt stay together (groups
ordered by their longest row), since a prompt split over two passes is computed twice.

    plan:  list of row-index tensors, one per micro-batch, covering every row once
"""

from __future__ import annotations

import torch

from rl.batch import TrainBatch
from rollout.prompt_index import distinct_prompts


def plan_microbatches(batch: TrainBatch, max_tokens: int, keep_prompts_together: bool = False) -> list[torch.Tensor]:
    """Row indices of each micro-batch: rows x their longest row ≤ `max_tokens`, except a row
    that alone is longer (a micro-batch of its own). `max_tokens` 0: the whole batch, in order."""
    n = len(batch)
    if max_tokens <= 0:
        return [torch.arange(n)]
    lengths = batch.attention_mask.sum(dim=1).tolist()
    order = _length_order(batch, lengths, keep_prompts_together)
    plan: list[list[int]] = []
    widest = 0
    for i in order:
        w = max(widest, lengths[i])
        if plan and (len(plan[-1]) + 1) * w <= max_tokens:
            plan[-1].append(i)
            widest = w
        else:
            plan.append([i])
            widest = lengths[i]
    return [torch.tensor(rows, dtype=torch.long) for rows in plan]


def _length_order(batch: TrainBatch, lengths: list[int], keep_prompts_together: bool) -> list[int]:
    """Longest rows first; with `keep_prompts_together`, whole prompt groups, longest group first."""
    if not keep_prompts_together:
        return sorted(range(len(lengths)), key=lambda i: -lengths[i])
    trained = batch.completion_mask > 0
    # a row's prompt: every token before its first trained one (the whole row when none is)
    first = torch.where(trained.any(dim=1), trained.float().argmax(dim=1) + 1, batch.attention_mask.sum(dim=1))
    _, group = distinct_prompts([r[:p] for r, p in zip(batch.input_ids.tolist(), first.tolist())])
    group = group.tolist()
    longest: dict[int, int] = {}
    for g, length in zip(group, lengths):
        longest[g] = max(longest.get(g, 0), length)
    return sorted(range(len(lengths)), key=lambda i: (-longest[group[i]], group[i], -lengths[i]))


def select_trimmed(batch: TrainBatch, rows: torch.Tensor) -> TrainBatch:
    """The rows, cut to their longest row: the columns after it are padding in every one of them."""
    part = batch.select(rows.to(batch.input_ids.device))
    width = int(part.attention_mask.sum(dim=1).max())
    if width == part.input_ids.shape[1]:
        return part
    adv = part.advantages if part.advantages.dim() == 1 else part.advantages[:, : width - 1]
    return TrainBatch(
        part.input_ids[:, :width], part.attention_mask[:, :width], part.completion_mask[:, : width - 1], part.old_logprobs[:, : width - 1], adv, part.pixel_values
    )


def loss_share(part: TrainBatch, whole: TrainBatch, agg_mode: str) -> float:
    """The factor that turns `part`'s aggregated loss into its share of `whole`'s."""
    if agg_mode == "token_mean":
        return float(part.completion_mask.sum()) / max(float(whole.completion_mask.sum()), 1.0)
    return len(part) / len(whole)


def padding_fraction(batch: TrainBatch, plan: list[torch.Tensor]) -> float:
    """Share of the positions computed (rows x longest row, per micro-batch) that are padding."""
    lengths = batch.attention_mask.sum(dim=1)
    computed = sum(len(rows) * int(lengths[rows].max()) for rows in plan)
    return 1.0 - float(lengths.sum()) / max(computed, 1)


# Loss-function metrics that are aggregated like the loss itself; `_min`/`_max` keys pool by min/max,
# every other metric is a mean over trained tokens.
LOSS_LIKE_METRICS = frozenset({"loss", "pg_loss", "kl_ref"})


class MicroMetrics:
    """Pools the metrics of a minibatch's micro-batches into the values one pass would report."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.extremes: dict[str, float] = {}
        self.placeholders: dict[str, float] = {}  # what a micro-batch without trained tokens reports

    def add(self, metrics: dict[str, float], loss_weight: float, token_weight: float, has_tokens: bool) -> None:
        for k, v in metrics.items():
            v = float(v)
            if k.endswith("_min") or k.endswith("_max"):
                if not has_tokens:
                    self.placeholders.setdefault(k, v)
                    continue
                pick = min if k.endswith("_min") else max
                self.extremes[k] = pick(self.extremes.get(k, v), v)
                continue
            w = loss_weight if k in LOSS_LIKE_METRICS else token_weight
            self.sums[k] = self.sums.get(k, 0.0) + w * v

    def result(self) -> dict[str, float]:
        return {**self.placeholders, **self.extremes, **self.sums}
