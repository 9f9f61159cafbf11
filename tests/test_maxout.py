"""Tests of ``maxout`` and ``maxout_vjp``.

References: NumPy ``reshape`` + ``max`` / ``argmax`` over groups of consecutive entries, the core
reference kernel (bitwise), finite differences, and torch autograd of ``unflatten`` + ``max``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tropic
from tropic.core.maxout import maxout_reference

from .helpers import SPECIAL, assert_identical, expected_index_dtype, hsettings, strict, to_numpy


def grouped(x, pieces, axis):
    """``x`` with ``axis`` moved last and split into (groups, pieces): groups of consecutive entries."""
    moved = np.moveaxis(x, axis, -1)
    return moved.reshape(moved.shape[:-1] + (moved.shape[-1] // pieces, pieces))


def numpy_maxout(x, pieces, axis):
    """reshape + max / argmax (first occurrence, first NaN), index -1 for an all -inf group."""
    groups = grouped(x, pieces, axis)
    values, index = groups.max(axis=-1), groups.argmax(axis=-1)
    index = np.where(values == -np.inf, -1, index).astype(expected_index_dtype(pieces))
    return np.moveaxis(values, -1, axis), np.moveaxis(index, -1, axis)


CASES = [
    ((12,), 3, -1),
    ((12,), 12, 0),
    ((4, 6), 2, -1),
    ((4, 6), 2, 0),
    ((4, 6), 3, 1),
    ((2, 6, 5), 3, 1),
    ((2, 6, 5), 5, -1),
    ((2, 3, 8), 4, -1),
    ((2, 3, 8), 2, -3),
    ((3, 4, 2, 6), 2, 2),
    ((2, 300), 150, 1),  # int16 winners
]


@pytest.mark.parametrize(("shape", "pieces", "axis"), CASES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_matches_numpy_reshape_max(shape, pieces, axis, dtype):
    """Values, winners, shapes and index dtype equal reshape + max/argmax, along any axis."""
    rng = np.random.default_rng(abs(hash((shape, pieces, axis))) % 2**32)
    x = rng.standard_normal(shape).astype(dtype)
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    expected_y, expected_index = numpy_maxout(x, pieces, axis)
    assert_identical(y, expected_y)
    assert_identical(index, expected_index)
    assert_identical(tropic.maxout(x, pieces, axis=axis), y)


@pytest.mark.parametrize(("shape", "pieces", "axis"), CASES)
def test_ties_pick_the_lowest_piece(shape, pieces, axis):
    """Integer data in a tiny range (many ties): the lowest piece wins, as np.argmax picks."""
    rng = np.random.default_rng(1)
    x = rng.integers(-1, 2, shape).astype(np.float32)
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    expected_y, expected_index = numpy_maxout(x, pieces, axis)
    assert_identical(y, expected_y)
    assert_identical(index, expected_index)


def test_ties_by_hand():
    """A small worked example: ties, an all -inf group, +inf, and NaN groups."""
    x = np.array([2.0, 2.0, -np.inf, -np.inf, -np.inf, 1.0, np.inf, np.inf, 0.0, np.nan, np.nan, np.inf])
    y, index = tropic.maxout(x, 2, return_indices=True)
    assert_identical(y, np.array([2.0, -np.inf, 1.0, np.inf, np.nan, np.nan]))
    assert_identical(index, np.array([0, -1, 1, 0, 1, 0], np.int8))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_pieces_one_is_identity(axis, xp):
    """pieces = 1: y == x; the winner is 0 except for -inf entries (-1)."""
    x = np.array([[1.0, -np.inf, np.nan], [np.inf, 0.0, -2.5]])
    y, index = tropic.maxout(xp.asarray(x), 1, axis, return_indices=True)
    assert_identical(y, x)
    assert_identical(index, np.where(x == -np.inf, -1, 0).astype(np.int8))


@st.composite
def maxout_problems(draw, elements, dtypes=(np.float32, np.float64)):
    """x (1-3 dims, sides <= 6), pieces dividing x.shape[axis], and axis (negative or not)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    pieces = draw(st.integers(1, 3))
    shape = list(shape)
    shape[axis] = pieces * draw(st.integers(1, 2))
    x = draw(hnp.arrays(draw(st.sampled_from(dtypes)), tuple(shape), elements=elements))
    return x, pieces, axis


