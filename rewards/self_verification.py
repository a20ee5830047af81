"""`self_verification`: the policy ends its answer with a verdict on its own solution.

Format (the last thing in the completion, exactly once; case and spaces inside the tag ignored):

    <verify>correct</verify>      p = 1
    <verify>incorrect</verify>    p = 0
    <verify>p=0.8</verify>        p = 0.8     (decimal, 0 <= p <= 1)

With y = 1 if the checker passed the answer else 0:

    rule="brier" (default):  r = 1 - (p - y)^2
    rule="absolute":         r = 1 - |p - y|     (improper: named explicitly or not at all)

and r = 0 when the verdict is missing, malformed, out of range, not last, or repeated (hedging
with several tags earns nothing), and when the checker could not read the answer at all
(`verdict.parsed` false): failure is then certain, so predicting it is no judgement, and paying
for it would pay a policy to break its own answer and say so (`+0059<<verify>p=0.0</verify>`
is graded as the unreadable `+0059<`; a run that credited verdict tokens apart learned exactly that).

Why Brier. If the answer is right with probability q, the expected Brier reward of a stated p is
1 - q(1-p)^2 - (1-q)p^2, which peaks at p = q: the rule is strictly proper, so the best a policy
can do is state its true chance of being right. The absolute rule's expectation is
1 - q + p(2q - 1), linear in p: it pays p = 1 whenever q > 1/2 and p = 0 whenever q < 1/2 (and
is flat at q = 1/2), so at no pass rate does it make the honest p = q the best answer. It is
kept only for comparison runs.

`calibration_metrics` summarises a batch (accuracy of the verdict at 0.5, Brier score, AUROC) for
logging, whichever rule pays the reward.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Sequence

import numpy as np

from envs.base import SELF_VERDICT_TAG, Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode

_PROB = re.compile(r"p\s*=\s*(\d+(?:\.\d*)?|\.\d+)")


def parse_self_verdict(text: str) -> float | None:
    """The stated probability of being correct, or None when absent or malformed."""
    tags = list(SELF_VERDICT_TAG.finditer(text))
    if len(tags) != 1 or text[tags[0].end() :].strip():
        return None
    body = tags[0].group(1).strip().lower()
    if body == "correct":
        return 1.0
    if body == "incorrect":
        return 0.0
    m = _PROB.fullmatch(body)
    if not m:
        return None
    p = float(m.group(1))
    return p if 0.0 <= p <= 1.0 else None


@register_reward("self_verification")
def self_verification(
    episode: Episode, task: Task, verdict: Verdict, rule: Literal["brier", "absolute"] = "brier"
) -> float:
    """1 - (p - y)^2 (or the improper 1 - |p - y| with rule="absolute") for the stated p; 0 without a
    valid verdict or a readable answer."""
    if rule not in ("absolute", "brier"):
        raise ValueError(f"rule must be 'absolute' or 'brier', got {rule!r}")
    p = parse_self_verdict(episode.completion_text)
    if p is None or not verdict.parsed:
        return 0.0
    gap = abs(p - (1.0 if verdict.passed else 0.0))
    return 1.0 - (gap if rule == "absolute" else gap * gap)


def calibration_metrics(ps: Sequence[float | None], ys: Sequence[bool]) -> dict[str, float]:
    """Calibration of the self-verdicts `ps` (None = missing) against the checker's results `ys`.

    - `self_verify/accuracy`: fraction of all samples with (p >= 0.5) == y; a missing verdict counts
      as wrong (nan for an empty batch);
    - `self_verify/brier`: mean (p - y)^2 over the parsed verdicts (lower is better);
    - `self_verify/auroc`: probability that a passed answer got a higher p than a failed one (ties
      count 1/2) over the parsed verdicts; nan unless both classes are present;
    - `self_verify/parsed`: fraction of samples with a valid verdict.
    Brier and AUROC are nan when nothing parsed.
    """
    if len(ps) != len(ys):
        raise ValueError(f"ps ({len(ps)}) and ys ({len(ys)}) differ in size")
    n = len(ps)
    pairs = [(float(p), bool(y)) for p, y in zip(ps, ys) if p is not None]
    for p, _ in pairs:
        if not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise ValueError(f"self-verdict probabilities must be finite and in [0, 1], got {p!r}")
    nan = math.nan
    if not pairs:
        return {"self_verify/accuracy": 0.0 if n else nan, "self_verify/brier": nan, "self_verify/auroc": nan, "self_verify/parsed": 0.0 if n else nan}
    p = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs])
    accuracy = float(np.sum((p >= 0.5) == y)) / n
    brier = float(np.mean((p - y) ** 2))
    return {"self_verify/accuracy": accuracy, "self_verify/brier": brier, "self_verify/auroc": _auroc(p, y), "self_verify/parsed": len(pairs) / n}


def _auroc(p: np.ndarray, y: np.ndarray) -> float:
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Mann-Whitney U with mid-ranks for ties: O(n log n) instead of comparing every pair
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mid_rank[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
