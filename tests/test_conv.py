"""Tests of the tropical 2-D convolutions ``maxplus_conv2d`` / ``minplus_conv2d`` and ``conv2d_vjp``.

References: a naive loop over output positions written here, an ``unfold + max`` formula in NumPy,
torch autograd of the same formula, finite differences, and the core reference kernel (bitwise).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tropic
from tropic.core.conv import ConvGeometry, conv2d_reference, conv2d_vjp_reference
from tropic.core.semiring import MAX_PLUS, MIN_PLUS

from .helpers import (
    SEMIRINGS,
    SPECIAL,
    SPECIAL_NO_NAN,
    assert_identical,
    expected_index_dtype,
    hsettings,
    strict,
    to_numpy,
)

# Every test runs on the compiled kernels and on the NumPy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_path")

OPS = {MAX_PLUS: tropic.maxplus_conv2d, MIN_PLUS: tropic.minplus_conv2d}


def as_pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def naive_conv2d(x, w, stride, padding, groups, semiring):
    """Explicit loops over output positions and candidates ``(c, u, v)`` in flat order.

    The input is padded with the tropical zero; the zero absorbs (unless the other operand is NaN);
    the first strictly better candidate wins, the first NaN candidate wins for good; an output with
    only zero candidates keeps the zero and index -1.
    """
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(padding)
    dtype = np.result_type(x, w)
    x, w = x.astype(dtype), w.astype(dtype)
    zero = dtype.type(semiring.zero)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=zero)
    B, _, Hp, Wp = padded.shape
    C_out, C_group, kh, kw = w.shape
    H_out, W_out = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    y = np.full((B, C_out, H_out, W_out), zero, dtype)
    index = np.full(y.shape, -1, expected_index_dtype(C_group * kh * kw))
    for b, o, i, j in np.ndindex(*y.shape):
        first_channel = (o // (C_out // groups)) * C_group
        best, winner = zero, -1
        for c in range(C_group):
            for u in range(kh):
                for v in range(kw):
                    xv, wv = padded[b, first_channel + c, i * sh + u, j * sw + v], w[o, c, u, v]
                    if (xv == zero and not np.isnan(wv)) or (wv == zero and not np.isnan(xv)):
                        value = zero
                    else:
                        value = xv + wv
                    if np.isnan(value):
                        best, winner = value, (c * kh + u) * kw + v
                        break
                    if value > best if semiring.maximises else value < best:
                        best, winner = value, (c * kh + u) * kw + v
                else:
                    continue
                break
            if np.isnan(best):
                break
        y[b, o, i, j], index[b, o, i, j] = best, winner
    return y, index


def unfold_candidates(x, w, stride, padding, groups, semiring):
    """All candidate sums ``(B, Cout, H_out, W_out, Cin/groups * kh * kw)`` of finite data (unfold)."""
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(padding)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=semiring.zero)
    C_out, C_group, kh, kw = w.shape
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    B, C_in, H_out, W_out = windows.shape[:4]
    windows = windows.reshape(B, groups, 1, C_group, H_out, W_out, kh, kw)
    w8 = w.reshape(1, groups, C_out // groups, C_group, 1, 1, kh, kw)
    sums = (windows + w8).transpose(0, 1, 2, 4, 5, 3, 6, 7)  # (..., H_out, W_out, c, u, v)
    return sums.reshape(B, C_out, H_out, W_out, C_group * kh * kw)


def reference_call(semiring, x, w, stride=1, padding=0, groups=1):
    dtype = np.result_type(x, w)
    geometry = ConvGeometry(x.shape, w.shape, stride, padding, groups)
    return conv2d_reference(np, semiring, x.astype(dtype), w.astype(dtype), geometry)


# --------------------------------------------------------------------------------------------------
# 1. Against a naive loop, the core reference and array_api_strict
# --------------------------------------------------------------------------------------------------


@SEMIRINGS
@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
@pytest.mark.parametrize("padding", [0, 1, (1, 2)])
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_naive_loops(semiring, stride, padding, groups, dtype):
    """Values, flat (c, u, v) winners with lowest-index ties, index dtype and output shape equal the
    naive loop, for a non-square kernel, strides, paddings and groups."""
    rng = np.random.default_rng(groups * 100 + hash((stride, padding)) % 97)
    x = rng.integers(-2, 3, (2, 4, 5, 6)).astype(dtype)  # tiny range: many ties
    w = rng.integers(-2, 3, (4, 4 // groups, 2, 3)).astype(dtype)
    y, index = OPS[semiring](x, w, stride, padding, groups, return_indices=True)
    expected_y, expected_index = naive_conv2d(x, w, stride, padding, groups, semiring)
    assert_identical(y, expected_y)
    assert_identical(index, expected_index)
    assert_identical(OPS[semiring](x, w, stride=stride, padding=padding, groups=groups), y)


@SEMIRINGS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_naive_loops_random_data(semiring, dtype):
    """Random (tie-free) data, several output channels per group, rectangular stride and padding."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    y, index = OPS[semiring](x, w, (1, 2), (2, 1), 2, return_indices=True)
    expected_y, expected_index = naive_conv2d(x, w, (1, 2), (2, 1), 2, semiring)
    assert_identical(y, expected_y)
    assert_identical(index, expected_index)


