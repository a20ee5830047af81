"""Self-verification: the policy ends its answer with a verdict on its own solution.

Format (the last thing in the completion, once):
    <verify>correct</verify>      p = 1
    <verify>incorrect</verify>    p = 0
    <verify>p=0.8</verify>        p = 0.8 (0 <= p <= 1)
Reward: 1 - |p - y| with y = 1 if the checker passed the answer, else 0. A missing, repeated
or malformed verdict scores 0, so hedging with several tags earns nothing. The expected reward
of a stated p is maximised by the true pass probability only in the |·| sense (median), so we
also log proper scoring (Brier) and ranking (AUROC) calibration metrics per batch.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from envs.base import Task, Verdict
from rewards.registry import register_reward
from rollout.episode import Episode

_TAG = re.compile(r"<verify>(.*?)</verify>", re.S)
_PROB = re.compile(r"^\s*p\s*=\s*([01](?:\.\d+)?|\.\d+)\s*$")


def parse_self_verdict(text: str) -> float | None:
    """The stated probability of being correct, or None when absent or malformed."""
    tags = list(_TAG.finditer(text))
    if len(tags) != 1 or text[tags[0].end() :].strip():
        return None
    body = tags[0].group(1).strip().lower()
    if body == "correct":
        return 1.0
    if body == "incorrect":
        return 0.0
    m = _PROB.match(body)
    if not m:
        return None
    p = float(m.group(1))
    return p if 0.0 <= p <= 1.0 else None


@register_reward("self_verification")
def self_verification(episode: Episode, task: Task, verdict: Verdict) -> float:
    p = parse_self_verdict(episode.completion_text)
    if p is None:
        return 0.0
    return 1.0 - abs(p - (1.0 if verdict.passed else 0.0))


def calibration_metrics(ps: Sequence[float | None], ys: Sequence[bool]) -> dict[str, float]:
    """Accuracy of the self-verdict at 0.5, Brier score and AUROC over the parsed verdicts.

    Unparsed verdicts count as wrong for accuracy and are left out of Brier/AUROC (which are nan
    when nothing parsed; AUROC is nan when only one class is present).
    """
    if len(ps) != len(ys):
        raise ValueError("ps and ys differ in size")
    pairs = [(float(p), bool(y)) for p, y in zip(ps, ys) if p is not None]
    for p, _ in pairs:
        if not math.isfinite(p) or not 0 <= p <= 1:
            raise ValueError(f"probabilities must lie in [0, 1], got {p}")
    n = len(ps)
    acc = sum((p >= 0.5) == y for p, y in pairs) / n if n else math.nan
    brier = sum((p - y) ** 2 for p, y in pairs) / len(pairs) if pairs else math.nan
    pos = [p for p, y in pairs if y]
    neg = [p for p, y in pairs if not y]
    if pos and neg:
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
        auroc = wins / (len(pos) * len(neg))
    else:
        auroc = math.nan
    return {"self_verify/accuracy": acc, "self_verify/brier": brier, "self_verify/auroc": auroc, "self_verify/parsed": len(pairs) / n if n else math.nan}
