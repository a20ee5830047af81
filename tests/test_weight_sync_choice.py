"""`rollout.weight_sync` resolved by placement, and the vLLM/GPU combinations the config refuses."""

from __future__ import annotations

import pytest

from rl.config import ConfigError, RolloutConfig, validate_config
from rollout.weight_sync import choose_weight_sync, shares_one_gpu

BASE = {"policy": {"arch": "llama"}, "env": {"name": "math"}}


def experiment(rollout: dict, learner_gpus: float = 0.0) -> dict:
    return {**BASE, "rollout": rollout, "cluster": {"learner_gpus": learner_gpus}}


# (rollout keys, cluster.learner_gpus, what `auto` picks)
PLACEMENTS = [
    pytest.param({}, 0.0, "object_store", id="hf-on-cpu"),
    pytest.param({"gpus_per_worker": 1}, 1.0, "object_store", id="hf-on-gpus"),
    pytest.param({"engine": "vllm"}, 0.0, "object_store", id="vllm-cpu-learner-cpu"),
    pytest.param({"engine": "vllm"}, 1.0, "object_store", id="vllm-cpu-learner-gpu"),
    pytest.param({"engine": "vllm", "gpus_per_worker": 1}, 0.0, "object_store", id="vllm-gpu-learner-cpu"),
    pytest.param({"engine": "vllm", "gpus_per_worker": 0.5}, 0.5, "object_store", id="one-gpu-shared"),
    pytest.param({"engine": "vllm", "gpus_per_worker": 0.7}, 0.3, "object_store", id="one-gpu-shared-uneven"),
    pytest.param({"engine": "vllm", "gpus_per_worker": 0.25, "num_workers": 2}, 0.5, "object_store", id="one-gpu-two-engines"),
    pytest.param({"engine": "vllm", "gpus_per_worker": 1}, 1.0, "nccl", id="gpus-apart"),
    pytest.param({"engine": "vllm", "gpus_per_worker": 2, "num_workers": 2, "tensor_parallel_size": 2}, 1.0, "nccl", id="tensor-parallel-engines"),
    pytest.param({"engine": "vllm", "gpus_per_worker": 0.5, "num_workers": 2}, 1.0, "object_store", id="engine-fractions-apart"),
]


@pytest.mark.parametrize("rollout, learner_gpus, expected", PLACEMENTS)
def test_auto_picks_by_placement(rollout, learner_gpus, expected):
    cfg = validate_config(experiment(rollout, learner_gpus))
    assert cfg.rollout.weight_sync == "auto"
    assert choose_weight_sync(cfg.rollout, cfg.cluster.learner_gpus) == expected


@pytest.mark.parametrize("rollout, learner_gpus, expected", PLACEMENTS)
def test_what_auto_picks_is_also_accepted_when_written_out(rollout, learner_gpus, expected):
    cfg = validate_config(experiment({**rollout, "weight_sync": expected}, learner_gpus))
    assert choose_weight_sync(cfg.rollout, cfg.cluster.learner_gpus) == expected


def test_an_explicit_choice_is_kept():
    assert choose_weight_sync(RolloutConfig(engine="vllm", gpus_per_worker=1, weight_sync="object_store"), 1.0) == "object_store"


def test_sharing_needs_both_on_the_gpu_and_at_most_one_gpu_in_all():
    assert shares_one_gpu(RolloutConfig(gpus_per_worker=0.5), 0.5)
    assert not shares_one_gpu(RolloutConfig(gpus_per_worker=0.5), 0.0)  # the learner on CPU
    assert not shares_one_gpu(RolloutConfig(gpus_per_worker=0.0), 0.5)  # the engines on CPU
    assert not shares_one_gpu(RolloutConfig(gpus_per_worker=0.5, num_workers=2), 0.5)  # 1.5 GPUs


def test_cpu_defaults_are_unchanged():
    r = validate_config(BASE).rollout
    assert (r.weight_sync, r.sleep_mode, r.vllm_dtype, r.tensor_parallel_size, r.max_model_len) == ("auto", False, "float32", 1, None)
    assert (r.enforce_eager, r.enable_prefix_caching) == (False, True)