@SEMIRINGS
def test_all_padding_windows_have_no_winner(semiring):
    """Windows that hold only padding give the tropical zero and index -1 (1x1 kernel, padding 1)."""
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    w = np.ones((2, 1, 1, 1))
    y, index = OPS[semiring](x, w, padding=1, return_indices=True)
    border = np.ones((4, 5), bool)
    border[1:-1, 1:-1] = False
    assert (y[:, :, border] == semiring.zero).all()
    assert (index[:, :, border] == -1).all()
    np.testing.assert_array_equal(y[:, :, 1:-1, 1:-1], np.broadcast_to(x + 1.0, (1, 2, 2, 3)))
    assert (index[:, :, 1:-1, 1:-1] == 0).all()


@st.composite
def conv_problems(draw, elements, dtypes=(np.float32, np.float64)):
    """A small random convolution: x, w, stride, padding, groups (the kernel fits the padded input)."""
    groups = draw(st.integers(1, 2))
    C_group, per_group = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H = draw(st.integers(max(1, kh - 2 * ph), 5))
    W = draw(st.integers(max(1, kw - 2 * pw), 5))
    stride = draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    B = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(dtypes))
    x = draw(hnp.arrays(dtype, (B, groups * C_group, H, W), elements=elements))
    w = draw(hnp.arrays(dtype, (groups * per_group, C_group, kh, kw), elements=elements))
    return x, w, stride, (ph, pw), groups


@SEMIRINGS
@hsettings(50)
@given(problem=conv_problems(SPECIAL))
def test_numpy_backend_matches_reference_bitwise(semiring, problem):
    """Ties, ±inf, NaN, padding: the NumPy kernel equals conv2d_reference and the naive loop bitwise."""
    x, w, stride, padding, groups = problem
    y, index = OPS[semiring](x, w, stride, padding, groups, return_indices=True)
    ref_y, ref_index = reference_call(semiring, x, w, stride, padding, groups)
    assert_identical(y, ref_y)
    assert_identical(index, ref_index)
    naive_y, naive_index = naive_conv2d(x, w, stride, padding, groups, semiring)
    assert_identical(y, naive_y)
    assert_identical(index, naive_index)


