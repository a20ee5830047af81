"""Token-level policy losses and their aggregation.

Shapes: B completions, T token positions. `mask` is 1 on the completion tokens that count.
"""

from __future__ import annotations

import torch

from rl.algorithms.registry import register_policy_loss


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log p(token_ids) from logits [B, T, V] and ids [B, T] → [B, T]; logsumexp avoids a [B,T,V] log-softmax copy."""
    picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - Σ softmax(z)·z, per position [B, T]."""
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str, norm_len: int | None = None) -> torch.Tensor:
    """Reduce per-token values [B, T] to a scalar.

    - token_mean: Σ_b Σ_t v·m / Σ m (DAPO: every token weighs the same);
    - seq_mean_token_mean: mean_b (Σ_t v·m / Σ_t m) (original GRPO);
    - seq_mean_token_sum_norm: mean_b (Σ_t v·m) / norm_len (Dr. GRPO: no length bias).
    """
    mask = mask.to(values.dtype)
    if mode == "token_mean":
        return (values * mask).sum() / mask.sum().clamp(min=1)
    if mode == "seq_mean_token_mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_seq.mean()
    if mode == "seq_mean_token_sum_norm":
        if not norm_len:
            raise ValueError("seq_mean_token_sum_norm needs norm_len (the maximum completion length)")
        return ((values * mask).sum(-1) / norm_len).mean()
    raise ValueError(f"unknown loss aggregation {mode!r}; known: token_mean, seq_mean_token_mean, seq_mean_token_sum_norm")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(π || π_ref) estimates (Schulman's k1, k2, k3); k3 is unbiased and ≥ 0."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        return torch.exp(-log_ratio) + log_ratio - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; known: k1, k2, k3")


def tis_weights(learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling weights min(π_learner / π_sampler, cap), detached [B, T]."""
    return torch.exp(learner_logprobs - sampler_logprobs).clamp(max=cap).detach()


@register_policy_loss("ppo_clip")
def ppo_clip(
    logprobs: torch.Tensor,  # [B, T] current policy, with grad
    old_logprobs: torch.Tensor,  # [B, T] behaviour (sampler) policy
    advantages: torch.Tensor,  # [B], or [B, T] per token
    mask: torch.Tensor,  # [B, T]
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    clip_ratio_c: float | None = None,
    agg_mode: str = "token_mean",
    norm_len: int | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with DAPO's decoupled clip range.

    ρ = exp(logπ - logπ_old);  L = -min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A), aggregated by
    `agg_mode`; with `clip_ratio_c` (dual-clip PPO), losses of negative-advantage tokens are
    capped at -c·A. Plus `kl_coef · KL(π||π_ref)` when a reference is given. `token_weights`
    [B, T] (detached) multiply the per-token surrogate before aggregation: truncated importance
    sampling passes `tis_weights` here and the learner's own pre-update log-probs as `old_logprobs`.
    """
    mask = mask.to(logprobs.dtype)
    adv = (advantages[:, None] if advantages.dim() == 1 else advantages).to(logprobs.dtype)  # [B, 1] or [B, T]
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)  # [B, T]
    surr1 = ratio * adv
    surr2 = ratio.clamp(1 - clip_low, 1 + clip_high) * adv
    losses = -torch.min(surr1, surr2)  # [B, T]
    clipped = (surr2 < surr1).to(logprobs.dtype)
    if clip_ratio_c is not None:
        dual = torch.min(losses, -clip_ratio_c * adv)
        losses = torch.where(adv < 0, dual, losses)
    if token_weights is not None:
        losses = losses * token_weights
    loss = aggregate(losses, mask, agg_mode, norm_len)
    counted = mask.bool()
    with torch.no_grad():
        r = ratio[counted]
        metrics = {
            "pg_loss": float(loss.detach()),
            "clip_frac": float(clipped[counted].mean()) if r.numel() else 0.0,
            "ratio_mean": float(r.mean()) if r.numel() else 1.0,
            "ratio_min": float(r.min()) if r.numel() else 1.0,
            "ratio_max": float(r.max()) if r.numel() else 1.0,
            "approx_kl_old": float(kl_penalty(logprobs, old_logprobs, "k3")[counted].mean()) if r.numel() else 0.0,
        }
    if ref_logprobs is not None and kl_coef > 0:
        kl = kl_penalty(logprobs, ref_logprobs, kl_estimator)
        kl_term = aggregate(kl, mask, agg_mode, norm_len)
        loss = loss + kl_coef * kl_term
        metrics["kl_ref"] = float(kl_term.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics
