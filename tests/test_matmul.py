"""Tests of the tropical matrix products ``maxplus_matmul`` / ``minplus_matmul`` and ``matmul_vjp``.

References nobody here wrote: NumPy broadcasting (``np.max(a[..., :, :, None] + b[..., None, :, :])``),
``np.matmul`` for shapes and dtypes, finite differences and torch autograd of the naive formula for
gradients. The NumPy backend is also held bitwise to the core reference kernel, values and winners.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tropic
from tropic.core.matmul import matmul_reference, matmul_vjp_reference
from tropic.core.semiring import MAX_PLUS, MIN_PLUS

from .helpers import (
    SEMIRINGS,
    SPECIAL,
    SPECIAL_NO_NAN,
    assert_identical,
    expected_index_dtype,
    hsettings,
    strict,
    tie_heavy,
    to_numpy,
)

# Every test runs on the compiled kernels and on the NumPy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_path")

OPS = {MAX_PLUS: tropic.maxplus_matmul, MIN_PLUS: tropic.minplus_matmul}


def as_matrices(a, b):
    """matmul's promotion of 1-D operands to a row / column matrix."""
    return (a[None, :] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)


def drop_vector_axes(a, b, c):
    """Undo :func:`as_matrices` on a result, as ``np.matmul`` does."""
    if b.ndim == 1:
        c = c[..., 0]
    if a.ndim == 1:
        c = c[..., 0] if b.ndim == 1 else c[..., 0, :]
    return c


def broadcast_reference(a, b, maximise=True):
    """Plain NumPy broadcasting of all candidate sums (finite data): values and first arg-max/min."""
    a2, b2 = as_matrices(a, b)
    sums = a2[..., :, :, None] + b2[..., None, :, :]
    reduce, pick = (np.max, np.argmax) if maximise else (np.min, np.argmin)
    return drop_vector_axes(a, b, reduce(sums, axis=-2)), drop_vector_axes(a, b, pick(sums, axis=-2))


def semantics_oracle(a, b, semiring):
    """The documented semantics written out with NumPy broadcasting, infinities and NaN included.

    Every candidate sum is formed (O(M K N) memory, fine for tests); the zero absorbs unless the other
    operand is NaN; a NaN output's winner is its first NaN candidate; an all-zero output has index -1.
    """
    zero = semiring.zero
    x, y = a[..., :, :, None], b[..., None, :, :]
    with np.errstate(invalid="ignore"):
        sums = x + y
    absorbed = ((x == zero) & ~np.isnan(y)) | ((y == zero) & ~np.isnan(x))
    sums = np.moveaxis(np.where(absorbed, zero, sums), -2, -1)  # (..., M, N, K)
    K = sums.shape[-1]
    out_shape = sums.shape[:-1]
    if K == 0:
        return np.full(out_shape, zero, sums.dtype), np.full(out_shape, -1, expected_index_dtype(0))
    nan = np.isnan(sums)
    filled = np.where(nan, zero, sums)
    index = (np.argmax if semiring.maximises else np.argmin)(filled, axis=-1)
    index = np.where(nan.any(axis=-1), np.argmax(nan, axis=-1), index)
    values = np.take_along_axis(sums, index[..., None], axis=-1)[..., 0]
    index = np.where(values == zero, -1, index)
    return values, index.astype(expected_index_dtype(K))


def reference_call(semiring, a, b):
    """The core reference kernel on matrix-shaped (>= 2-D) NumPy operands of one dtype."""
    dtype = np.result_type(a, b)
    return matmul_reference(np, semiring, a.astype(dtype), b.astype(dtype))


def matmul_operands(elements, dtypes=(np.float32, np.float64), min_side=1, max_side=4, vectors=False):
    """Hypothesis strategy: a pair of operands with matmul-compatible, possibly broadcast shapes."""
    signature = "(m?,k),(k,n?)->(m?,n?)" if vectors else "(m,k),(k,n)->(m,n)"
    shapes = hnp.mutually_broadcastable_shapes(
        signature=signature, max_dims=2, min_side=min_side, max_side=max_side
    )

    @st.composite
    def draw_operands(draw):
        (a_shape, b_shape), _ = draw(shapes)
        dtype = draw(st.sampled_from(dtypes))
        a = draw(hnp.arrays(dtype, a_shape, elements=elements))
        b = draw(hnp.arrays(dtype, b_shape, elements=elements))
        return a, b

    return draw_operands()


# --------------------------------------------------------------------------------------------------
# 1. Against NumPy broadcasting, finite data
# --------------------------------------------------------------------------------------------------