@SEMIRINGS
@hsettings(30)
@given(problem=conv_problems(SPECIAL))
def test_numpy_backend_matches_array_api_strict(semiring, problem):
    """The public call on array_api_strict arrays (reference path) gives the NumPy result bitwise."""
    xps = strict()
    x, w, stride, padding, groups = problem
    y, index = OPS[semiring](x, w, stride, padding, groups, return_indices=True)
    s_y, s_index = OPS[semiring](xps.asarray(x), xps.asarray(w), stride, padding, groups, return_indices=True)
    assert isinstance(s_y, type(xps.asarray(0.0)))
    assert_identical(s_y, y)
    assert_identical(s_index, index)


@SEMIRINGS
def test_blocked_path_matches_reference(semiring):
    """A size that makes the NumPy kernel split output rows into blocks (and needs int16 winners)."""
    rng = np.random.default_rng(4)
    x = rng.integers(-2, 3, (2, 16, 66, 66)).astype(np.float32)
    w = rng.integers(-2, 3, (4, 16, 3, 3)).astype(np.float32)
    x[0, :, :5] = semiring.zero  # windows of only zeros near the top: index -1
    x[1, 3, 10, 10:20] = np.inf
    x[1, 5, 30, 30] = np.nan
    w[1, 2, 1] = -np.inf
    y, index = OPS[semiring](x, w, 1, 1, return_indices=True)
    assert index.dtype == np.int16
    ref_y, ref_index = reference_call(semiring, x, w, 1, 1)
    assert_identical(y, ref_y)
    assert_identical(index, ref_index)
    assert (index == -1).any() and np.isnan(y).any()