@hsettings(60)
@given(problem=maxout_problems(SPECIAL))
def test_numpy_backend_matches_reference_bitwise(problem):
    """±inf, NaN, -inf groups, ties: the NumPy kernel equals maxout_reference and reshape + max."""
    x, pieces, axis = problem
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    ref_y, ref_index = maxout_reference(np, grouped(x, pieces, axis))
    assert_identical(y, np.moveaxis(ref_y, -1, axis))
    assert_identical(index, np.moveaxis(ref_index, -1, axis))
    expected_y, expected_index = numpy_maxout(x, pieces, axis)
    assert_identical(y, expected_y)
    assert_identical(index, expected_index)


@hsettings(40)
@given(problem=maxout_problems(SPECIAL))
def test_numpy_backend_matches_array_api_strict(problem):
    """The public call on array_api_strict arrays (reference path) gives the NumPy result bitwise."""
    xps = strict()
    x, pieces, axis = problem
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    s_y, s_index = tropic.maxout(xps.asarray(x), pieces, axis, return_indices=True)
    assert isinstance(s_y, type(xps.asarray(0.0)))
    assert_identical(s_y, y)
    assert_identical(s_index, index)


@hsettings(40)
@given(problem=maxout_problems(SPECIAL))
def test_nan_and_all_minus_inf_groups(problem):
    """A group with a NaN gives NaN and its first NaN as winner; an all -inf group gives -inf and -1."""
    x, pieces, axis = problem
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    groups = np.moveaxis(grouped(x, pieces, axis), -2, axis % x.ndim)  # (..., groups at axis, ..., pieces)
    has_nan = np.isnan(groups).any(axis=-1)
    np.testing.assert_array_equal(np.isnan(y), has_nan)
    np.testing.assert_array_equal(index[has_nan], np.argmax(np.isnan(groups), axis=-1)[has_nan])
    all_zero = (groups == -np.inf).all(axis=-1)
    np.testing.assert_array_equal(index == -1, all_zero)
    assert (y[all_zero] == -np.inf).all()


@hsettings(40)
@given(problem=maxout_problems(st.integers(-4, 4).map(float)), data=st.data())
def test_translation_and_bound(problem, data, xp):
    """maxout(x + t) == maxout(x) + t with the same winners, and every output bounds its group."""
    x, pieces, axis = problem
    t = data.draw(st.integers(-3, 3).map(float))
    y, index = tropic.maxout(xp.asarray(x), pieces, axis, return_indices=True)
    y_t, index_t = tropic.maxout(xp.asarray(x + t), pieces, axis, return_indices=True)
    np.testing.assert_array_equal(to_numpy(y_t), to_numpy(y) + t)
    assert_identical(index_t, index)
    groups = np.moveaxis(grouped(x, pieces, axis), -2, axis % x.ndim)
    assert (groups <= to_numpy(y)[..., None]).all()


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------

GRAD_CASES = [((12,), 3, 0), ((4, 6), 2, -1), ((4, 6), 2, 0), ((2, 6, 3), 3, 1), ((2, 3, 4), 4, -1)]


