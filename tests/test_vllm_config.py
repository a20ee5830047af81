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
