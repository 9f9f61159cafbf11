"""Assertion helpers shared by the tests."""

from __future__ import annotations

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
