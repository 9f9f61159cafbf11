"""Every operator on every place (tests/engines.py): NumPy compiled and NumPy path, array-api-strict,
tropic.autodiff and torch tensors (CPU; CuPy and torch CUDA where a GPU is present).

Values and winners equal the NumPy path's bitwise, ties, infinities and NaN included; on the places
with gradients, the gradients of every input equal tropic.autodiff's on NumPy arrays bitwise (the
sums are of dyadic values, exact in any order). A new operator is tested everywhere by adding a case
here.
"""

from __future__ import annotations

import numpy as np
import pytest

import tropic
import tropic.autodiff as ad
from tropic.backends.numpy import compiled

from .helpers import assert_identical, dyadic, sample

# name -> (function of the inputs, input shapes, which inputs get gradients)
CASES = {
    "maxplus_matmul": (lambda a, b: tropic.maxplus_matmul(a, b, return_indices=True), [(5, 7), (7, 4)]),
    "minplus_matmul_batch": (
        lambda a, b: tropic.minplus_matmul(a, b, return_indices=True),
        [(2, 5, 7), (7, 4)],
    ),
    "maxplus_matmul_vector": (
        lambda a, b: tropic.maxplus_matmul(a, b, return_indices=True),
        [(7,), (2, 7, 4)],
    ),
    "maxplus_matmul_bias": (
        lambda a, b, c: tropic.maxplus_matmul(a, b, bias=c, return_indices=True),
        [(5, 7), (7, 4), (4,)],
    ),
    "minplus_matmul_bias": (
        lambda a, b, c: tropic.minplus_matmul(a, b, bias=c, return_indices=True),
        [(3, 5, 7), (7, 4), (4,)],
    ),
    "dilation": (lambda f, s: tropic.dilation(f, s, return_indices=True), [(2, 6, 7), (3, 2)]),
    "erosion_reflect": (
        lambda f, s: tropic.erosion(f, s, mode="reflect", return_indices=True),
        [(6, 7), (3, 3)],
    ),
    "dilation_per_channel": (
        lambda f, s: tropic.dilation(f, s, return_indices=True),
        [(2, 3, 6, 5), (3, 3, 2)],
    ),
    "erosion_footprint": (
        lambda f, s: tropic.erosion(f, s, footprint=[[1, 0, 1], [1, 1, 0]], mode="wrap", return_indices=True),
        [(2, 6, 7), (2, 3)],
    ),
    "dilation_flat": (
        lambda f: tropic.dilation(f, size=(3, 2), mode="nearest", return_indices=True),
        [(2, 6, 7)],
    ),
    "maxplus_conv2d": (
        lambda x, w: tropic.maxplus_conv2d(x, w, stride=2, padding=1, return_indices=True),
        [(2, 4, 7, 6), (3, 4, 3, 2)],
    ),
    "minplus_conv2d_groups": (
        lambda x, w: tropic.minplus_conv2d(x, w, groups=2, return_indices=True),
        [(2, 4, 6, 6), (6, 2, 2, 3)],
    ),
    "maxplus_conv3d": (
        lambda x, w: tropic.maxplus_conv3d(x, w, stride=(2, 1, 2), padding=1, return_indices=True),
        [(2, 4, 5, 6, 5), (3, 4, 3, 2, 3)],
    ),
    "minplus_conv3d_groups": (
        lambda x, w: tropic.minplus_conv3d(x, w, groups=2, padding=(1, 0, 0), return_indices=True),
        [(1, 4, 4, 5, 4), (6, 2, 2, 3, 2)],
    ),
    "maxplus_conv1d": (
        lambda x, w: tropic.maxplus_conv1d(x, w, stride=2, padding=1, return_indices=True),
        [(2, 4, 9), (3, 4, 3)],
    ),
    "minplus_conv1d_groups": (
        lambda x, w: tropic.minplus_conv1d(x, w, groups=2, return_indices=True),
        [(2, 4, 7), (6, 2, 2)],
    ),
    "maxout": (lambda x: tropic.maxout(x, 3, axis=1, return_indices=True), [(4, 6, 5)]),
    "maximum": (lambda a, b: tropic.maximum(a, b, return_indices=True), [(4, 5), (5,)]),
    "minimum": (lambda a, b: tropic.minimum(a, b, return_indices=True), [(4, 1), (4, 5)]),
}


def inputs(case, dtype=np.float64, specials=True):
    rng = np.random.default_rng(sorted(CASES).index(case))
    return [sample(rng, shape, dtype, specials) for shape in CASES[case][1]]


def numpy_path(fn, arrays):
    enabled = compiled.enabled
    compiled.enabled = False
    try:
        return fn(*arrays)
    finally:
        compiled.enabled = enabled


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_and_winners(place, case):
    fn, _ = CASES[case]
    arrays = inputs(case)
    expected = numpy_path(fn, arrays)
    actual = fn(*(place.array(x) for x in arrays))
    for mine, reference in zip(actual, expected, strict=True):
        assert_identical(place.numpy(mine), reference)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float16_values_and_winners(float16_place, case):
    place = float16_place
    fn, _ = CASES[case]
    arrays = inputs(case, np.float16)
    expected = numpy_path(fn, arrays)
    actual = fn(*(place.array(x) for x in arrays))
    for mine, reference in zip(actual, expected, strict=True):
        assert_identical(place.numpy(mine), reference)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients(gradient_place, case):
    place = gradient_place
    fn, _ = CASES[case]
    arrays = inputs(case, specials=False)
    leaves = [ad.Tensor(x, requires_grad=True) for x in arrays]
    values, _ = fn(*leaves)
    g = dyadic(np.random.default_rng(1), values.shape, np.float64)
    values.backward(g)
    expected = [t.grad for t in leaves]
    mine = [place.leaf(x) for x in arrays]
    values, _ = fn(*mine)
    for actual, reference in zip(place.backward(values, g, mine), expected, strict=True):
        assert_identical(actual, reference)


def test_the_table_lists_every_engine_and_backend():
    """A new backend or engine gets a row in tests/engines.py, and so every test above."""
    from tropic.core import dispatch, engines

    from .engines import PLACES

    names = {p.name for p in PLACES}
    assert {"numpy-compiled", "numpy-path", "array-api-strict", "autodiff", "torch-cpu"} <= names
    for backend in dispatch._BACKEND_MODULES:
        assert any(backend in n for n in names), backend
    for engine in ("autodiff", "torch"):
        assert any(n.startswith(engine) for n in names), engine
    assert engines.engine_of(np.zeros(1)) is None