SHAPES = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),  # batch of a folded into rows
    ((3, 4), (2, 4, 5)),  # batch only on b
    ((2, 1, 3, 4), (3, 4, 5)),  # batch broadcasting on both sides
    ((2, 3, 4), (2, 4, 5)),
    ((4,), (4, 5)),  # 1-D a: row vector
    ((3, 4), (4,)),  # 1-D b: column vector
    ((4,), (4,)),  # both 1-D: a 0-d result
    ((4,), (2, 4, 5)),
    ((2, 3, 4), (4,)),
    ((3, 1), (1, 5)),  # K = 1
    ((1, 1), (1, 1)),
]


@SEMIRINGS
@pytest.mark.parametrize(("a_shape", "b_shape"), SHAPES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_matches_numpy_broadcasting(semiring, a_shape, b_shape, dtype):
    """Values, winners, shape (as np.matmul) and index dtype equal NumPy broadcasting + max/argmax."""
    rng = np.random.default_rng(hash((a_shape, b_shape)) % 2**32)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    c, index = OPS[semiring](a, b, return_indices=True)
    expected_c, expected_index = broadcast_reference(a, b, semiring.maximises)
    assert c.shape == np.matmul(a, b).shape
    assert c.dtype == np.dtype(dtype)
    assert index.dtype == expected_index_dtype(a_shape[-1])
    np.testing.assert_array_equal(c, expected_c)
    np.testing.assert_array_equal(index, expected_index)
    # Without return_indices: the same values, alone.
    assert_identical(OPS[semiring](a, b), c)


@SEMIRINGS
@pytest.mark.parametrize(("a_shape", "b_shape"), SHAPES)
def test_matches_numpy_broadcasting_with_ties(semiring, a_shape, b_shape):
    """Integer data in a tiny range (many ties): the lowest k wins, as np.argmax/np.argmin pick."""
    rng = np.random.default_rng(7)
    a = rng.integers(-1, 2, a_shape).astype(np.float32)
    b = rng.integers(-1, 2, b_shape).astype(np.float32)
    c, index = OPS[semiring](a, b, return_indices=True)
    expected_c, expected_index = broadcast_reference(a, b, semiring.maximises)
    np.testing.assert_array_equal(c, expected_c)
    np.testing.assert_array_equal(index, expected_index)


@pytest.mark.parametrize(
    ("a_dtype", "b_dtype"),
    [(np.float32, np.float64), (np.float64, np.float32), (np.float16, np.float32), (np.float16, np.float64)],
)
def test_mixed_dtypes_promote_like_matmul(a_dtype, b_dtype):
    """Mixed float dtypes promote as np.matmul does; values equal the product of the promoted operands."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4)).astype(a_dtype)
    b = rng.standard_normal((4, 5)).astype(b_dtype)
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    assert c.dtype == np.matmul(a, b).dtype
    dtype = c.dtype
    expected_c, expected_index = broadcast_reference(a.astype(dtype), b.astype(dtype))
    np.testing.assert_array_equal(c, expected_c)
    np.testing.assert_array_equal(index, expected_index)


@SEMIRINGS
@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        ((3, 0), (0, 4)),
        ((2, 3, 0), (0, 4)),
        ((3, 0), (2, 0, 4)),
        ((0,), (0, 4)),
        ((3, 0), (0,)),
        ((0,), (0,)),
    ],
)
def test_empty_reduction_gives_tropical_zero(semiring, a_shape, b_shape, xp):
    """K = 0: every output is the tropical zero (the empty ⊕) with index -1, shaped like np.matmul."""
    a, b = np.zeros(a_shape), np.zeros(b_shape)
    c, index = OPS[semiring](xp.asarray(a), xp.asarray(b), return_indices=True)
    c, index = to_numpy(c), to_numpy(index)
    shape = np.matmul(a, b).shape
    assert_identical(c, np.full(shape, semiring.zero))
    assert_identical(index, np.full(shape, -1, np.int8))


@pytest.mark.parametrize(("a_shape", "b_shape"), [((3, 0), (0, 4)), ((2, 3, 0), (0, 4)), ((3, 0), (2, 0, 4))])
def test_empty_reduction_vjp_is_empty(a_shape, b_shape, xp):
    """K = 0: no output has a winner, the gradients are the (empty) zero arrays of the operand shapes."""
    shape = np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape
    grad = xp.asarray(np.ones(shape))
    index = xp.asarray(np.full(shape, -1, np.int8))
    grad_a, grad_b = tropic.matmul_vjp(grad, index, a_shape, b_shape)
    assert_identical(grad_a, np.zeros(a_shape))
    assert_identical(grad_b, np.zeros(b_shape))


@SEMIRINGS
@pytest.mark.parametrize(
    ("a_shape", "b_shape"), [((0, 3), (3, 4)), ((3, 4), (4, 0)), ((0, 3, 4), (4, 2)), ((3, 4), (0, 4, 2))]
)
def test_zero_size_outputs(semiring, a_shape, b_shape, xp):
    """Zero-size M, N or batch: an empty result of np.matmul's shape and dtype, and empty indices."""
    a, b = np.zeros(a_shape, np.float32), np.zeros(b_shape, np.float32)
    c, index = OPS[semiring](xp.asarray(a), xp.asarray(b), return_indices=True)
    assert_identical(c, np.matmul(a, b))
    assert_identical(index, np.zeros(np.matmul(a, b).shape, np.int8))


@pytest.mark.parametrize(("K", "dtype"), [(127, np.int8), (128, np.int8), (129, np.int16), (32769, np.int32)])
def test_index_dtype_boundaries(K, dtype):
    """The index dtype is the smallest one that holds K - 1; the last candidate's index is not wrapped."""
    a = np.zeros((2, K))
    b = np.zeros((K, 3))
    a[0, -1] = 1.0  # row 0: the last k wins
    a[1, K // 2] = 1.0
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    assert index.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(index, [[K - 1] * 3, [K // 2] * 3])
    np.testing.assert_array_equal(c, np.ones((2, 3)))


# --------------------------------------------------------------------------------------------------
# 2. NumPy backend against the core reference (and the documented semantics), bitwise
# --------------------------------------------------------------------------------------------------


@SEMIRINGS
@hsettings(60)
@given(operands=matmul_operands(SPECIAL, min_side=1))
def test_numpy_backend_matches_reference_bitwise(semiring, operands):
    """Ties, ±inf, NaN, all-zero rows, K = 0: the NumPy kernel equals the core reference bitwise,
    and both equal the semantics written out with NumPy broadcasting."""
    a, b = operands
    c, index = OPS[semiring](a, b, return_indices=True)
    ref_c, ref_index = reference_call(semiring, a, b)
    assert_identical(c, ref_c)
    assert_identical(index, ref_index)
    oracle_c, oracle_index = semantics_oracle(a, b, semiring)
    assert_identical(c, oracle_c)
    assert_identical(index, oracle_index)


@SEMIRINGS
@hsettings(30)
@given(operands=matmul_operands(SPECIAL, dtypes=(np.float32, np.float64), min_side=1, vectors=True))
def test_numpy_backend_matches_array_api_strict(semiring, operands):
    """The public call on array_api_strict (reference path) returns bitwise the NumPy result, 1-D too."""
    xps = strict()
    a, b = operands
    c, index = OPS[semiring](a, b, return_indices=True)
    s_c, s_index = OPS[semiring](xps.asarray(a), xps.asarray(b), return_indices=True)
    assert isinstance(s_c, type(xps.asarray(0.0)))
    assert_identical(s_c, c)
    assert_identical(s_index, index)
    assert c.shape == np.matmul(np.zeros(a.shape), np.zeros(b.shape)).shape


@SEMIRINGS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 7, 5), (3, 40, 30), (2, 64, 3, 100), (64, 256, 256)], ids=str)
def test_weight_transposes_give_the_bits_of_contiguous_operands(semiring, dtype, shape):
    """``x @ W.T`` (a transposed view, which the NumPy backend runs as ``(W @ x.T).T`` where that
    copies less) and its gradients: the bits of the same product of contiguous operands, with and
    without winners and bias; the gradient of ``W.T`` asked in W's layout is the same numbers."""
    *lead, K, N = shape
    rng = np.random.default_rng(sum(shape))
    x, weight = tie_heavy(rng, (*lead, K), dtype), tie_heavy(rng, (N, K), dtype)
    bias = tie_heavy(rng, (N,), dtype)
    view, copy = weight.T, np.ascontiguousarray(weight.T)
    op = OPS[semiring]
    for extra in ({"bias": bias}, {}):
        c, k = op(x, view, return_indices=True, **extra)
        want_c, want_k = op(x, copy, return_indices=True, **extra)
        assert_identical(c, want_c)
        assert_identical(k, want_k)
        assert_identical(op(x, view, **extra), want_c)
    kernels = pytest.importorskip("tropic.backends.numpy.kernels")
    g = rng.standard_normal((want_c.size // N, N)).astype(dtype)
    k, rows = want_k.reshape(g.shape), (g.shape[0], K)
    plain = kernels.matmul_vjp(np, g, k, rows, (K, N))
    hinted = kernels.matmul_vjp(np, g, k, rows, (K, N), transposed_b_grad=True)
    assert_identical(hinted[0], plain[0])
    assert_identical(hinted[1], plain[1])
    if kernels._compiled_scatter("matmul", g, k) is not None:  # (the NumPy path ignores the hint)
        assert hinted[1].T.flags.c_contiguous  # W's layout


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "bias_shape", "fits"),
    [
        ((4, 3), (3, 5), (5,), True),
        ((4, 3), (3, 5), (4, 5), True),
        ((4, 3), (3, 5), (4, 1), True),
        ((4, 3), (3, 5), (1, 5), True),
        ((4, 3), (3, 5), (), True),
        ((3,), (3,), (), True),
        ((2, 4, 3), (3, 5), (4, 5), True),
        ((4, 3), (3, 5), (4,), False),
        ((4, 3), (3, 5), (2, 4, 5), False),  # would enlarge the product
        ((3,), (3, 5), (1, 5), False),  # a vector's product is (5,)
        ((3,), (3,), (1,), False),
        ((2, 4, 3), (3, 5), (3, 4, 5), False),
    ],
    ids=str,
)
def test_a_bias_must_broadcast_to_the_products_shape(a_shape, b_shape, bias_shape, fits):
    """The bias broadcasts to the product's shape without enlarging it, or ValueError names it."""
    rng = np.random.default_rng(0)
    a, b, bias = (rng.standard_normal(s) for s in (a_shape, b_shape, bias_shape))
    if fits:
        values = tropic.maxplus_matmul(a, b, bias=bias)
        assert_identical(np.asarray(values), np.asarray(np.maximum(tropic.maxplus_matmul(a, b), bias)))
    else:
        with pytest.raises(ValueError, match="bias must broadcast"):
            tropic.maxplus_matmul(a, b, bias=bias)


@SEMIRINGS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("a_shape", "b_shape", "bias_shape"),
    [
        ((6, 9), (9, 5), (5,)),
        ((2, 3, 9), (9, 4), (4,)),
        ((1, 9), (9, 7), (7,)),
        ((4, 9), (9, 1), (1,)),
        ((6, 9), (9, 5), (1, 5)),
        ((5, 127), (127, 3), (3,)),
        ((64, 40), (40, 30), (30,)),
        ((2, 40000), (40000, 3), (3,)),  # int32 winners
    ],
    ids=str,
)
@pytest.mark.parametrize("nan_product", [True, False], ids=["nan-product", "finite-operands"])
def test_the_bias_in_the_kernels_follows_cores_rule_bitwise(
    semiring, dtype, a_shape, b_shape, bias_shape, nan_product
):
    """The NumPy backend applies a bias along the last axis in its compiled pass (forward: in the
    product's own call, or after the NaN rule when an operand holds NaN) and sums its gradient in the
    scatter's pass (backward): the bits of core's rule (apply_bias, bias_vjp) on the same product,
    through ties between the bias and the product, signed zeros, infinities, NaN on either side, NaN
    and -0.0 gradients, the winners' dtype at K + 1 = 128, and values only."""
    from tropic.core.matmul import apply_bias, bias_vjp

    kernels = pytest.importorskip("tropic.backends.numpy.kernels")
    rng = np.random.default_rng(sum(a_shape) + sum(b_shape))
    nan = 0.005 if nan_product else 0.0
    a, b = tie_heavy(rng, a_shape, dtype, nan=nan), tie_heavy(rng, b_shape, dtype, nan=nan)
    bias = tie_heavy(rng, bias_shape, dtype)
    if nan_product:
        a[..., 0, 1] = np.nan  # a NaN product beside numbers
    bias.reshape(-1)[0] = np.nan  # a NaN bias
    bias.reshape(-1)[-1] = np.inf if semiring.maximises else -np.inf  # a column the bias wins
    c, k = kernels.matmul(np, semiring, a, b)
    K = a_shape[-1]
    want_c, want_k = apply_bias(np, semiring.maximises, bias, c.copy(), k.copy(), K)
    got_c, got_k = kernels.matmul(np, semiring, a, b, bias)
    assert_identical(got_c, want_c)
    assert_identical(got_k, want_k)
    assert_identical(kernels.matmul(np, semiring, a, b, bias, winners=False)[0], want_c)
    g = rng.standard_normal(want_c.shape).astype(dtype)
    g[rng.random(g.shape) < 0.1] = -0.0
    g[rng.random(g.shape) < 0.02] = np.nan
    g.reshape(-1, g.shape[-1])[0, -1] = -0.0  # the sign of a zero the bias won in the first row
    for needs in ((True, True, True), (False, True, True), (True, False, False), (False, False, True)):
        got = kernels.matmul_vjp(np, g, want_k, a_shape, b_shape, bias_shape, needs)
        want_bias, product_k = bias_vjp(np, g, want_k, K, bias_shape, needs[2])
        want = kernels.matmul_vjp(np, g, product_k, a_shape, b_shape, None, needs)
        for x, y in zip(got, (*want[:2], want_bias), strict=True):
            if y is None:
                assert x is None
            else:
                assert_identical(x, y)


@hsettings(40)
@given(operands=matmul_operands(SPECIAL, min_side=1))
def test_nan_positions_and_first_nan_winner(operands):
    """c[i, j] is NaN exactly where row i of a or column j of b holds a NaN; its index is the first
    k at which a[i, k] or b[k, j] is NaN."""
    a, b = operands
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    nan_k = np.isnan(a)[..., :, :, None] | np.isnan(b)[..., None, :, :]  # (..., M, K, N)
    expected_nan = nan_k.any(axis=-2)
    np.testing.assert_array_equal(np.isnan(c), expected_nan)
    np.testing.assert_array_equal(index[expected_nan], np.argmax(nan_k, axis=-2)[expected_nan])


@SEMIRINGS
@hsettings(40)
@given(operands=matmul_operands(SPECIAL_NO_NAN, min_side=1))
def test_zero_absorbs_opposite_infinity(semiring, operands):
    """No NaN is ever made from infinities: zero ⊗ (opposite infinity) is the zero, and an output is
    the zero, with index -1, exactly when every candidate pair holds the zero."""
    a, b = operands
    c, index = OPS[semiring](a, b, return_indices=True)
    assert not np.isnan(c).any()
    zero = semiring.zero
    all_zero = ((a == zero)[..., :, :, None] | (b == zero)[..., None, :, :]).all(axis=-2)
    np.testing.assert_array_equal(c == zero, all_zero)
    np.testing.assert_array_equal(index == -1, all_zero)


@SEMIRINGS
@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [((3, 600), (600, 500)), ((2, 2, 600), (2, 600, 450)), ((50, 40), (40, 7000)), ((1000, 300), (300, 3))],
    ids=["N-tiled", "batched-N-tiled", "wide", "M-tiled"],
)
def test_blocked_paths_match_reference(semiring, a_shape, b_shape):
    """Shapes large enough for the kernel's block tiling (over N and over M): still bitwise the reference,
    with ties, infinities and NaN sprinkled in."""
    rng = np.random.default_rng(11)
    a = rng.integers(-2, 3, a_shape).astype(np.float32)
    b = rng.integers(-2, 3, b_shape).astype(np.float32)
    for x, fraction in ((a, 0.02), (b, 0.02)):
        flat = x.reshape(-1)
        picks = rng.choice(flat.size, size=int(3 * fraction * flat.size), replace=False)
        third = len(picks) // 3
        flat[picks[:third]] = -np.inf
        flat[picks[third : 2 * third]] = np.inf
        flat[picks[2 * third : 2 * third + 3]] = np.nan
    a[..., 0, :] = semiring.zero  # an all-zero row: index -1 wherever column j of b has no NaN
    c, index = OPS[semiring](a, b, return_indices=True)
    ref_c, ref_index = reference_call(semiring, a, b)
    assert_identical(c, ref_c)
    assert_identical(index, ref_index)
    first_row = index[..., 0, :]
    no_nan = np.broadcast_to(~np.isnan(b).any(axis=-2), first_row.shape)
    assert no_nan.any()
    assert (first_row[no_nan] == -1).all()
    assert np.isnan(c[..., 0, :][~no_nan]).all()


