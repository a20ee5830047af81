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
