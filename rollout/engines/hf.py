"""`hf` engine: batched sampling from a transformers causal LM with a KV cache.

Prompts are left-padded into one batch; each decode step feeds one token per row and reuses
the cache. Rows that finished keep feeding padding (masked out) until every row is done or the
token budget is spent. Sampling is seeded per call, so a step's rollouts are reproducible.

A rollout step asks for G completions of each prompt, so the prefill runs once per distinct
prompt and its cache rows and last logits are copied to the G rows that share it: 1/G of the
prompt compute (with 8-token prompts, 6-token answers and G = 8 that is half of the whole call).

A vision-language model also takes multimodal prompts (`rollout.engines.multimodal`, vLLM's
format); their pixel values go into the prefill pass only, the image features then live in the
KV cache.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from kernels.sdpa import attention_kernels
from rollout.engines.base import Completion, SamplingParams
from rollout.engines.multimodal import ImageInputs, Prompt, prompt_parts
from rollout.prompt_index import distinct_prompts


class HFEngine:
    def __init__(
        self,
        model: PreTrainedModel,
        eos_token_id: int,
        pad_token_id: int,
        batch_size: int = 256,
        image_inputs: ImageInputs | None = None,
        share_prefill: bool = True,
    ):
        self.model = model.eval()
        self.share_prefill = share_prefill
        self.image_inputs = image_inputs
        from policies.vlm import unsampled_ids

        self.never_sample = unsampled_ids(model)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(dict(named_tensors), strict=True)

    def sleep(self) -> None:
        """Nothing to free: the KV cache lives only inside a `generate` call, and the weights are
        the model's own (the hf engine does not share a GPU with the learner)."""

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Nothing was freed."""

    @torch.inference_mode()
    def generate(self, prompts: list[Prompt], params: SamplingParams, seed: int) -> list[Completion]:
        # drawn where the logits are: on a GPU, copying [n, V] probabilities to the host every token costs more than the forward
        gen = torch.Generator(device=self.model.device).manual_seed(seed)
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size], params, gen))
        return out

    def _generate_batch(self, prompts: list[Prompt], params: SamplingParams, gen: torch.Generator) -> list[Completion]:
        with attention_kernels(self.model.device):
            return self._decode(prompts, params, gen)

    def _decode(self, prompts: list[Prompt], params: SamplingParams, gen: torch.Generator) -> list[Completion]:
        device = self.model.device
        prompts, pixel_values = self._split_images(prompts)
        n = len(prompts)
        # images are not compared, so prompts that carry them are never shared
        if self.share_prefill and pixel_values is None:
            distinct, row_of = distinct_prompts(prompts)
        else:
            distinct, row_of = prompts, None
        width = max(len(p) for p in distinct)
        ids = torch.full((len(distinct), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(distinct), width), dtype=torch.long)
        for i, p in enumerate(distinct):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [n_distinct, width]
        stops = torch.tensor(sorted({self.eos_token_id, *params.stop_token_ids}), device=device)

        cache = DynamicCache()
        images = {} if pixel_values is None else {"pixel_values": pixel_values.to(device)}
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True, **images).logits[:, -1]
        if row_of is not None and len(distinct) < n:
            row_of = row_of.to(device)  # [n]: each request's row in the prefill
            cache.reorder_cache(row_of)
            logits, mask, positions = logits[row_of], mask[row_of], positions[row_of]
        next_pos = positions[:, -1] + 1  # [n]
        tokens = torch.empty((n, 0), dtype=torch.long, device=device)
        logps = torch.empty((n, 0), dtype=torch.float32, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        for _ in range(params.max_new_tokens):
            logits = logits.float()
            if self.never_sample:
                logits[:, self.never_sample] = float("-inf")
            tok, lp = _sample(logits, params, gen)  # [n], [n]
            tok = torch.where(done, torch.full_like(tok, self.pad_token_id), tok)
            tokens = torch.cat([tokens, tok[:, None]], dim=1)
            logps = torch.cat([logps, lp[:, None]], dim=1)
            live = ~done
            done = done | torch.isin(tok, stops)
            if bool(done.all()) or tokens.shape[1] == params.max_new_tokens:
                break
            mask = torch.cat([mask, live.long()[:, None]], dim=1)
            logits = self.model(
                input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None], past_key_values=cache, use_cache=True
            ).logits[:, -1]
            next_pos = next_pos + 1

        results = []
        tokens, logps, stops_l = tokens.tolist(), logps.tolist(), set(stops.tolist())
        for row_t, row_lp in zip(tokens, logps):
            length, reason = len(row_t), "length"
            for j, t in enumerate(row_t):
                if t in stops_l:
                    length, reason = j + 1, "stop"
                    break
            results.append(Completion(row_t[:length], row_lp[:length], reason))
        return results

    def _split_images(self, prompts: list[Prompt]) -> tuple[list[list[int]], torch.Tensor | None]:
        if self.image_inputs is not None:
            return self.image_inputs.prepare(prompts)
        if any(prompt_parts(p)[1] for p in prompts):
            raise ValueError("this engine's model takes no images (built without image inputs), but a prompt carries some")
        return [prompt_parts(p)[0] for p in prompts], None


def _sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row. Returns the token and its log-prob under softmax(logits / T)."""
    if params.temperature == 0:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, -1).gather(-1, tok[:, None])[:, 0]
    logp = torch.log_softmax(logits / params.temperature, dim=-1)  # [n, V]
    probs = logp.exp()
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always survives)
        drop = sorted_p.cumsum(-1) - sorted_p >= params.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    tok = torch.multinomial(probs.to(gen.device), 1, generator=gen)[:, 0].to(logits.device)
    return tok, logp.gather(-1, tok[:, None])[:, 0]
