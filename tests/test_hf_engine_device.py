"""The `hf` engine generates where its model is: every tensor of a generate call on that device;
on CUDA its attention never takes cuDNN's kernel (`kernels.sdpa`), elsewhere nothing is restricted."""

from __future__ import annotations

import pytest
import torch

from policies.model import build_policy
from rl.config import PolicyConfig
from rollout.engines.base import SamplingParams
from rollout.engines.hf import HFEngine


def _devices_of_a_generate_call(device: str) -> tuple[set[str], set[bool]]:
    """The devices of every tensor a generate call handles, and whether cuDNN attention was
    allowed during each of its forwards."""
    model, tok = build_policy(PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128), seed=0)
    model = model.to(device)
    seen: set[str] = set()
    cudnn: set[bool] = set()

    def record(module, args, kwargs):
        cudnn.add(torch.backends.cuda.cudnn_sdp_enabled())
        for t in [*args, *kwargs.values()]:
            if isinstance(t, torch.Tensor):
                seen.add(t.device.type)

    for m in model.modules():
        m.register_forward_pre_hook(record, with_kwargs=True)
    engine = HFEngine(model, tok.eos_token_id, tok.pad_token_id)
    prompts = [tok("12+3=", add_special_tokens=False)["input_ids"], tok("7*8=", add_special_tokens=False)["input_ids"]] * 2
    out = engine.generate(prompts, SamplingParams(max_new_tokens=4, temperature=1.0), seed=0)
    assert len(out) == 4 and all(len(c.token_ids) == len(c.logprobs) > 0 for c in out)
    # the weights pushed from the learner arrive on the CPU (object store) and land on the model's device
    engine.load_weights({k: v.cpu() for k, v in model.state_dict().items()})
    seen |= {p.device.type for p in engine.model.parameters()}
    return seen, cudnn


def test_hf_engine_keeps_a_step_on_its_device_cpu():
    assert torch.backends.cuda.cudnn_sdp_enabled()
    assert _devices_of_a_generate_call("cpu") == ({"cpu"}, {True})
    assert torch.backends.cuda.cudnn_sdp_enabled()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hf_engine_keeps_a_step_on_its_device_cuda():
    allowed = torch.backends.cuda.cudnn_sdp_enabled()
    assert _devices_of_a_generate_call("cuda") == ({"cuda"}, {False})
    assert torch.backends.cuda.cudnn_sdp_enabled() == allowed  # put back after the call
