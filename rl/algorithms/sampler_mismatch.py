"""How far the sampler's log-probs are from the learner's, for the same policy weights.

An inference engine (vLLM: other kernels, other reduction orders, bf16 on GPU) does not
reproduce the learner's numbers exactly, so even a synchronous rollout is slightly off-policy.
The learner measures the gap on every step (`learner/sampler_*` metrics) and can correct it
with truncated importance sampling (`algorithm.tis_cap`, see `losses.tis_weights`).

Shapes: B completions, T token positions; `mask` is 1 on the completion tokens.
"""

from __future__ import annotations

import torch


def mismatch_sums(learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Sums over the masked tokens (so that batches can be pooled), plus the extremes.

    With r = π_learner / π_sampler on tokens drawn from the sampler, `(r - 1) - log r` is the
    k3 estimate of KL(π_sampler || π_learner): unbiased and never negative.
    """
    m = mask.bool()
    diff = (learner_logprobs - sampler_logprobs).detach().float()[m]  # [N] log r per counted token
    if diff.numel() == 0:
        return {"tokens": 0.0, "abs_diff": 0.0, "kl": 0.0, "max_abs_diff": 0.0}
    return {
        "tokens": float(diff.numel()),
        "abs_diff": float(diff.abs().sum()),
        "kl": float((torch.expm1(diff) - diff).sum()),
        "max_abs_diff": float(diff.abs().max()),
    }


class MismatchMeter:
    """Pools `mismatch_sums` over a step's minibatches into per-token means."""

    def __init__(self) -> None:
        self.sums = {"tokens": 0.0, "abs_diff": 0.0, "kl": 0.0, "max_abs_diff": 0.0, "tis_capped": 0.0}

    def add(self, learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor, tis_cap: float | None = None) -> None:
        s = mismatch_sums(learner_logprobs, sampler_logprobs, mask)
        for k in ("tokens", "abs_diff", "kl"):
            self.sums[k] += s[k]
        self.sums["max_abs_diff"] = max(self.sums["max_abs_diff"], s["max_abs_diff"])
        if tis_cap is not None:
            m = mask.bool()
            log_r = (learner_logprobs - sampler_logprobs).detach()[m]
            self.sums["tis_capped"] += float((log_r > torch.log(torch.tensor(tis_cap))).sum())

    def metrics(self) -> dict[str, float]:
        """Per-token means; empty when nothing was measured (no learner step this update)."""
        n = self.sums["tokens"]
        if n == 0:
            return {}
        return {
            "learner/sampler_logprob_abs_diff": self.sums["abs_diff"] / n,
            "learner/sampler_logprob_max_abs_diff": self.sums["max_abs_diff"],
            "learner/sampler_kl": self.sums["kl"] / n,
            "learner/tis_capped_frac": self.sums["tis_capped"] / n,
        }