@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_dtypes_promote(dtypes):
    """x and w of different float dtypes promote (float32 + float64 -> float64)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 4, 4)).astype(dtypes[0])
    w = rng.standard_normal((3, 2, 2, 2)).astype(dtypes[1])
    y, index = tropic.maxplus_conv2d(x, w, return_indices=True)
    assert y.dtype == np.float64
    expected_y, expected_index = naive_conv2d(x, w, 1, 0, 1, MAX_PLUS)
    assert_identical(y, expected_y)
    assert_identical(index, expected_index)


# --------------------------------------------------------------------------------------------------
# 2. Identities
# --------------------------------------------------------------------------------------------------


@hsettings(40)
@given(problem=conv_problems(SPECIAL, dtypes=(np.float64,)))
def test_duality(problem, xp):
    """minplus_conv2d(x, w) == -maxplus_conv2d(-x, -w), values (up to the sign of zero) and winners."""
    x, w, stride, padding, groups = problem
    X, Wt = xp.asarray(x), xp.asarray(w)
    y, index = tropic.minplus_conv2d(X, Wt, stride, padding, groups, return_indices=True)
    z, z_index = tropic.maxplus_conv2d(-X, -Wt, stride, padding, groups, return_indices=True)
    np.testing.assert_array_equal(to_numpy(y), -to_numpy(z))
    assert_identical(index, z_index)


@SEMIRINGS
@hsettings(40)
@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=4, max_dims=4, max_side=4), elements=SPECIAL_NO_NAN),
    data=st.data(),
)
def test_depthwise_1x1_is_a_tropical_product_per_channel(semiring, x, data, xp):
    """A 1x1 kernel with groups = Cin: y[b, c] = x[b, c] ⊗ w[c] (the broadcast sum, the zero absorbing)."""
    C = x.shape[1]
    w = data.draw(hnp.arrays(np.float64, (C, 1, 1, 1), elements=SPECIAL_NO_NAN))
    y, index = OPS[semiring](xp.asarray(x), xp.asarray(w), groups=C, return_indices=True)
    zero = semiring.zero
    w_b = w.reshape(1, C, 1, 1)
    with np.errstate(invalid="ignore"):
        expected = np.where((x == zero) | (w_b == zero), zero, x + w_b)
    assert_identical(y, expected)
    assert_identical(index, np.where(expected == zero, -1, 0).astype(np.int8))


@pytest.mark.parametrize("shape", [(5, 6), (3, 3), (7, 4)])
def test_single_channel_equals_dilation_and_erosion(shape):
    """One input and output channel, 3x3 kernel, padding 1: max-plus correlation with w is the
    dilation by the flipped structuring element; min-plus correlation with -s is the erosion by s."""
    rng = np.random.default_rng(1)
    x = rng.integers(-5, 6, (1, 1) + shape).astype(np.float64)
    s = rng.integers(-3, 4, (3, 3)).astype(np.float64)
    w = np.ascontiguousarray(s[::-1, ::-1])[None, None]
    assert_identical(tropic.maxplus_conv2d(x, w, padding=1)[0, 0], tropic.dilation(x[0, 0], s))
    assert_identical(tropic.minplus_conv2d(x, -s[None, None], padding=1)[0, 0], tropic.erosion(x[0, 0], s))


@SEMIRINGS
@hsettings(30)
@given(problem=conv_problems(SPECIAL_NO_NAN, dtypes=(np.float64,)), data=st.data())
def test_translation_invariance_in_the_kernel(semiring, problem, data):
    """Adding a constant t to the kernel adds t to every output (zero outputs stay zero), same winners."""
    x, w, stride, padding, groups = problem
    t = data.draw(st.integers(-3, 3).map(float))
    y, index = OPS[semiring](x, w, stride, padding, groups, return_indices=True)
    y_t, index_t = OPS[semiring](x, w + t, stride, padding, groups, return_indices=True)
    np.testing.assert_array_equal(y_t, y + t)
    assert_identical(index_t, index)


# --------------------------------------------------------------------------------------------------
# 3. Gradients
# --------------------------------------------------------------------------------------------------

GEOMETRIES = [
    dict(stride=1, padding=0, groups=1),
    dict(stride=2, padding=1, groups=2),
    dict(stride=(2, 1), padding=(1, 0), groups=1),
    dict(stride=1, padding=(0, 1), groups=2),
    dict(stride=(1, 2), padding=(1, 1), groups=4),
]


def gradient_problem(seed, dtype=np.float64, groups=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 4, 5)).astype(dtype)
    w = rng.standard_normal((4, 4 // groups, 2, 3)).astype(dtype)
    return rng, x, w


@SEMIRINGS
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_vjp_matches_finite_differences(semiring, geometry):
    """conv2d_vjp equals central finite differences (float64) where every winner is unique."""
    rng, x, w = gradient_problem(3, groups=geometry["groups"])
    sums = np.sort(unfold_candidates(x, w, semiring=semiring, **geometry), axis=-1)
    gaps = sums[..., -1] - sums[..., -2] if semiring.maximises else sums[..., 1] - sums[..., 0]
    assert gaps.min() > 1e-4  # precondition: unique winners, FD step far below the gap
    y, index = OPS[semiring](x, w, **geometry, return_indices=True)
    g = rng.standard_normal(y.shape)
    grad_x, grad_w = tropic.conv2d_vjp(g, index, x.shape, w.shape, **geometry)

    def loss(x_, w_):
        return float(np.sum(g * OPS[semiring](x_, w_, **geometry)))

    eps = 1e-6
    for value, grad, which in ((x, grad_x, 0), (w, grad_w, 1)):
        fd = np.zeros_like(value)
        for pos in np.ndindex(*value.shape):
            step = np.zeros_like(value)
            step[pos] = eps
            args_plus = (x + step, w) if which == 0 else (x, w + step)
            args_minus = (x - step, w) if which == 0 else (x, w - step)
            fd[pos] = (loss(*args_plus) - loss(*args_minus)) / (2 * eps)
        assert grad.shape == value.shape
        np.testing.assert_allclose(grad, fd, atol=1e-6)


def torch_unfold_conv2d(torch, x, w, stride, padding, groups, semiring):
    """The formula users write today: pad with the zero, unfold, add the kernel, reduce."""
    F = torch.nn.functional
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(padding)
    B, C_in, H, W = x.shape
    C_out, C_group, kh, kw = w.shape
    padded = F.pad(x, (pw, pw, ph, ph), value=semiring.zero)
    cols = F.unfold(padded, (kh, kw), stride=(sh, sw))  # (B, C_in * kh * kw, L), (c, u, v) order
    cols = cols.reshape(B, groups, 1, C_group * kh * kw, -1)
    sums = cols + w.reshape(1, groups, C_out // groups, C_group * kh * kw, 1)
    y = sums.max(dim=3).values if semiring.maximises else sums.min(dim=3).values
    H_out, W_out = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    return y.reshape(B, C_out, H_out, W_out)


@SEMIRINGS
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vjp_matches_torch_autograd(semiring, geometry, dtype):
    """conv2d_vjp equals torch autograd of pad + unfold + max (random data: no ties)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng, x, w = gradient_problem(8, dtype, geometry["groups"])
    y, index = OPS[semiring](x, w, **geometry, return_indices=True)
    g = rng.integers(-4, 5, y.shape).astype(dtype)  # integer-valued: exact in any summation order
    grad_x, grad_w = tropic.conv2d_vjp(g, index, x.shape, w.shape, **geometry)

    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch_unfold_conv2d(torch, tx, tw, semiring=semiring, **geometry)
    assert_identical(y, ty.detach().numpy())
    ty.backward(torch.tensor(g))
    assert_identical(grad_x, tx.grad.numpy())
    assert_identical(grad_w, tw.grad.numpy())