# --------------------------------------------------------------------------------------------------
# 3. Semiring identities, on NumPy and on array_api_strict
# --------------------------------------------------------------------------------------------------


def square_matrices(n_matrices, elements, max_side=4):
    """n matrices chained for a product: shapes (d0, d1), (d1, d2), ... with sides in 1..max_side."""

    @st.composite
    def draw(draw):
        dims = draw(st.lists(st.integers(1, max_side), min_size=n_matrices + 1, max_size=n_matrices + 1))
        return [
            draw(hnp.arrays(np.float64, (dims[i], dims[i + 1]), elements=elements)) for i in range(n_matrices)
        ]

    return draw()


def eye(n, semiring):
    """The tropical identity matrix: the one (0) on the diagonal, the zero elsewhere."""
    return np.where(np.eye(n, dtype=bool), 0.0, semiring.zero)


@SEMIRINGS
@hsettings(40)
@given(matrices=square_matrices(3, SPECIAL_NO_NAN))
def test_associativity(semiring, matrices, xp):
    """(A ⊗ B) ⊗ C == A ⊗ (B ⊗ C), with ±inf entries too (the zero absorbs)."""
    A, B, C = (xp.asarray(m) for m in matrices)
    op = OPS[semiring]
    assert_identical(op(op(A, B), C), op(A, op(B, C)))


