"""Sleep mode behind the engine interface and the one-GPU step order (`rollout.colocate`).

On CPU the order is checked with stand-ins that record calls (vLLM has no sleep mode on CPU);
the real vLLM engine sleeping and waking around a weight update runs on CUDA only.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from rollout.colocate import colocated_update
from rollout.engines.base import WAKE_TAGS, SamplingParams


class RecordingEngine:
    """Stand-in for a vLLM engine in sleep mode: records its calls and which memory is asleep,
    and refuses what a real sleeping engine cannot do."""

    def __init__(self, calls: list):
        self.calls = calls
        self.asleep: set[str] = set()
        self.loaded_while_asleep: list[set[str]] = []

    def sleep(self) -> None:
        self.calls.append("sleep")
        self.asleep = set(WAKE_TAGS)

    def wake_up(self, tags=None) -> None:
        tags = list(WAKE_TAGS if tags is None else tags)
        self.calls.append("wake_up:" + "+".join(tags))
        self.asleep -= set(tags)

    def load_weights(self, named_tensors) -> None:
        assert "weights" not in self.asleep, "weights loaded into offloaded memory"
        self.calls.append("load_weights")
        self.loaded_while_asleep.append(set(self.asleep))

    def generate(self, prompts, params, seed):
        assert not self.asleep, "generate on a sleeping engine"
        self.calls.append("generate")
        return []


def test_one_gpu_step_runs_in_order_and_loads_weights_awake_for_weights_only():
    calls: list[str] = []
    engine = RecordingEngine(calls)

    def update() -> dict:
        assert engine.asleep == set(WAKE_TAGS), "the learner trains while the engine holds GPU memory"
        calls.append("update")
        return {"loss": 0.5}

    out = colocated_update(engine, update, hand_over=lambda: engine.load_weights({"w": torch.zeros(1)}), release=lambda: calls.append("release"))
    engine.generate([[1]], SamplingParams(), seed=0)

    assert out == {"loss": 0.5}
    assert calls == ["sleep", "update", "release", "wake_up:weights", "load_weights", "wake_up:kv_cache", "generate"]
    assert engine.loaded_while_asleep == [{"kv_cache"}]  # weights awake, KV cache still away


class RecordingLLM:
    """Stand-in for `vllm.LLM`: records the sleep-mode calls `VLLMEngine` makes on it."""

    def __init__(self):
        self.calls: list[tuple] = []

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None) -> None:
        self.calls.append(("wake_up", tuple(tags) if tags else None))


def vllm_engine_over(llm, sleep_mode: bool = True):
    """A `VLLMEngine` around a stand-in LLM: its sleep bookkeeping without starting vLLM."""
    from rollout.engines.vllm import VLLMEngine

    engine = VLLMEngine.__new__(VLLMEngine)
    engine.llm, engine.sleep_mode, engine._asleep, engine.eos_token_id = llm, sleep_mode, set(), 2
    return engine


def test_vllm_engine_sleeps_at_level_one_and_wakes_only_what_is_asleep():
    llm = RecordingLLM()
    engine = vllm_engine_over(llm)
    engine.sleep()
    engine.sleep()  # already asleep: nothing more to free
    with pytest.raises(RuntimeError, match=r"load_weights on a sleeping vLLM engine: call wake_up\(\['weights'\]\)"):
        engine.load_weights({"w": torch.zeros(1)})
    engine.wake_up(["weights"])
    with pytest.raises(RuntimeError, match="generate on a sleeping vLLM engine"):
        engine.generate([[1]], SamplingParams(), seed=0)
    engine.wake_up()  # all: only the KV cache is left
    engine.wake_up(["kv_cache"])  # awake already (e.g. a restarted worker): no call
    assert llm.calls == [("sleep", 1), ("wake_up", ("weights",)), ("wake_up", ("kv_cache",))]
    with pytest.raises(ValueError, match="unknown memory tags"):
        engine.wake_up(["scheduling"])


def test_vllm_engine_without_sleep_mode_treats_sleep_as_a_no_op():
    llm = RecordingLLM()
    engine = vllm_engine_over(llm, sleep_mode=False)
    engine.sleep()
    engine.wake_up(["weights"])
    engine.wake_up()
    assert llm.calls == [] and engine._asleep == set()


def test_hf_engine_sleep_and_wake_are_no_ops_around_generation():
    from policies.model import build_policy
    from rl.config import PolicyConfig
    from rollout.engines.hf import HFEngine

    model, tok = build_policy(PolicyConfig(hidden_size=32, num_layers=1, num_heads=1, head_dim=32, intermediate_size=64), seed=0)
    engine = HFEngine(model, tok.eos_token_id, tok.pad_token_id)
    prompts = [tok("1+2=", add_special_tokens=False)["input_ids"]]
    params = SamplingParams(max_new_tokens=4, temperature=0)
    before = engine.generate(prompts, params, seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    colocated_update(engine, lambda: None, hand_over=lambda: engine.load_weights(state))
    assert [c.token_ids for c in engine.generate(prompts, params, seed=0)] == [c.token_ids for c in before]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None, reason="needs CUDA and vllm")
def test_vllm_sleeps_frees_gpu_memory_and_serves_the_weights_handed_over(tmp_path):
    from policies.model import build_policy, save_policy
    from rl.config import PolicyConfig
    from rollout.engines.hf import HFEngine
    from rollout.engines.vllm import VLLMEngine

    model, tok = build_policy(PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128), seed=3)
    path = save_policy(model, tok, tmp_path / "policy")
    engine = VLLMEngine(path, tok.eos_token_id, max_model_len=256, gpu_memory_utilization=0.3, enable_sleep_mode=True, seed=0)
    model = model.cuda()  # the learner's copy, on the GPU the engine sleeps on
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+2=", "40-13=", "7*8="]]
    params = SamplingParams(max_new_tokens=8, temperature=0)
    engine.generate(prompts, params, seed=0)

    free: dict[str, int] = {}

    def update() -> None:  # the learner's step: here a perturbation of its weights
        free["asleep"] = torch.cuda.mem_get_info()[0]
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p) * p.std().clamp(min=0.02))

    free["awake"] = torch.cuda.mem_get_info()[0]
    colocated_update(engine, update, hand_over=lambda: engine.load_weights(model.state_dict()))
    assert free["asleep"] - free["awake"] > 2**30, "sleep gave back less than 1 GiB of the engine's KV cache"

    want = HFEngine(model.eval(), tok.eos_token_id, tok.pad_token_id).generate(prompts, params, seed=0)
    assert [c.token_ids for c in engine.generate(prompts, params, seed=0)] == [c.token_ids for c in want]
