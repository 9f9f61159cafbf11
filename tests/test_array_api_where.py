"""``tropic.core._array_api.where``: NumPy's ``where`` bit for bit, on its branch-free path too."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tropic.core._array_api import _BRANCH_FREE_MIN, where

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8]


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    def raw(x):
        return np.ascontiguousarray(x).reshape(-1).view(np.uint8)

    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(raw(a), raw(b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shapes",
    [
        ((64, 256), (256,), (64, 256)),  # a bias row against a product
        ((64, 256), (), (64, 256)),  # a 0-d constant (the bias index, a zero)
        ((64, 1), (1, 256), (64, 256)),
        ((1, 256), (64, 256), (64, 1)),  # x2 stretches the condition's other axis
        ((), (70, 70), (70, 70)),  # a 0-d condition
        ((3, 40, 40), (40, 40), ()),
    ],
)
def test_branch_free_path_gives_numpy_bits(dtype, shapes):
    rng = np.random.default_rng(len(shapes[1]) * 10 + len(shapes[2]))
    condition = np.asarray(rng.random(shapes[0]) < 0.5)
    x1 = np.asarray(rng.standard_normal(shapes[1]) * 50).astype(dtype)
    x2 = np.asarray(rng.standard_normal(shapes[2]) * 50).astype(dtype)
    if np.issubdtype(dtype, np.floating) and x1.size >= 4:
        x1.flat[:4] = [np.nan, -0.0, np.inf, -np.inf]  # every special value keeps its bits
    assert np.broadcast(condition, x1, x2).size >= _BRANCH_FREE_MIN  # the fast path runs
    assert _bits_equal(where(xp, condition, x1, x2), np.where(condition, x1, x2))


@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=80),
    data=st.data(),
)
def test_any_shapes_and_values(shapes, data):
    """Shapes that broadcast together, any float32 bits (NaN payloads included)."""
    condition_shape, x1_shape, x2_shape = shapes.input_shapes
    condition = data.draw(hnp.arrays(np.bool_, condition_shape), label="condition")
    x1 = data.draw(hnp.arrays(np.float32, x1_shape), label="x1")
    x2 = data.draw(hnp.arrays(np.float32, x2_shape), label="x2")
    assert _bits_equal(where(xp, condition, x1, x2), np.where(condition, x1, x2))


def test_mixed_dtypes_and_other_namespaces_use_xp_where():
    condition = np.ones((80, 80), dtype=bool)
    mixed = where(xp, condition, np.zeros((80, 80), np.float32), np.ones((80, 80), np.float64))
    assert mixed.dtype == np.float64  # promotion, as xp.where
    strict = pytest.importorskip("array_api_strict")
    s = where(strict, strict.asarray(condition), strict.zeros((80, 80)), strict.ones((80, 80)))
    assert type(s).__module__.startswith("array_api_strict")