@SEMIRINGS
@hsettings(40)
@given(matrices=square_matrices(1, SPECIAL_NO_NAN, max_side=5))
def test_identity_matrix(semiring, matrices, xp):
    """I ⊗ A == A == A ⊗ I, with ±inf entries in A; the winner of (I ⊗ A)[i, j] is i (or -1 for a zero)."""
    (a,) = matrices
    A = xp.asarray(a)
    op = OPS[semiring]
    left, left_index = op(xp.asarray(eye(a.shape[0], semiring)), A, return_indices=True)
    right, right_index = op(A, xp.asarray(eye(a.shape[1], semiring)), return_indices=True)
    assert_identical(left, a)
    assert_identical(right, a)
    is_zero = a == semiring.zero
    rows, cols = np.indices(a.shape)
    np.testing.assert_array_equal(to_numpy(left_index), np.where(is_zero, -1, rows))
    np.testing.assert_array_equal(to_numpy(right_index), np.where(is_zero, -1, cols))


@hsettings(40)
@given(operands=matmul_operands(SPECIAL, dtypes=(np.float64,), min_side=1))
def test_duality(operands, xp):
    """minplus(a, b) == -maxplus(-a, -b), values (up to the sign of zero) and winners."""
    a, b = (xp.asarray(x) for x in operands)
    c, index = tropic.minplus_matmul(a, b, return_indices=True)
    d, d_index = tropic.maxplus_matmul(-a, -b, return_indices=True)
    np.testing.assert_array_equal(to_numpy(c), -to_numpy(d))
    assert_identical(index, d_index)


