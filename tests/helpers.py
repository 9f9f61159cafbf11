"""Assertion helpers shared by the tests."""

from __future__ import annotations

import numpy as np


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
