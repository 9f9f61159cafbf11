"""Shared fixtures: the array libraries every operator is tested on, and the hypothesis profiles."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from .helpers import strict

# CI: fixed seed, no example database, so a run is reproducible; locally: the default profile.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(params=["numpy", "array_api_strict"])
def xp(request):
    """The namespace of the arrays under test: NumPy (fast backend) or array-api-strict (reference)."""
    if request.param == "numpy":
        return np
    return strict()


@pytest.fixture(params=["compiled", "numpy-path"])
def cpu_path(request, monkeypatch):
    """Run a test on the compiled CPU kernels and again on the pure NumPy path.

    Without a built extension the compiled run is skipped, except on CI (``CI`` set), where the
    README's install must have built it.
    """
    from tropic.backends.numpy import compiled

    if request.param == "compiled" and not compiled.available():
        if os.environ.get("CI"):
            pytest.fail(f"the compiled kernels must be built on CI: {compiled.status()}")
        pytest.skip(f"compiled kernels not built (optional): {compiled.status()}")
    monkeypatch.setattr(compiled, "enabled", request.param == "compiled")
    return request.param