GPU_SHARED = {"engine": "vllm", "gpus_per_worker": 0.5}


@pytest.mark.parametrize(
    "rollout, learner_gpus, keys",
    [
        # vLLM-only settings with the hf engine
        ({"weight_sync": "nccl", "gpus_per_worker": 1}, 1.0, ["rollout.weight_sync", "rollout.engine"]),
        ({"weight_sync": "ipc", "gpus_per_worker": 0.5}, 0.5, ["rollout.weight_sync", "rollout.engine"]),
        ({"sleep_mode": True, "gpus_per_worker": 0.5}, 0.5, ["rollout.sleep_mode", "rollout.engine"]),
        ({"tensor_parallel_size": 2, "gpus_per_worker": 2}, 0.0, ["rollout.tensor_parallel_size", "rollout.engine"]),
        # nccl without GPUs on both sides, on one shared GPU, or on GPU fractions
        ({"engine": "vllm", "weight_sync": "nccl"}, 1.0, ["rollout.weight_sync", "rollout.gpus_per_worker", "cluster.learner_gpus"]),
        ({"engine": "vllm", "weight_sync": "nccl", "gpus_per_worker": 1}, 0.0, ["rollout.weight_sync", "cluster.learner_gpus"]),
        ({**GPU_SHARED, "weight_sync": "nccl"}, 0.5, ["rollout.weight_sync", "object_store"]),
        ({**GPU_SHARED, "weight_sync": "nccl", "num_workers": 2}, 1.0, ["rollout.weight_sync", "rollout.gpus_per_worker"]),
        # ipc is not available yet, even on a shared GPU
        ({**GPU_SHARED, "weight_sync": "ipc"}, 0.5, ["rollout.weight_sync", "not available", "object_store"]),
        # sleep mode on CPU, or with rollouts generated during the update
        ({"engine": "vllm", "sleep_mode": True}, 0.0, ["rollout.sleep_mode", "rollout.gpus_per_worker"]),
        ({**GPU_SHARED, "sleep_mode": True, "max_staleness": 1}, 0.5, ["rollout.sleep_mode", "rollout.max_staleness"]),
        # an engine larger than its worker, a context the model does not have
        ({"engine": "vllm", "gpus_per_worker": 1, "tensor_parallel_size": 2}, 0.0, ["rollout.tensor_parallel_size", "rollout.gpus_per_worker"]),
        ({"engine": "vllm", "max_model_len": 100_000}, 0.0, ["rollout.max_model_len", "policy.max_position_embeddings"]),
        ({"engine": "vllm", "max_model_len": 16, "max_new_tokens": 16}, 0.0, ["rollout.max_model_len", "rollout.max_new_tokens"]),
        # values out of range
        ({"engine": "vllm", "vllm_dtype": "int8"}, 0.0, ["rollout.vllm_dtype", "bfloat16"]),
        ({"engine": "vllm", "weight_sync": "gloo"}, 0.0, ["rollout.weight_sync", "object_store"]),
        ({"engine": "vllm", "gpu_memory_utilization": 1.5}, 0.0, ["rollout.gpu_memory_utilization"]),
        ({"engine": "vllm", "gpu_memory_utilization": 0}, 0.0, ["rollout.gpu_memory_utilization"]),
        ({"engine": "vllm", "tensor_parallel_size": 0}, 0.0, ["rollout.tensor_parallel_size"]),
    ],
)
def test_impossible_combinations_name_the_keys(rollout, learner_gpus, keys):
    with pytest.raises(ConfigError) as e:
        validate_config(experiment(rollout, learner_gpus))
    assert all(k in str(e.value) for k in keys), str(e.value)


def test_the_colocated_one_gpu_layout_validates():
    cfg = validate_config(experiment({**GPU_SHARED, "sleep_mode": True, "vllm_dtype": "bfloat16", "gpu_memory_utilization": 0.4, "max_model_len": 128}, 0.5))
    assert cfg.rollout.sleep_mode and choose_weight_sync(cfg.rollout, cfg.cluster.learner_gpus) == "object_store"
