"""The learner: recompute log-probs, take the policy-gradient step, apply QK-Clip.

One `update(batch)` is `algorithm.epochs` passes over the batch in minibatches, one optimizer
step each:

    for each minibatch:
        _accumulate_gradients   forward + loss + backward, micro-batch by micro-batch
                                (`learner.max_tokens_per_microbatch`, `rl.microbatch`)
        _apply_step             gradient clip, optimizer step, QK-Clip

The QK probe records each head's max pre-softmax logit during the learner's forward passes;
after the optimizer step QK-Clip rescales the heads that went over `tau`.

Everything lives on `learner.device`: the model (moved there before the optimizer is built, so
its state is created there too), the reference copy, and each batch. With `learner.precision:
bf16` the forwards run under bf16 autocast: the weights and the optimizer state stay fp32 (the
master copy), the matmuls and their activations are bf16, and the log-probs, entropies and the
loss are computed in fp32 from the bf16 logits. Autocast rather than bf16 parameters with fp32
copies: it needs no second copy of the weights and no cast-back after each step, and Muon's
Newton-Schulz keeps its own precision (`ns_dtype`).

With the KL penalty the reference is a frozen copy of the initial policy, or, for a LoRA policy
(`policies.lora`), the same model with its adapters switched off: the frozen base weights are the
initial policy, and no second copy of them is held.

With N ranks (`cluster.learner_ranks`, `rl.learner_group`) every rank runs this same class on its
share of each minibatch's rows, the policy and the reference sharded with FSDP2, and
`rl.distributed.ranks` answers what the ranks must agree on (how many passes, whether the loss is
finite, the pooled metrics); the Muon step and QK-Clip's per-head maxima are reduced over ranks
(`rl.optim`). The update equals one process's on the same minibatch. The shared-prompt pass is
one-process only (a rank's prompt groups would change its number of forwards). The chunked
log-probs need the head's full weight, which FSDP2 gathers only inside the root's forward: sharded
ranks run that forward with the head passed through (`rl.distributed.head`) and keep the weight it
gathered, which the root holds until its backward.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Iterator

import torch
from transformers import PreTrainedModel

from kernels.logprob import chunked_logprobs
from policies.lora import adapters_disabled, has_lora, served_weights
from policies.qk_probe import probe_qk, read_max_logits
from rl.algorithms import aggregate, entropy_from_logits, get_policy_loss, tis_weights, token_logprobs
from rl.algorithms.sampler_mismatch import MismatchMeter
from rl.batch import TrainBatch
from rl.config import AlgorithmConfig, ExperimentConfig, LearnerConfig, OptimizerConfig
from rl.distributed.head import head_passed_through
from rl.distributed.ranks import LearnerRanks
from rl.microbatch import MicroMetrics, loss_share, plan_microbatches, select_trimmed
from rl.optim import build_optimizer, qk_clip
from rl.optim.qk_clip import reduce_max_logits
from rl.optim.schedule import lr_factor, set_lr_factor
from rl.sampled_vocab import SampledVocab
from rl.shared_prefix import shared_prefix_outputs


class Learner:
    """Takes its own config sections: `algorithm` (loss, advantages' use, minibatches), `optimizer`,
    `learner` (precision, memory); `device` is the resolved `learner.device`, and the sampling
    temperature and completion cap are the rollout's (the log-probs and Dr. GRPO's constant use them)."""

    def __init__(
        self,
        model: PreTrainedModel,
        algorithm: AlgorithmConfig,
        optimizer: OptimizerConfig,
        learner: LearnerConfig,
        *,
        device: str = "cpu",
        temperature: float = 1.0,
        max_new_tokens: int,
        ranks: LearnerRanks | None = None,
    ):
        self.algorithm, self.optim_cfg, self.learner_cfg = algorithm, optimizer, learner
        self.norm_len = max_new_tokens  # Dr. GRPO's constant length
        self.device = torch.device(device)
        self.ranks = ranks or LearnerRanks()
        # before the optimizer is built: its state is created where the parameters live
        self.model = model.to(self.device)
        self.bf16 = learner.precision == "bf16"
        if learner.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.shared_prefix = algorithm.shared_prefix and not learner.gradient_checkpointing and not self.ranks.sharded
        self.logprob_path = ""  # the last log-prob pass's path, "chunked" or "logits" (benchmarks report it)
        o = optimizer
        if o.freeze_vision_tower:
            from policies.vlm import freeze_vision_tower

            freeze_vision_tower(model)
        self.lora = has_lora(model)
        if self.lora and self.ranks.sharded:
            raise ValueError("LoRA policies train on one learner rank: set cluster.learner_ranks: 1")
        self.ref_model = None
        if algorithm.kl_coef > 0 and not self.lora:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
            self.ranks.shard(self.ref_model, self.bf16)
        self.ranks.shard(model, self.bf16)  # before the optimizer: its state is created on the shards
        self.optimizer = build_optimizer(
            model,
            name=o.name,
            lr=o.lr,
            adamw_lr=o.adamw_lr,
            weight_decay=o.weight_decay,
            momentum=o.momentum,
            betas=tuple(o.betas),
        )
        self.loss_fn = get_policy_loss(algorithm.policy_loss)
        if self.lora and algorithm.kl_coef > 0 and o.name == "muonclip" and o.qk_clip:
            # the config refuses this too (`ExperimentConfig`); a Learner built by hand must as well
            raise ValueError("a LoRA policy's KL reference is its base weights, which QK-Clip rescales: set optimizer.qk_clip: false or algorithm.kl_coef: 0")
        self.temperature = temperature or 1.0  # greedy sampling (0) scores log-probs at T = 1
        self.vocab = SampledVocab(model)
        self.served = served_weights(model)  # what the rollout workers load: the merged weights under LoRA
        # captured before any checkpoint load: a restored optimizer carries the scaled lr of its last step
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    @classmethod
    def from_config(cls, model: PreTrainedModel, cfg: ExperimentConfig, ranks: LearnerRanks | None = None) -> "Learner":
        """The learner an experiment describes: its sections, the resolved device, the rollout's sampling."""
        return cls(
            model, cfg.algorithm, cfg.optimizer, cfg.learner,
            device=cfg.learner_device, temperature=cfg.rollout.temperature, max_new_tokens=cfg.rollout.max_new_tokens, ranks=ranks,
        )

    def load_train_state(self, folder) -> None:
        """Model and optimizer from a checkpoint folder in either format: sharded (written by any
        number of ranks) or the single files `model.pt` + `optimizer.pt` (`rl.distributed.checkpoint`)."""
        from rl.distributed.checkpoint import is_sharded_checkpoint, load_legacy_train_state, load_train_state

        load = load_train_state if is_sharded_checkpoint(folder) else load_legacy_train_state
        load(folder, self.model, self.optimizer)

    def set_lr_factor(self, factor: float) -> None:
        """Scale every parameter group's lr to `factor` x its configured value."""
        set_lr_factor(self.optimizer.param_groups, self.base_lrs, factor)

    def schedule_lr(self, step: int, progress: float) -> float:
        """Set the lr of update `step` at run `progress` (`optimizer.schedule`); returns the factor."""
        o = self.optim_cfg
        factor = lr_factor(o.schedule, progress, step, warmup_steps=o.warmup_steps, min_ratio=o.min_lr_ratio)
        self.set_lr_factor(factor)
        return factor

    def _forward(self, forward, **inputs) -> torch.Tensor:
        """One model forward under the learner's precision (`learner.precision`)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return forward(**inputs)

    def _logprobs(self, model: PreTrainedModel, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (with grad) and entropies of the completion-predicting positions, in fp32."""
        targets = self.vocab.targets(batch.input_ids[:, 1:])  # [B, L-1]
        head = model.get_output_embeddings()
        if self.algorithm.chunked_logprobs and _plain_linear_head(model, head) and self.vocab.is_prefix:
            if self.ranks.sharded:
                # the root's forward is where FSDP2 gathers the head's weight: run it with the head passed through
                with head_passed_through(model) as seen:
                    hidden = self._positions(lambda **kw: self._forward(model, **kw).logits, batch)  # [B, L-1, D]
                weight = seen.weight
            else:
                body = getattr(model, model.base_model_prefix)
                hidden = self._positions(lambda **kw: self._forward(body, **kw).last_hidden_state, batch)  # [B, L-1, D]
                weight = head.weight
            weight = self.vocab.head_rows(weight)
            self.logprob_path = "chunked"
            # bf16: the head's matmul in bf16 like the rest of the forward; the softmax work in fp32
            dtype = torch.bfloat16 if self.bf16 else weight.dtype
            return chunked_logprobs(hidden.to(dtype), weight.to(dtype), targets, temperature=self.temperature)
        self.logprob_path = "logits"
        logits = self._positions(lambda **kw: self._forward(model, **kw).logits, batch)  # [B, L-1, V]
        logits = self.vocab.mask(logits.float()) / self.temperature
        return token_logprobs(logits, targets), entropy_from_logits(logits)

    def _positions(self, forward, batch: TrainBatch) -> torch.Tensor:
        """[B, L-1, X]: `forward`'s output (hidden states or logits) at the positions that predict
        the batch's next tokens; each distinct prompt computed once with `algorithm.shared_prefix`
        (not under gradient checkpointing: a layer's recomputation would append to the prompt cache)."""
        out = shared_prefix_outputs(forward, batch) if self.shared_prefix else None
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

    def _passes(self, part: TrainBatch) -> Iterator[tuple[TrainBatch, torch.Tensor, bool]]:
        """This rank's micro-batches of minibatch `part`, as (micro-batch, its rows in `part`, real).
        Every rank runs as many (`LearnerRanks.passes`); a rank's extra passes repeat a row of
        `part` and are not real: their loss counts for nothing and their metrics are not pooled."""
        mine = self.ranks.rows_of(part)
        own = part if mine is None else part.select(mine.to(part.input_ids.device))
        plan = plan_microbatches(own, self.learner_cfg.max_tokens_per_microbatch, share_prompts=self.shared_prefix) if len(own) else []
        for i in range(self.ranks.passes(len(plan))):
            if i < len(plan):
                rows = plan[i]
                yield select_trimmed(own, rows), (rows if mine is None else mine[rows]), True
            else:
                rows = torch.zeros(1, dtype=torch.long)
                yield select_trimmed(part, rows), rows, False

    @torch.no_grad()
    def _pre_update_logprobs(self, batch: TrainBatch, mb: int) -> torch.Tensor:
        """[B, L-1] learner log-probs of the batch before any step (TIS over several
        minibatches/epochs); with N ranks, each fills in the rows it trains on."""
        out = torch.zeros_like(batch.old_logprobs)
        for start in range(0, len(batch), mb):
            part = batch.select(slice(start, start + mb))
            for micro, rows, real in self._passes(part):
                logprobs = self._logprobs(self.model, micro)[0]
                if real:
                    out[start + rows.to(out.device), : micro.old_logprobs.shape[1]] = logprobs
        return out

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """`algorithm.epochs` passes over `batch` in minibatches, one optimizer step each."""
        a = self.algorithm
        t0 = time.perf_counter()
        batch = batch.to(self.device)
        self.model.train()
        mb = a.minibatch_size or len(batch)
        sums: dict[str, float] = {}
        steps, skipped, clipped_heads, max_qk = 0, 0, 0, 0.0
        mismatch = MismatchMeter()
        learner_old = self._pre_update_logprobs(batch, mb) if a.tis_cap is not None and (a.epochs > 1 or mb < len(batch)) else None
        for epoch in range(a.epochs):
            for start in range(0, len(batch), mb):
                part = batch.select(slice(start, start + mb))
                behaviour = None if learner_old is None else learner_old[start : start + mb]
                # before the first optimizer step the learner's own log-probs are the policy the sampler was meant to be
                metrics = self._accumulate_gradients(part, behaviour, mismatch if epoch == 0 else None, first_step=steps == 0)
                if metrics is None:
                    skipped += 1
                    continue
                step_metrics = self._apply_step(part)
                if step_metrics is None:
                    skipped += 1
                    continue
                max_qk = max(max_qk, step_metrics.pop("qk_max_logit"))
                clipped_heads += int(step_metrics.pop("qk_clipped_heads"))
                for k, v in {**metrics, **step_metrics}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                steps += 1
        self.model.eval()
        out = {f"learner/{k}": v / max(steps, 1) for k, v in sums.items()}
        mismatch.sums = self.ranks.pool_sums(mismatch.sums, maxima=frozenset({"max_abs_diff"}))  # each rank measured its own rows
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

    def _accumulate_gradients(
        self, part: TrainBatch, behaviour: torch.Tensor | None, mismatch: MismatchMeter | None, first_step: bool
    ) -> dict[str, float] | None:
        """Forward and backward of one minibatch, micro-batch by micro-batch, into `.grad`; its
        metrics, or None (and no gradient) when the loss is not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        pooled = MicroMetrics()
        total_tokens = float(part.completion_mask.sum())
        for micro, rows, real in self._passes(part):
            width = micro.old_logprobs.shape[1]
            micro_behaviour = None if behaviour is None else behaviour[rows.to(behaviour.device), :width]
            loss, metrics = self._minibatch_loss(micro, micro_behaviour, mismatch if real else None, first_step)
            if not self.ranks.all_finite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                read_max_logits(self.model, reset=True)
                return None
            share = loss_share(micro, part, self.algorithm.loss_agg) if real else 0.0
            (loss * (share * self.ranks.loss_scale)).backward()
            if real:
                tokens = float(micro.completion_mask.sum())
                pooled.add(metrics, share, tokens / total_tokens if total_tokens else len(micro) / len(part), has_tokens=tokens > 0)
        return self.ranks.pool(pooled)

    def _minibatch_loss(
        self, part: TrainBatch, behaviour: torch.Tensor | None, mismatch: MismatchMeter | None, first_step: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The policy loss of `part` (aggregated over its own rows by `algorithm.loss_agg`) and its metrics."""
        a = self.algorithm
        with probe_qk(self.model):
            logprobs, entropy = self._logprobs(self.model, part)
        if behaviour is None and first_step:
            behaviour = logprobs.detach()
        if behaviour is not None and mismatch is not None:
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
            norm_len=self.norm_len,
            ref_logprobs=ref,
            kl_coef=a.kl_coef,
            kl_estimator=a.kl_estimator,
            token_weights=weights,
        )
        if a.entropy_coef > 0:
            # the policy gradient sharpens every distribution it touches; the bonus slows that collapse
            bonus = aggregate(entropy, part.completion_mask, a.loss_agg, self.norm_len)
            loss = loss - a.entropy_coef * bonus
            metrics["loss"] = float(loss.detach())
        with torch.no_grad():
            metrics["entropy"] = float((entropy * part.completion_mask).sum() / part.completion_mask.sum().clamp(min=1))
        return loss, metrics

    def _apply_step(self, part: TrainBatch) -> dict[str, float] | None:
        """Clip the gradient, step, and QK-Clip the heads whose max logit passed tau; None (no
        step) when the gradient is not finite."""
        o = self.optim_cfg
        grad_norm = self.ranks.scalar(torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip if o.grad_clip > 0 else math.inf))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            read_max_logits(self.model, reset=True)
            return None
        self.optimizer.step()
        logits_by_layer = reduce_max_logits(self.model, read_max_logits(self.model, reset=True))
        max_qk = max((float(v.max()) for v in logits_by_layer.values()), default=0.0)
        clipped = 0
        if o.name == "muonclip" and o.qk_clip:
            if o.qk_clip_remeasure:
                logits_by_layer = self._remeasure_max_logits(part)
            clipped = int(qk_clip(self.model, logits_by_layer, o.qk_clip_tau).get("clipped_heads", 0))
        return {"grad_norm": grad_norm, "qk_max_logit": max_qk, "qk_clipped_heads": clipped}

    @torch.no_grad()
    def _remeasure_max_logits(self, part: TrainBatch) -> dict[int, torch.Tensor]:
        """Each head's max logit on `part` under the updated weights (attention only: the head is skipped)."""
        with probe_qk(self.model):
            for micro, _, _ in self._passes(part):
                self._forward(self.model, input_ids=micro.input_ids, attention_mask=micro.attention_mask, logits_to_keep=1, **micro.model_inputs())
        return reduce_max_logits(self.model, read_max_logits(self.model, reset=True))


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
