"""Assertion helpers shared by the tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from tropic.core.semiring import MAX_PLUS, MIN_PLUS


def to_numpy(x) -> np.ndarray:
    """Bring any test array back to NumPy for comparison (array-api-strict supports DLPack)."""
    if isinstance(x, np.ndarray):
        return x
    return np.from_dlpack(x)


def assert_identical(actual, expected) -> None:
    """Bitwise equality (so ``-0.0 != 0.0``) of shapes, dtypes and values; NaN matches any NaN."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if actual.dtype.kind == "f":
        nan = np.isnan(actual)
        np.testing.assert_array_equal(nan, np.isnan(expected), err_msg="NaN positions differ")
        bits = f"u{actual.dtype.itemsize}"
        actual, expected = actual[~nan].view(bits), expected[~nan].view(bits)
    np.testing.assert_array_equal(actual, expected, strict=True)


# Small integer values make ties common; the infinities and NaN exercise the absorbing and NaN rules.
INTS = st.integers(-3, 3).map(float)
SPECIAL = st.one_of(INTS, st.sampled_from([-np.inf, np.inf, np.nan]))
SPECIAL_NO_NAN = st.one_of(INTS, st.sampled_from([-np.inf, np.inf]))
SEMIRINGS = pytest.mark.parametrize("semiring", [MAX_PLUS, MIN_PLUS], ids=["maxplus", "minplus"])


def sample(rng: np.random.Generator, shape, dtype=np.float64, specials: bool = True) -> np.ndarray:
    """Small integers (many ties), with a few infinities and NaN when ``specials``."""
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    if specials and x.size:
        hit = rng.random(shape) < 0.1
        x[hit] = rng.choice([-np.inf, np.inf, np.nan], size=int(hit.sum()))
    return x


def tie_heavy(rng: np.random.Generator, shape, dtype, nan: float = 0.005) -> np.ndarray:
    """Small integers (ties everywhere) with infinities of both signs, signed zeros and a ``nan``
    share of NaN (0: none, and no draw for it)."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    for value, share in ((np.inf, 0.05), (-np.inf, 0.05), (-0.0, 0.1), (np.nan, nan)):
        if share:
            x[rng.random(shape) < share] = value
    return x


def dyadic(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Gradients whose float64 sums are exact in any order (so every summation order agrees)."""
    return (rng.integers(-64, 65, size=shape) / 8).astype(dtype)


def order_revealing(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Gradients of +-1 and +-2**60: their float64 sums depend on the order they are taken in
    (2**60 + 1 - 2**60 is 0, 2**60 - 2**60 + 1 is 1), so a scatter that sums in another order than
    the reference shows in the result."""
    return (rng.choice([-1.0, 1.0], shape) * rng.choice([1.0, 2.0**60], shape)).astype(dtype)


def hsettings(max_examples):
    """Hypothesis settings for these tests (the ``xp`` fixture only returns a module: safe to reuse).

    The explain phase is left out: on a failing array-api-strict example it can take minutes.
    """
    return settings(
        max_examples=max_examples,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )


def strict():
    return pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")


def expected_index_dtype(n_candidates):
    """The smallest signed integer dtype holding -1 .. n_candidates - 1 (the documented rule)."""
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        if n_candidates - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------- GPU tests

REQUIRE_GPU = os.environ.get("TROPIC_REQUIRE_GPU") == "1"


def skip_gpu_test(reason: str):
    """Skip a GPU test that cannot run here, or fail it when TROPIC_REQUIRE_GPU=1 (a GPU machine,
    where a skip would hide a broken setup)."""
    if REQUIRE_GPU:
        pytest.fail(f"TROPIC_REQUIRE_GPU=1 but the GPU tests cannot run: {reason}")
    pytest.skip(reason)


def gpu_unavailable() -> str | None:
    """Why the CuPy GPU tests cannot run here, or None."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver or device
        return f"no usable CUDA device ({type(exc).__name__}: {exc})"
    return None if count > 0 else "no CUDA device"


def require_gpu():
    """CuPy with a device and the backend loaded; else skip, or fail when TROPIC_REQUIRE_GPU=1."""
    reason = gpu_unavailable()
    if reason is not None:
        skip_gpu_test(reason)
    import cupy

    from tropic.core.dispatch import backend_status, load_backend

    load_backend("cupy")
    status = backend_status()["cupy"]
    assert status == "loaded", f"the CuPy backend did not load: {status}"
    return cupy
