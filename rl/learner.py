"""The learner: recompute log-probs, take the policy-gradient step, apply QK-Clip.

One `update(batch)` is `algorithm.epochs` passes over the batch in minibatches. The QK probe
records each head's max pre-softmax logit during the learner's forward passes; after the
optimizer step QK-Clip rescales the heads that went over `tau`.

With the KL penalty the reference is a frozen copy of the initial policy, or, for a LoRA policy
(`policies.lora`), the same model with its adapters switched off: the frozen base weights are the
initial policy, and no second copy of them is held.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from transformers import PreTrainedModel

from kernels.logprob import chunked_logprobs
from policies.lora import adapters_disabled, has_lora
from policies.qk_probe import probe_qk, read_max_logits
from rl.algorithms import aggregate, entropy_from_logits, get_policy_loss, tis_weights, token_logprobs
from rl.algorithms.sampler_mismatch import MismatchMeter
from rl.batch import TrainBatch
from rl.config import ExperimentConfig
from rl.optim import build_optimizer, qk_clip
from rl.optim.schedule import lr_factor, set_lr_factor
from rl.sampled_vocab import SampledVocab
from rl.shared_prefix import shared_prefix_outputs


class Learner:
    def __init__(self, model: PreTrainedModel, cfg: ExperimentConfig):
        self.model = model
        self.cfg = cfg
        o = cfg.optimizer
        if o.freeze_vision_tower:
            from policies.vlm import freeze_vision_tower

            freeze_vision_tower(model)
        self.optimizer = build_optimizer(
            model,
            name=o.name,
            lr=o.lr,
            adamw_lr=o.adamw_lr,
            weight_decay=o.weight_decay,
            momentum=o.momentum,
            betas=tuple(o.betas),
        )
        self.loss_fn = get_policy_loss(cfg.algorithm.policy_loss)
        self.lora = has_lora(model)
        if self.lora and cfg.algorithm.kl_coef > 0 and o.name == "muonclip" and o.qk_clip:
            # the config refuses this too (`ExperimentConfig`); a Learner built by hand must as well
            raise ValueError("a LoRA policy's KL reference is its base weights, which QK-Clip rescales: set optimizer.qk_clip: false or algorithm.kl_coef: 0")
        self.ref_model = None
        if cfg.algorithm.kl_coef > 0 and not self.lora:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.temperature = cfg.rollout.temperature or 1.0
        self.vocab = SampledVocab(model)
        # captured before any checkpoint load: a restored optimizer carries the scaled lr of its last step
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def set_lr_factor(self, factor: float) -> None:
        """Scale every parameter group's lr to `factor` x its configured value."""
        set_lr_factor(self.optimizer.param_groups, self.base_lrs, factor)

    def schedule_lr(self, step: int, progress: float) -> float:
        """Set the lr of update `step` at run `progress` (`optimizer.schedule`); returns the factor."""
        o = self.cfg.optimizer
        factor = lr_factor(o.schedule, progress, step, warmup_steps=o.warmup_steps, min_ratio=o.min_lr_ratio)
        self.set_lr_factor(factor)
        return factor

    def _logprobs(self, model: PreTrainedModel, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (with grad) and entropies of the completion-predicting positions."""
        targets = self.vocab.targets(batch.input_ids[:, 1:])  # [B, L-1]
        head = model.get_output_embeddings()
        if self.cfg.algorithm.chunked_logprobs and _plain_linear_head(model, head) and self.vocab.is_prefix:
            body = getattr(model, model.base_model_prefix)
            hidden = self._positions(lambda **kw: body(**kw).last_hidden_state, batch)  # [B, L-1, D]
            return chunked_logprobs(hidden, self.vocab.head_rows(head.weight), targets, temperature=self.temperature)
        logits = self._positions(lambda **kw: model(**kw).logits, batch)  # [B, L-1, V]
        logits = self.vocab.mask(logits.float()) / self.temperature
        return token_logprobs(logits, targets), entropy_from_logits(logits)

    def _positions(self, forward, batch: TrainBatch) -> torch.Tensor:
        """[B, L-1, X]: `forward`'s output (hidden states or logits) at the positions that predict
        the batch's next tokens; each distinct prompt computed once with `algorithm.shared_prefix`."""
        out = shared_prefix_outputs(forward, batch) if self.cfg.algorithm.shared_prefix else None
        if out is None:
            out = forward(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **batch.model_inputs())[:, :-1]
        return out

    @torch.no_grad()
    def _reference_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """[B, L-1] log-probs of the KL reference: the frozen copy, or the base under LoRA."""
        if self.ref_model is not None:
            return self._logprobs(self.ref_model, batch)[0]
        # in eval mode, as the frozen copy is; the base's attention logits are not the policy's,
        # so they stay out of the QK probe
        training = self.model.training
        self.model.eval()
        try:
            with adapters_disabled(self.model), probe_qk(self.model, enabled=False):
                return self._logprobs(self.model, batch)[0]
        finally:
            self.model.train(training)

    @torch.no_grad()
    def _pre_update_logprobs(self, batch: TrainBatch, mb: int) -> torch.Tensor:
        """[B, L-1] learner log-probs of the whole batch before any step (TIS over several minibatches/epochs)."""
        return torch.cat([self._logprobs(self.model, batch.select(slice(s, s + mb)))[0] for s in range(0, len(batch), mb)])

    def update(self, batch: TrainBatch) -> dict[str, float]:
        a = self.cfg.algorithm
        t0 = time.perf_counter()
        self.model.train()
        mb = a.minibatch_size or len(batch)
        sums: dict[str, float] = {}
        count, skipped = 0, 0
        probing = self.cfg.optimizer.name == "muonclip" and self.cfg.optimizer.qk_clip
        max_qk = 0.0
        clipped_heads = 0
        mismatch = MismatchMeter()
        learner_old = self._pre_update_logprobs(batch, mb) if a.tis_cap is not None and (a.epochs > 1 or mb < len(batch)) else None
        for epoch in range(a.epochs):
            for start in range(0, len(batch), mb):
                part = batch.select(slice(start, start + mb))
                with probe_qk(self.model):
                    logprobs, entropy = self._logprobs(self.model, part)
                    # the learner's log-probs before this update (count == 0: no optimizer step yet):
                    # the policy the sampler was meant to be
                    behaviour = learner_old[start : start + mb] if learner_old is not None else (logprobs.detach() if count == 0 else None)
                    if behaviour is not None and epoch == 0:
                        mismatch.add(behaviour, part.old_logprobs, part.completion_mask, a.tis_cap)
                    old, weights = part.old_logprobs, None
                    if a.tis_cap is not None:
                        old, weights = behaviour, tis_weights(behaviour, part.old_logprobs, a.tis_cap)
                    ref = self._reference_logprobs(part) if a.kl_coef > 0 else None
                    loss, metrics = self.loss_fn(
                        logprobs,
                        old,
                        part.advantages,
                        part.completion_mask,
                        clip_low=a.clip_low,
                        clip_high=a.clip_high,
                        agg_mode=a.loss_agg,
                        norm_len=self.cfg.rollout.max_new_tokens,
                        ref_logprobs=ref,
                        kl_coef=a.kl_coef,
                        kl_estimator=a.kl_estimator,
                        token_weights=weights,
                    )
                if a.entropy_coef > 0:
                    # the policy gradient sharpens every distribution it touches; the bonus slows that collapse
                    bonus = aggregate(entropy, part.completion_mask, a.loss_agg, self.cfg.rollout.max_new_tokens)
                    loss = loss - a.entropy_coef * bonus
                    metrics["loss"] = float(loss.detach())
                with torch.no_grad():
                    metrics["entropy"] = float((entropy * part.completion_mask).sum() / part.completion_mask.sum().clamp(min=1))
                if not torch.isfinite(loss):
                    skipped += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gn = self.cfg.optimizer.grad_clip
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), gn if gn > 0 else math.inf)
                metrics["grad_norm"] = float(grad_norm)
                if not torch.isfinite(grad_norm):
                    skipped += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    continue
                self.optimizer.step()
                logits_by_layer = read_max_logits(self.model, reset=True)
                if logits_by_layer:
                    max_qk = max(max_qk, max(float(v.max()) for v in logits_by_layer.values()))
                if probing and self.cfg.optimizer.qk_clip_remeasure:
                    with torch.no_grad(), probe_qk(self.model):  # the attention is what is probed: skip the head
                        self.model(input_ids=part.input_ids, attention_mask=part.attention_mask, logits_to_keep=1, **part.model_inputs())
                    logits_by_layer = read_max_logits(self.model, reset=True)
                if probing:
                    stats = qk_clip(self.model, logits_by_layer, self.cfg.optimizer.qk_clip_tau)
                    clipped_heads += int(stats.get("clipped_heads", 0))
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        self.model.eval()
        out = {f"learner/{k}": v / max(count, 1) for k, v in sums.items()}
        out.update(mismatch.metrics())
        out.update(
            {
                "learner/skipped_steps": skipped,
                "learner/qk_max_logit": max_qk,
                "learner/qk_clipped_heads": clipped_heads,
                "time/learner_s": time.perf_counter() - t0,
            }
        )
        return out


def _plain_linear_head(model: PreTrainedModel, head) -> bool:
    """The chunked path computes `hidden @ W.T / T`; anything else the model does to its logits
    (a bias, soft-capping, scaling) must go through the model's own forward."""
    cfg = model.config
    return (
        isinstance(head, torch.nn.Linear)
        and head.bias is None
        and getattr(cfg, "final_logit_softcapping", None) is None
        and getattr(cfg, "logit_scale", None) in (None, 1.0)
        and hasattr(model, model.base_model_prefix)
    )
