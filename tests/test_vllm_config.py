"""Config keys of the vLLM engine and of truncated importance sampling: accepted values and clear errors."""

from __future__ import annotations

import importlib.util

import pytest

from rl.config import ConfigError, load_config


def test_vllm_engine_and_tis_cap_are_accepted():
    cfg = load_config("experiments/quickstart.yaml", ["rollout.engine=vllm", "rollout.vllm_kv_cache_gib=2", "algorithm.tis_cap=2.0"])
    assert cfg.rollout.engine == "vllm" and cfg.rollout.vllm_kv_cache_gib == 2 and cfg.algorithm.tis_cap == 2.0
    assert load_config("experiments/quickstart.yaml").algorithm.tis_cap is None  # off by default


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["rollout.engine=vllm", "policy.head_dim=48"], ["policy.head_dim", "rollout.engine"]),
        (["algorithm.tis_cap=0.5"], ["algorithm.tis_cap"]),
        (["rollout.engine=sglang"], ["rollout.engine"]),
    ],
)
def test_bad_values_name_the_key(overrides, names):
    with pytest.raises(ConfigError) as e:
        load_config("experiments/quickstart.yaml", overrides)
    assert all(n in str(e.value) for n in names), str(e.value)


def test_a_model_folder_is_not_checked_against_the_vllm_head_sizes(tmp_path):
    # vLLM reads head_dim from the folder's config; the policy.* size keys are unused then
    cfg = load_config("experiments/quickstart.yaml", ["rollout.engine=vllm", "policy.head_dim=48", f"policy.path={tmp_path}"])
    assert cfg.policy.path == str(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here: the missing-vllm error cannot happen")
def test_selecting_vllm_without_it_installed_is_a_clear_error(tmp_path):
    from rollout.engines.vllm import VLLMEngine  # the module itself imports without vllm

    with pytest.raises(RuntimeError, match=r"rollout.engine=vllm: vllm is not importable .*pip install -e '\.\[vllm\]'"):
        VLLMEngine(tmp_path, eos_token_id=2)


# ----------------------------------------------------------------------------- engine options from the YAML


def options(overrides: list[str], learner_gpus: float = 0.0) -> dict:
    from rollout.engines.vllm_options import vllm_engine_options

    cfg = load_config("experiments/quickstart.yaml", ["rollout.engine=vllm", *overrides])
    return vllm_engine_options(cfg.rollout, max_position_embeddings=cfg.policy.max_position_embeddings, seed=cfg.run.seed, learner_gpus=learner_gpus)


def arguments(opts: dict, cuda: bool) -> dict:
    from rollout.engines.vllm_options import llm_arguments

    return llm_arguments(cuda=cuda, **{k: v for k, v in opts.items() if k != "kv_cache_gib"})


def test_a_cpu_run_that_sets_nothing_builds_the_engine_it_always_did():
    opts = options([])
    assert opts["kv_cache_gib"] == 1 and opts["max_model_len"] == 64 and opts["weight_transfer"] is None
    assert arguments(opts, cuda=False) == {
        "skip_tokenizer_init": True,
        "dtype": "float32",
        "max_model_len": 64,
        "logprobs_mode": "processed_logprobs",
        "enforce_eager": False,
        "seed": 0,
    }


def test_every_option_is_a_keyword_of_the_engine():
    import inspect

    from rollout.engines.vllm import VLLMEngine  # imports without starting (or importing) vLLM

    accepted = set(inspect.signature(VLLMEngine.__init__).parameters)
    assert set(options([])) <= accepted


def test_gpu_settings_reach_vllm_on_cuda_only():
    opts = options(
        ["rollout.gpus_per_worker=0.5", "rollout.sleep_mode=true", "rollout.gpu_memory_utilization=0.4", "rollout.vllm_dtype=bfloat16", "rollout.max_model_len=48"],
        learner_gpus=0.5,
    )
    args = arguments(opts, cuda=True)
    assert args["gpu_memory_utilization"] == 0.4 and args["enable_sleep_mode"] is True
    assert args["dtype"] == "bfloat16" and args["max_model_len"] == 48
    assert "weight_transfer_config" not in args  # one GPU shared: auto hands over through the object store
    assert "tensor_parallel_size" not in args and "enable_prefix_caching" not in args  # vLLM's defaults
    with pytest.raises(RuntimeError, match="rollout.sleep_mode needs the engine on a CUDA GPU"):
        arguments(opts, cuda=False)


def test_nondefault_engine_settings_are_passed_and_defaults_are_left_to_vllm():
    opts = options(["rollout.gpus_per_worker=2", "rollout.tensor_parallel_size=2", "rollout.enable_prefix_caching=false", "rollout.enforce_eager=true"], learner_gpus=1)
    args = arguments(opts, cuda=True)
    assert args["tensor_parallel_size"] == 2 and args["enable_prefix_caching"] is False and args["enforce_eager"] is True
    assert args["weight_transfer_config"] == {"backend": "nccl"}  # GPUs apart: auto is nccl
    assert "enable_sleep_mode" not in args
    assert "gpu_memory_utilization" not in arguments(opts, cuda=False)