@SEMIRINGS
@hsettings(40)
@given(problem=conv_problems(SPECIAL), data=st.data())
def test_numpy_vjp_matches_reference_vjp(semiring, problem, data):
    """The NumPy vjp kernel equals the reference vjp (array_api_strict input, and the reference kernel
    on NumPy) bitwise for integer gradients, winners in the padding and index -1 included."""
    xps = strict()
    x, w, stride, padding, groups = problem
    y, index = OPS[semiring](x, w, stride, padding, groups, return_indices=True)
    g = data.draw(hnp.arrays(y.dtype, y.shape, elements=st.integers(-5, 5).map(float)))
    grad_x, grad_w = tropic.conv2d_vjp(g, index, x.shape, w.shape, stride, padding, groups)
    s_grad_x, s_grad_w = tropic.conv2d_vjp(
        xps.asarray(g), xps.asarray(index), x.shape, w.shape, stride, padding, groups
    )
    assert_identical(s_grad_x, grad_x)
    assert_identical(s_grad_w, grad_w)
    geometry = ConvGeometry(x.shape, w.shape, stride, padding, groups)
    ref_x, ref_w = conv2d_vjp_reference(np, g, index, geometry)
    assert_identical(ref_x, grad_x)
    assert_identical(ref_w, grad_w)
    # Every output with a winner sends its gradient to exactly one kernel entry; index -1 sends nothing.
    assert grad_w.sum() == g[index >= 0].sum()
    assert grad_w.dtype == g.dtype and grad_x.shape == x.shape


def test_vjp_outputs_without_winner_send_nothing():
    """Windows whose candidates are all the zero (padding, -inf pixels) have index -1 and send no
    gradient; the zero absorbs the opposite infinity (min-plus: +inf padding with a -inf weight)."""
    x = np.full((1, 1, 1, 1), -np.inf)
    w = np.zeros((1, 1, 3, 3))
    y, index = tropic.maxplus_conv2d(x, w, padding=1, return_indices=True)
    assert (index == -1).all() and (y == -np.inf).all()
    grad_x, grad_w = tropic.conv2d_vjp(np.ones_like(y), index, x.shape, w.shape, padding=1)
    assert_identical(grad_x, np.zeros_like(x))
    assert_identical(grad_w, np.zeros_like(w))

    w[0, 0, 0, 0] = -np.inf  # meets only padding (+inf): absorbed, it must not win with -inf
    x = np.ones((1, 1, 1, 1))
    y, index = tropic.minplus_conv2d(x, w, padding=1, return_indices=True)
    np.testing.assert_array_equal(y, [[[[1.0]]]])
    np.testing.assert_array_equal(index, [[[[4]]]])
    grad_x, grad_w = tropic.conv2d_vjp(np.full_like(y, 3.0), index, x.shape, w.shape, padding=1)
    assert_identical(grad_x, np.full_like(x, 3.0))
    expected_w = np.zeros_like(w)
    expected_w[0, 0, 1, 1] = 3.0
    assert_identical(grad_w, expected_w)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bad", [18, -2], ids=["taps", "minus-two"])