@pytest.mark.parametrize(("shape", "pieces", "axis"), GRAD_CASES)
def test_vjp_matches_finite_differences(shape, pieces, axis):
    """maxout_vjp equals central finite differences (float64, unique winners)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    top2 = np.sort(grouped(x, pieces, axis), axis=-1)[..., -2:]
    assert pieces == 1 or (top2[..., 1] - top2[..., 0]).min() > 1e-4  # precondition: unique winners
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    g = rng.standard_normal(y.shape)
    grad = tropic.maxout_vjp(g, index, x.shape, pieces, axis)
    eps = 1e-6
    fd = np.zeros_like(x)
    for pos in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[pos] = eps
        plus = np.sum(g * tropic.maxout(x + step, pieces, axis))
        minus = np.sum(g * tropic.maxout(x - step, pieces, axis))
        fd[pos] = (plus - minus) / (2 * eps)
    assert grad.shape == x.shape and grad.dtype == g.dtype
    np.testing.assert_allclose(grad, fd, atol=1e-6)


@pytest.mark.parametrize(("shape", "pieces", "axis"), GRAD_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vjp_matches_torch_autograd(shape, pieces, axis, dtype):
    """maxout_vjp equals torch autograd of unflatten + max (random data: no ties)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    grad = tropic.maxout_vjp(g, index, x.shape, pieces, axis)

    tx = torch.tensor(x, requires_grad=True)
    ax = axis % x.ndim
    ty = tx.unflatten(ax, (x.shape[ax] // pieces, pieces)).max(dim=ax + 1).values
    assert_identical(y, ty.detach().numpy())
    ty.backward(torch.tensor(g))
    assert_identical(grad, tx.grad.numpy())


@hsettings(40)
@given(problem=maxout_problems(SPECIAL), data=st.data())
def test_numpy_vjp_matches_array_api_strict(problem, data):
    """maxout_vjp on NumPy equals it on array_api_strict bitwise; each gradient entry lands on its
    group's winner, and groups with index -1 (all -inf) send nothing."""
    xps = strict()
    x, pieces, axis = problem
    y, index = tropic.maxout(x, pieces, axis, return_indices=True)
    g = data.draw(hnp.arrays(y.dtype, y.shape, elements=st.integers(-5, 5).map(float)))
    grad = tropic.maxout_vjp(g, index, x.shape, pieces, axis)
    assert_identical(tropic.maxout_vjp(xps.asarray(g), xps.asarray(index), x.shape, pieces, axis), grad)
    # Independent scatter: g[..., j, ...] goes to x[..., j * pieces + index, ...].
    expected = np.zeros_like(grouped(x, pieces, axis))
    moved_g, moved_index = np.moveaxis(g, axis, -1), np.moveaxis(index, axis, -1)
    for pos in np.ndindex(*moved_g.shape):
        if moved_index[pos] >= 0:
            expected[pos + (moved_index[pos],)] = moved_g[pos]
    expected = np.moveaxis(expected.reshape(np.moveaxis(x, axis, -1).shape), -1, axis)
    assert_identical(grad, expected)


def test_vjp_inputs_not_modified():
    """Neither maxout nor maxout_vjp modifies what the caller owns."""
    x = np.array([[1.0, 3.0, -np.inf, -np.inf], [np.nan, 0.0, 2.0, 2.0]])
    x0 = x.copy()
    y, index = tropic.maxout(x, 2, return_indices=True)
    g = np.ones_like(y)
    index0 = index.copy()
    tropic.maxout_vjp(g, index, x.shape, 2)
    assert_identical(x, x0)
    assert_identical(index, index0)
    assert_identical(g, np.ones_like(y))


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    """Bad pieces, axis and dtype give errors that name the argument and what was expected."""
    x = np.ones((4, 6))
    with pytest.raises(ValueError, match=r"x\.shape\[1\] = 6 must be a multiple of pieces = 4"):
        tropic.maxout(x, 4)
    with pytest.raises(ValueError, match=r"x\.shape\[0\] = 4 must be a multiple of pieces = 3"):
        tropic.maxout(x, 3, axis=0)
    for pieces in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match=r"^pieces must be a positive int"):
            tropic.maxout(x, pieces)
    for axis in (2, -3, 1.0):
        with pytest.raises(ValueError, match=r"^axis must be an int in \[-2, 2\)"):
            tropic.maxout(x, 2, axis=axis)
    with pytest.raises(TypeError, match=r"^x must have a real floating-point dtype"):
        tropic.maxout(x.astype(np.int32), 2)
    with pytest.raises(TypeError, match=r"^x must be an array"):
        tropic.maxout([1.0, 2.0], 2)


def test_vjp_shape_errors():
    """maxout_vjp refuses gradients/indices of the wrong shape and pieces < 1, naming the argument."""
    x = np.ones((4, 6))
    y, index = tropic.maxout(x, 2, return_indices=True)
    with pytest.raises(ValueError, match=r"^grad must have the output shape \(4, 3\)"):
        tropic.maxout_vjp(np.ones((3, 4)), index, x.shape, 2)
    with pytest.raises(ValueError, match=r"^indices must have the output shape \(4, 3\)"):
        tropic.maxout_vjp(y, index[:, :2], x.shape, 2)
    with pytest.raises(ValueError, match=r"^pieces must be a positive int"):
        tropic.maxout_vjp(y, index, x.shape, 0)


def test_vjp_length_not_multiple_of_pieces():
    """maxout_vjp with x_shape[axis] not a multiple of pieces: an error naming pieces, not a crash."""
    with pytest.raises(ValueError, match=r"pieces"):
        tropic.maxout_vjp(np.ones((4, 2)), np.zeros((4, 2), np.int8), (4, 5), 2)


def test_vjp_axis_out_of_range():
    """maxout_vjp with an axis outside the shape is refused (not wrapped round to another axis)."""
    x = np.ones((4, 6))
    y, index = tropic.maxout(x, 2, return_indices=True)
    with pytest.raises(ValueError, match=r"axis"):
        tropic.maxout_vjp(y, index, x.shape, 2, axis=3)