@SEMIRINGS
@hsettings(40)
@given(matrices=square_matrices(2, SPECIAL_NO_NAN), data=st.data())
def test_distributivity_over_pointwise_sum(semiring, matrices, data, xp):
    """A ⊗ (B ⊕ C) == (A ⊗ B) ⊕ (A ⊗ C), ⊕ the pointwise max (max-plus) or min (min-plus)."""
    a, b = matrices
    c = data.draw(hnp.arrays(np.float64, b.shape, elements=SPECIAL_NO_NAN))
    A, B, C = (xp.asarray(m) for m in (a, b, c))
    pointwise = xp.maximum if semiring.maximises else xp.minimum
    op = OPS[semiring]
    assert_identical(op(A, pointwise(B, C)), pointwise(op(A, B), op(A, C)))


@SEMIRINGS
@hsettings(40)
@given(matrices=square_matrices(2, SPECIAL_NO_NAN), data=st.data())
def test_monotonicity(semiring, matrices, data, xp):
    """B <= B' and A <= A' entrywise imply A ⊗ B <= A' ⊗ B'."""
    a, b = matrices
    steps = st.integers(0, 3).map(float) | st.just(np.inf)
    with np.errstate(invalid="ignore"):  # -inf + inf: replaced just below
        a_up = a + data.draw(hnp.arrays(np.float64, a.shape, elements=steps))
        b_up = b + data.draw(hnp.arrays(np.float64, b.shape, elements=steps))
    a_up = np.where(np.isnan(a_up), np.inf, a_up)  # a -inf raised by +inf: +inf
    b_up = np.where(np.isnan(b_up), np.inf, b_up)
    op = OPS[semiring]
    low = to_numpy(op(xp.asarray(a), xp.asarray(b)))
    high = to_numpy(op(xp.asarray(a_up), xp.asarray(b_up)))
    assert (low <= high).all()