@pytest.mark.parametrize("position", [(0, 0), (3, 4), (6, 8)], ids=["border", "inside", "last"])
def test_vjp_rejects_a_winner_just_outside_the_taps(monkeypatch, threads, bad, position):
    """A winner one past the last tap (18 for 2 channels of 3x3) or below -1, in an output whose
    window meets the padding, one whose window reads inside the image, or the last output, raises
    for every gradient asked for, on one thread (one pass makes both gradients) and on the pool (the
    weight's pass apart): the compiled scatter checks each index as it reads it rather than reading
    its tap table or writing outside the sums."""
    from tropic.backends.numpy import kernels

    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    geometry = ConvGeometry((2, 2, 7, 9), (3, 2, 3, 3), (1, 1), (1, 1), 1)
    grad = np.ones(geometry.out_shape, np.float32)
    winners = np.zeros(geometry.out_shape, np.int8)
    winners[(1, 2, *position)] = bad
    tropic.set_num_threads(threads)
    try:
        for needs in ((True, True), (True, False), (False, True)):
            with pytest.raises(ValueError, match=r"indices must hold winners in \[0, 18\)"):
                kernels.conv2d_vjp(np, grad, winners, geometry, needs)
    finally:
        tropic.set_num_threads(None)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("w_shape", "groups"), [((6, 2, 3, 3), 2), ((5, 6, 5, 5), 1)], ids=["int8 winners", "int16 winners"]
)
def test_vjp_of_narrow_winners_matches_the_numpy_path(monkeypatch, threads, w_shape, groups):
    """The compiled backward takes int8 and int16 winners as they are (the entries' tasks widen an
    entry's at a time, the weight's pass its output channels' planes): each gradient asked for, alone
    or both, is the NumPy path's bit for bit and the same as from the winners given as int32 or int64,
    on one thread (the weight's sums in the entries' pass) and on the pool (a pass of their own; 5
    output channels: a group of 4 and one left over)."""
    from tropic.backends.numpy import compiled, kernels

    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    rng = np.random.default_rng(w_shape[0])
    x = rng.integers(-3, 4, (3, 4 if groups == 2 else 6, 11, 12)).astype(np.float32)  # ties
    w = rng.integers(-2, 3, w_shape).astype(np.float32)
    geometry = ConvGeometry(x.shape, w.shape, (1, 2), (1, 2), groups)
    y, winners = tropic.maxplus_conv2d(x, w, (1, 2), (1, 2), groups, return_indices=True)
    assert winners.dtype == (np.int8 if w_shape[-1] == 3 else np.int16)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    tropic.set_num_threads(threads)
    try:
        for needs in ((True, True), (True, False), (False, True)):
            got = kernels.conv2d_vjp(np, grad, winners, geometry, needs)
            for wide in (np.int32, np.int64):
                again = kernels.conv2d_vjp(np, grad, winners.astype(wide), geometry, needs)
                for g, a in zip(got, again, strict=True):
                    assert (g is None and a is None) or g.tobytes() == a.tobytes()
            with monkeypatch.context() as m:
                m.setattr(compiled, "enabled", False)
                want = kernels.conv2d_vjp(np, grad, winners, geometry, needs)
            for g, want_g, asked in zip(got, want, needs, strict=True):
                assert (g is None) == (want_g is None) == (not asked)
                if asked:
                    assert_identical(g, want_g)
    finally:
        tropic.set_num_threads(None)


