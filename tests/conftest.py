"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_session(request):
    """A fresh embedded Ray instance per test module (`RAY_CPUS` in the module sets its CPUs, default 2)."""
    import ray

    ray.init(address="local", num_cpus=getattr(request.module, "RAY_CPUS", 2), include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def no_process_group_outlives_its_module():
    """An in-process vLLM engine initialises torch.distributed's default process group and leaves it
    behind; a later module's single-process code would then run as rank 0 of that group. Torn down
    after the module's own fixtures (its engine), so the module itself is not disturbed."""
    yield
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if "vllm" in sys.modules:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