# --------------------------------------------------------------------------------------------------
# 4. Gradients
# --------------------------------------------------------------------------------------------------

GRAD_SHAPES = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (3, 4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((4,), (2, 4, 3)),
]


def loss_gradients_fd(semiring, a, b, g, eps=1e-6):
    """Central finite differences of L(a, b) = sum(g * c(a, b))."""

    def loss(x, y):
        return float(np.sum(g * OPS[semiring](x, y)))

    grads = []
    for which in (0, 1):
        x = (a, b)[which]
        grad = np.zeros_like(x)
        for pos in np.ndindex(*x.shape):
            plus, minus = x.copy(), x.copy()
            plus[pos] += eps
            minus[pos] -= eps
            args_plus = (plus, b) if which == 0 else (a, plus)
            args_minus = (minus, b) if which == 0 else (a, minus)
            grad[pos] = (loss(*args_plus) - loss(*args_minus)) / (2 * eps)
        grads.append(grad)
    return grads


def winner_gap(a, b, semiring):
    """The smallest distance between an output's best and second-best candidate (uniqueness margin)."""
    a2, b2 = as_matrices(a, b)
    sums = np.sort(a2[..., :, :, None] + b2[..., None, :, :], axis=-2)
    if a2.shape[-1] < 2:
        return np.inf
    gaps = sums[..., -1, :] - sums[..., -2, :] if semiring.maximises else sums[..., 1, :] - sums[..., 0, :]
    return float(gaps.min())


