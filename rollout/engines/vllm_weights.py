"""New policy weights into a running vLLM engine, without restarting it (the CPU / in-process path).

Why the obvious paths are wrong on CPU (read in vLLM 0.32's source, `model_executor/layers`):
after loading, `UnquantizedLinearMethod.process_weights_after_loading` calls
`dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`: the layer's GEMM becomes a closure
over a oneDNN handle (or a packed copy) made from the weight, and `layer.weight` is replaced by
an empty plain `Parameter`. So

- writing into the model's parameters (`model.load_weights(...)`, TRL's sync) finds no
  `weight_loader` on the replaced parameters and fails, and even a successful `copy_` into
  `layer.weight` would not reach the packed copy the GEMM actually reads;
- `collective_rpc("reload_weights")` with no weights re-reads the checkpoint from disk: it
  succeeds and keeps serving the initial policy.

The correct path is vLLM's in-place reload with the weights given as an iterator in checkpoint
(Hugging Face) format: `reload_weights(weights_iterator=..., is_checkpoint_format=True)`. Its
layerwise reload puts each layer back in checkpoint layout (full `weight` parameters with their
loaders), loads through the model's own `load_weights` (q/k/v and gate/up fused by the loaders),
re-runs `process_weights_after_loading` (so the CPU GEMM dispatch repacks the new weights), and
copies the result into the original kernel tensors. The prefix cache is reset afterwards, as
vLLM's own pause-and-clear does: its KV blocks were computed by the old weights. (A 159-token
prompt, longer than one 128-token CPU block, gave the new weights' outputs even without the
reset in our tests, so the tests do not show that a stale hit would happen; the reset is
cheap and makes sure.)

Proven by `tests/test_vllm_engine.py`: after an update, greedy outputs equal the transformers
model with the same weights token for token, and differ from the outputs before the update; the
two wrong paths above are reproduced there on the running engine.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch


def load_weights_in_place(llm: Any, named_tensors: Mapping[str, torch.Tensor]) -> None:
    """Load HF-named tensors into the `vllm.LLM` `llm` (engine core in this process)."""
    if not named_tensors:
        raise ValueError("load_weights: no tensors given")
    weights = [(name, t.detach().to("cpu", copy=False)) for name, t in named_tensors.items()]
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    llm.reset_prefix_cache()
