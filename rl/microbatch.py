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
computes shared prompts once (`rl.shared_prefix`), keeping the rows of one prompt together saves
computing it once per pass it is split over; `plan_microbatches` takes whichever of the two
orders computes fewer positions.

    plan:  list of row-index tensors, one per micro-batch, covering every row once
"""

from __future__ import annotations

import torch

from rl.batch import TrainBatch
from rollout.prompt_index import distinct_prompts


def plan_microbatches(batch: TrainBatch, max_tokens: int, share_prompts: bool = False) -> list[torch.Tensor]:
    """Row indices of each micro-batch: rows x their longest row ≤ `max_tokens`, except a row
    that alone is longer (a micro-batch of its own). `max_tokens` 0: the whole batch, in order.

    Rows go in longest first. With `share_prompts` (the learner computes each micro-batch's
    distinct prompts once) the rows of a prompt may instead stay together, groups ordered by their
    longest row: whichever of the two plans computes fewer positions. Short answers to long shared
    prompts favour the groups; long answers of varied length favour sorting row by row, whose
    padding is lower (`benchmarks/learner_memory.py`)."""
    if max_tokens <= 0:
        return [torch.arange(len(batch))]
    lengths = batch.attention_mask.sum(dim=1).tolist()
    by_length = pack(lengths, sorted(range(len(lengths)), key=lambda i: -lengths[i]), max_tokens)
    if not share_prompts:
        return by_length
    prompt_lens, group = _prompts(batch)
    by_prompt = pack(lengths, prompt_order(lengths, group), max_tokens)
    return min((by_prompt, by_length), key=lambda plan: shared_prefix_positions(plan, lengths, prompt_lens, group))


def pack(lengths: list[int], order: list[int], max_tokens: int) -> list[torch.Tensor]:
    """Rows in `order`, cut greedily into micro-batches of at most `max_tokens` padded tokens."""
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


def prompt_order(lengths: list[int], group: list[int]) -> list[int]:
    """Whole prompt groups, longest group first, each group's rows longest first."""
    longest: dict[int, int] = {}
    for g, length in zip(group, lengths):
        longest[g] = max(longest.get(g, 0), length)
    return sorted(range(len(lengths)), key=lambda i: (-longest[group[i]], group[i], -lengths[i]))


def _prompts(batch: TrainBatch) -> tuple[list[int], list[int]]:
    """Each row's prompt length (every token before its first trained one; the whole row when
    none is) and the index of its distinct prompt."""
    trained = batch.completion_mask > 0
    first = torch.where(trained.any(dim=1), trained.float().argmax(dim=1) + 1, batch.attention_mask.sum(dim=1))
    _, group = distinct_prompts([r[:p] for r, p in zip(batch.input_ids.tolist(), first.tolist())])
    return first.tolist(), group.tolist()


def shared_prefix_positions(plan: list[torch.Tensor], lengths: list[int], prompt_lens: list[int], group: list[int]) -> int:
    """Positions a plan computes when each micro-batch's distinct prompts go through the model
    once (`rl.shared_prefix`): per micro-batch, prompts x longest prompt + rows x longest rest."""
    total = 0
    for rows in plan:
        idx = rows.tolist()
        prompts = {group[i] for i in idx}
        total += len(prompts) * max(prompt_lens[i] for i in idx) + len(idx) * max(lengths[i] - prompt_lens[i] for i in idx)
    return total


def select_trimmed(batch: TrainBatch, rows: torch.Tensor) -> TrainBatch:
    """The rows, cut to their longest row: the columns after it are padding in every one of them."""
    in_order = len(rows) == len(batch) and torch.equal(rows, torch.arange(len(batch)))
    part = batch if in_order else batch.select(rows.to(batch.input_ids.device))  # the one-pass plan copies nothing
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