@SEMIRINGS
@pytest.mark.parametrize(("a_shape", "b_shape"), GRAD_SHAPES)
def test_vjp_matches_finite_differences(semiring, a_shape, b_shape):
    """matmul_vjp equals central finite differences (float64) where every winner is unique."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    assert winner_gap(a, b, semiring) > 1e-4  # precondition: unique winners, FD step far below the gap
    c, index = OPS[semiring](a, b, return_indices=True)
    g = np.asarray(rng.standard_normal(c.shape))
    grad_a, grad_b = tropic.matmul_vjp(g, index, a.shape, b.shape)
    fd_a, fd_b = loss_gradients_fd(semiring, a, b, g)
    assert grad_a.shape == a.shape and grad_b.shape == b.shape
    np.testing.assert_allclose(grad_a, fd_a, atol=1e-6)
    np.testing.assert_allclose(grad_b, fd_b, atol=1e-6)


@SEMIRINGS
@pytest.mark.parametrize(("a_shape", "b_shape"), GRAD_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vjp_matches_torch_autograd(semiring, a_shape, b_shape, dtype):
    """matmul_vjp equals torch autograd of the naive broadcast formula (random data: no ties)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
    c, index = OPS[semiring](a, b, return_indices=True)
    g = np.asarray(rng.integers(-4, 5, c.shape), dtype=dtype)  # integer-valued: sums are exact in any order
    grad_a, grad_b = tropic.matmul_vjp(g, index, a.shape, b.shape)

    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    a2 = ta.unsqueeze(0) if ta.ndim == 1 else ta
    b2 = tb.unsqueeze(-1) if tb.ndim == 1 else tb
    sums = a2[..., :, :, None] + b2[..., None, :, :]
    tc = sums.max(dim=-2).values if semiring.maximises else sums.min(dim=-2).values
    tc = drop_vector_axes(a, b, tc)
    np.testing.assert_array_equal(c, tc.detach().numpy())
    tc.backward(torch.tensor(g))
    assert_identical(grad_a, ta.grad.numpy())
    assert_identical(grad_b, tb.grad.numpy())


@SEMIRINGS
@hsettings(40)
@given(
    operands=matmul_operands(SPECIAL, dtypes=(np.float32, np.float64), min_side=1, vectors=True),
    data=st.data(),
)
def test_numpy_vjp_matches_reference_vjp(semiring, operands, data):
    """The NumPy vjp kernel equals the reference vjp (array_api_strict input) bitwise, for integer
    gradients, including outputs with index -1; those send nothing anywhere."""
    xps = strict()
    a, b = operands
    c, index = OPS[semiring](a, b, return_indices=True)
    g = data.draw(hnp.arrays(c.dtype, c.shape, elements=st.integers(-5, 5).map(float)))
    grad_a, grad_b = tropic.matmul_vjp(g, index, a.shape, b.shape)
    s_grad_a, s_grad_b = tropic.matmul_vjp(xps.asarray(g), xps.asarray(index), a.shape, b.shape)
    assert_identical(s_grad_a, grad_a)
    assert_identical(s_grad_b, grad_b)
    assert grad_a.dtype == g.dtype and grad_a.shape == a.shape and grad_b.shape == b.shape
    # Each output with a winner sends g to exactly one entry of a and one of b (summed over batch
    # broadcasting); an output with index -1 sends nothing.
    sent = g[index >= 0].sum()
    assert grad_a.sum() == sent
    assert grad_b.sum() == sent
    # And the reference vjp kernel itself on matrix shapes (NumPy namespace) agrees too.
    if a.ndim > 1 and b.ndim > 1:
        ref_a, ref_b, ref_bias = matmul_vjp_reference(np, g, index, a.shape, b.shape)
        assert ref_bias is None
        assert_identical(ref_a, grad_a)
        assert_identical(ref_b, grad_b)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_vjp_of_broadcast_operands_rounds_once(dtype):
    """A broadcast operand's gradient sums over the batches in float64 and is rounded to the dtype
    once: no rounding per batch first (which changes some of these float16 entries)."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((1, 6, 5)).astype(dtype)
    b = rng.standard_normal((8, 5, 7)).astype(dtype)
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    g = rng.standard_normal(c.shape).astype(dtype) * dtype(3)
    grad_a, _ = tropic.matmul_vjp(g, index, a.shape, b.shape)
    per_batch64, _ = tropic.matmul_vjp(g.astype(np.float64), index, c.shape[:-1] + (5,), b.shape)
    assert_identical(grad_a, per_batch64.sum(axis=0, keepdims=True).astype(dtype))
    if dtype == np.float16:  # the test can tell: rounding each batch first gives other values here
        twice = per_batch64.astype(dtype).sum(axis=0, keepdims=True, dtype=dtype)
        assert np.any(twice != grad_a)


def test_vjp_all_zero_outputs_send_nothing():
    """A row of a that is all -inf yields outputs with index -1; no gradient reaches a or b from them."""
    a = np.array([[1.0, 2.0, 0.0], [-np.inf, -np.inf, -np.inf]])
    b = np.array([[0.0, 1.0], [0.0, -1.0], [5.0, -np.inf]])
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    np.testing.assert_array_equal(index, [[2, 0], [-1, -1]])
    g = np.array([[1.0, 10.0], [100.0, 1000.0]])
    grad_a, grad_b = tropic.matmul_vjp(g, index, a.shape, b.shape)
    np.testing.assert_array_equal(grad_a, [[10.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(grad_b, [[0.0, 10.0], [0.0, 0.0], [1.0, 0.0]])


def test_vjp_does_not_modify_its_inputs():
    """Nothing the caller owns is modified in place (forward operands, gradient, indices)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    copies = a.copy(), b.copy()
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    g = rng.standard_normal(c.shape)
    g_copy, index_copy = g.copy(), index.copy()
    tropic.matmul_vjp(g, index, a.shape, b.shape)
    for x, copy in zip((a, b, g, index), (*copies, g_copy, index_copy), strict=True):
        assert_identical(x, copy)