# --------------------------------------------------------------------------------------------------
# 4. Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [tropic.maxplus_conv2d, tropic.minplus_conv2d])
def test_errors_name_the_argument(op):
    """Bad shapes, groups, strides, paddings and dtypes give errors that say what was expected."""
    x, w = np.ones((1, 4, 5, 5)), np.ones((2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"^x must have 4 dimensions"):
        op(np.ones((4, 5, 5)), w)
    with pytest.raises(ValueError, match=r"^w must have 4 dimensions"):
        op(x, np.ones((4, 3, 3)))
    with pytest.raises(ValueError, match=r"groups=3 must divide"):
        op(x, np.ones((3, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match=r"groups=2 must divide.*w\.shape\[0\]=3"):
        op(x, np.ones((3, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"^w\.shape\[1\] must be x\.shape\[1\] // groups = 2"):
        op(x, w, groups=2)
    with pytest.raises(ValueError, match=r"^w\.shape\[1\] must be x\.shape\[1\] // groups = 4"):
        op(x, np.ones((2, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"^stride must be >= 1"):
        op(x, w, stride=-1)
    with pytest.raises(ValueError, match=r"^stride must be >= 1"):
        op(x, w, stride=0)
    with pytest.raises(ValueError, match=r"^stride must be >= 1"):
        op(x, w, stride=(1, 0))
    with pytest.raises(ValueError, match=r"^padding must be >= 0"):
        op(x, w, padding=-1)
    with pytest.raises(ValueError, match=r"^padding must be >= 0"):
        op(x, w, padding=(0, -2))
    with pytest.raises(TypeError, match=r"^stride must be an int or a pair of ints"):
        op(x, w, stride=(1, 1, 1))
    with pytest.raises(ValueError, match=r"^groups must be a positive int"):
        op(x, w, groups=0)
    with pytest.raises(ValueError, match=r"kernel \(6, 6\) must fit the padded input \(5, 5\)"):
        op(x, np.ones((2, 4, 6, 6)))
    with pytest.raises(ValueError, match=r"kernel \(1, 8\) must fit the padded input \(7, 7\)"):
        op(x, np.ones((2, 4, 1, 8)), padding=1)
    with pytest.raises(TypeError, match=r"^x must have a real floating-point dtype"):
        op(x.astype(np.int32), w)
    with pytest.raises(TypeError, match=r"^w must have a real floating-point dtype"):
        op(x, w.astype(np.int64))


def test_integer_arguments_are_python_or_numpy_ints_not_bools():
    """Stride, padding and groups take Python and NumPy integers (normalised to Python ints, the same
    result) and refuse bools, alone or in a pair, and floats."""
    x, w = np.arange(50.0).reshape(1, 2, 5, 5), np.ones((2, 2, 3, 3))
    expected = tropic.maxplus_conv2d(x, w, stride=2, padding=1)
    for stride, padding in ((np.int64(2), np.int32(1)), ((2, np.int16(2)), [np.uint8(1), 1])):
        np.testing.assert_array_equal(tropic.maxplus_conv2d(x, w, stride=stride, padding=padding), expected)
    geometry = ConvGeometry(x.shape, w.shape, (np.int64(2), 2), np.int32(1), np.int8(1))
    assert geometry.stride == (2, 2) and geometry.padding == (1, 1) and geometry.groups == 1
    assert {type(v) for v in (*geometry.stride, *geometry.padding)} == {int}
    for bad in (True, (1, True), (np.bool_(True), 1), 1.0, (1, 1.0)):
        with pytest.raises(TypeError, match=r"^stride must be an int or a pair of ints"):
            tropic.maxplus_conv2d(x, w, stride=bad)
    with pytest.raises(ValueError, match=r"^groups must be a positive int, got True"):
        tropic.maxplus_conv2d(x, w, groups=True)


def test_vjp_shape_errors():
    """conv2d_vjp refuses a gradient or indices not shaped like the output."""
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    y, index = tropic.maxplus_conv2d(x, w, return_indices=True)
    with pytest.raises(ValueError, match=r"^grad must have the output shape \(1, 3, 3, 3\)"):
        tropic.conv2d_vjp(np.ones((1, 3, 3, 2)), index, x.shape, w.shape)
    with pytest.raises(ValueError, match=r"^indices must have the output shape \(1, 3, 3, 3\)"):
        tropic.conv2d_vjp(y, index[..., :2], x.shape, w.shape)


def test_inputs_not_modified():
    """Nothing the caller owns is modified in place."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((2, 2, 3, 3))
    x[0, 0, 0, 0], w[0, 0, 0, 0] = -np.inf, np.inf
    x0, w0 = x.copy(), w.copy()
    y, index = tropic.maxplus_conv2d(x, w, padding=1, return_indices=True)
    g = np.ones_like(y)
    index0 = index.copy()
    tropic.conv2d_vjp(g, index, x.shape, w.shape, padding=1)
    assert_identical(x, x0)
    assert_identical(w, w0)
    assert_identical(index, index0)
    assert_identical(g, np.ones_like(y))


@pytest.mark.parametrize(
    ("x_shape", "w_shape"),
    [((2, 3, 9, 11), (4, 3, 3, 3)), ((1, 1, 182, 182), (2, 1, 182, 182))],
    ids=["int8 winners", "int32 winners"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_are_not_reused_buffers(x_shape, w_shape, dtype):
    """The kernels pad and keep winners in per-thread scratch buffers: a result handed out must not be
    one of them, so a later call of the same shapes leaves an earlier result as it was (with the
    int32 winners of 33124 candidates too, which are returned as the kernel wrote them)."""
    rng = np.random.default_rng(1)
    x1, x2 = (rng.integers(-3, 4, x_shape).astype(dtype) for _ in range(2))
    w1, w2 = (rng.integers(-3, 4, w_shape).astype(dtype) for _ in range(2))
    first = tropic.maxplus_conv2d(x1, w1, padding=1, return_indices=True)
    kept = [a.copy() for a in first]
    for x, w in ((x2, w2), (x1, w2)):
        tropic.maxplus_conv2d(x, w, padding=1, return_indices=True)
        tropic.minplus_conv2d(x, w, padding=1)
    for result, copy in zip(first, kept, strict=True):
        assert_identical(result, copy)
    for result, expected in zip(first, reference_call(MAX_PLUS, x1, w1, padding=1), strict=True):
        assert_identical(result, expected)


EMPTY_CONVS = [((0, 2, 5, 5), (3, 2, 2, 2)), ((1, 0, 5, 5), (3, 0, 2, 2)), ((2, 2, 5, 5), (0, 2, 2, 2))]


@pytest.mark.parametrize(("x_shape", "w_shape"), EMPTY_CONVS)
def test_empty_batches_and_channels(x_shape, w_shape):
    """No image, no input channel (every output is the tropical zero, no winner) or no output channel:
    the NumPy backend agrees with the core reference bitwise, and the vjp has the operands' shapes."""
    import array_api_strict as xps

    x, w = np.zeros(x_shape), np.zeros(w_shape)
    for op in (tropic.maxplus_conv2d, tropic.minplus_conv2d):
        y, k = op(x, w, return_indices=True)
        y_ref, k_ref = op(xps.asarray(x), xps.asarray(w), return_indices=True)
        assert_identical(y, to_numpy(y_ref))
        assert_identical(k, to_numpy(k_ref))
        grad_x, grad_w = tropic.conv2d_vjp(np.ones(y.shape), k, x_shape, w_shape)
        assert grad_x.shape == x_shape and grad_w.shape == w_shape and not grad_x.any() and not grad_w.any()
