"""Shared fixtures: the array libraries every operator is tested on, and the hypothesis profiles."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from .engines import PLACES
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


def _places(capability: str | None = None) -> list[str]:
    return [p.name for p in PLACES if capability is None or getattr(p, capability)]


def _enter(name: str, monkeypatch):
    return next(p for p in PLACES if p.name == name).enter(monkeypatch)


@pytest.fixture(params=_places())
def place(request, monkeypatch):
    """Each array library and engine that runs tropic's operators (tests/engines.py's table): a test
    written once runs on all of them (skipped only where an optional library or a GPU is missing)."""
    return _enter(request.param, monkeypatch)


@pytest.fixture(params=_places("gradients"))
def gradient_place(request, monkeypatch):
    """The places whose results are differentiable (the capability table's ``gradients``)."""
    return _enter(request.param, monkeypatch)


@pytest.fixture(params=_places("float16"))
def float16_place(request, monkeypatch):
    """The places that hold float16 arrays (the capability table's ``float16``)."""
    return _enter(request.param, monkeypatch)