# --------------------------------------------------------------------------------------------------
# 5. Errors name the argument
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [tropic.maxplus_matmul, tropic.minplus_matmul])
def test_integer_dtype_rejected(op):
    """Integer operands have no infinities: TypeError naming the operand."""
    with pytest.raises(TypeError, match=r"^a must have a real floating-point dtype"):
        op(np.ones((2, 3), np.int64), np.ones((3, 2)))
    with pytest.raises(TypeError, match=r"^b must have a real floating-point dtype"):
        op(np.ones((2, 3)), np.ones((3, 2), np.int32))


def test_inner_dimension_mismatch():
    """K of a and K of b must agree; the message shows both shapes."""
    with pytest.raises(ValueError, match=r"a\.shape\[-1\] must equal b\.shape\[-2\].*\(2, 3\).*\(4, 2\)"):
        tropic.maxplus_matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"a\.shape\[-1\] must equal b\.shape\[-2\]"):
        tropic.maxplus_matmul(np.ones(3), np.ones(4))


def test_zero_dimensional_operand():
    """0-d operands are refused (as by matmul)."""
    with pytest.raises(ValueError, match=r"a and b must have at least 1 dimension"):
        tropic.maxplus_matmul(np.ones(()), np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"a and b must have at least 1 dimension"):
        tropic.minplus_matmul(np.ones((2, 1)), np.ones(()))


def test_batch_dimensions_must_broadcast():
    """Non-broadcastable batch dimensions: ValueError naming a and b and their shapes."""
    message = r"batch dimensions of a and b must broadcast.*\(2, 3, 4\).*\(3, 4, 5\)"
    with pytest.raises(ValueError, match=message):
        tropic.maxplus_matmul(np.ones((2, 3, 4)), np.ones((3, 4, 5)))


def test_mixing_array_libraries():
    """A NumPy and an array_api_strict operand: TypeError naming both arguments and libraries."""
    xps = strict()
    with pytest.raises(TypeError, match=r"same array library.*a from .*b from"):
        tropic.maxplus_matmul(np.ones((2, 2)), xps.ones((2, 2)))


def test_python_list_rejected():
    """Python lists are not arrays: TypeError naming the argument."""
    with pytest.raises(TypeError, match=r"^a must be an array"):
        tropic.maxplus_matmul([[1.0, 2.0]], np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"^b must be an array"):
        tropic.maxplus_matmul(np.ones((2, 2)), [[1.0], [2.0]])


def test_vjp_grad_shape_mismatch():
    """matmul_vjp refuses a gradient (or indices) not shaped like the product's output."""
    a, b = np.ones((2, 3)), np.ones((3, 4))
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    with pytest.raises(ValueError, match=r"^grad must have the product's output shape \(2, 4\)"):
        tropic.matmul_vjp(np.ones((4, 2)), index, a.shape, b.shape)
    with pytest.raises(ValueError, match=r"^indices must have the product's output shape \(2, 4\)"):
        tropic.matmul_vjp(c, index[:1], a.shape, b.shape)
    with pytest.raises(ValueError, match=r"^grad must have the product's output shape \(4,\)"):
        tropic.matmul_vjp(np.ones((1, 4)), index[0], (3,), b.shape)
