"""The max-plus-min product (``tropic.maxplus_minplus_matmul``): one call for the sum of a max-plus
and a min-plus product of one left operand, the layer of deep morphological networks.

It is a shortcut, so the reference is the composition it replaces: values, winners and gradients must
equal those of ``maxplus_matmul(...) + minplus_matmul(...)`` bit for bit, on every array library and
engine, in every dtype, with ties, infinities, signed zeros and NaN, and also where an autodiff engine
adds three or more gradients into one operand (floating-point sums depend on their order).
"""

from __future__ import annotations

import numpy as np
import pytest

import tropic

from .helpers import assert_identical, tie_heavy

# (a, b, bias_max, bias_min shapes; whether b_min differs from b)
CASES = [
    ((5, 7), (7, 4), (4,), (4,), False),
    ((5, 7), (7, 4), None, (4,), True),
    ((2, 3, 6), (6, 5), (5,), None, False),
    ((7,), (7, 4), (4,), (4,), True),
    ((5, 7), (7,), None, None, False),
    ((3, 1, 4, 6), (2, 6, 3), (4, 3), (3,), True),
    ((4, 300), (300, 9), (9,), (9,), False),  # 301 candidates: int16 winners
]


def operands(rng, case, dtype):
    a_shape, b_shape, bias_max_shape, bias_min_shape, separate = case
    a, b = tie_heavy(rng, a_shape, dtype), tie_heavy(rng, b_shape, dtype)
    b_min = tie_heavy(rng, b_shape, dtype) if separate else None
    bias_max = None if bias_max_shape is None else tie_heavy(rng, bias_max_shape, dtype)
    bias_min = None if bias_min_shape is None else tie_heavy(rng, bias_min_shape, dtype)
    return a, b, b_min, bias_max, bias_min


def composition(a, b, b_min, bias_max, bias_min, return_indices=False):
    """What the operator replaces: the two products, then the add."""
    b_min = b if b_min is None else b_min
    c_max, k_max = tropic.maxplus_matmul(a, b, bias=bias_max, return_indices=True)
    c_min, k_min = tropic.minplus_matmul(a, b_min, bias=bias_min, return_indices=True)
    return (c_max + c_min, (k_max, k_min)) if return_indices else c_max + c_min


def on(place, arrays):
    return [None if x is None else place.array(x) for x in arrays]


@pytest.mark.parametrize("case", CASES)
def test_values_and_winners_are_those_of_the_two_products(place, case):
    rng = np.random.default_rng(CASES.index(case))
    for dtype in (np.float32, np.float64):
        a, b, b_min, bias_max, bias_min = on(place, operands(rng, case, dtype))
        expected, (k_max, k_min) = composition(a, b, b_min, bias_max, bias_min, return_indices=True)
        c = tropic.maxplus_minplus_matmul(a, b, b_min=b_min, bias_max=bias_max, bias_min=bias_min)
        assert_identical(place.numpy(c), place.numpy(expected))
        c, k = tropic.maxplus_minplus_matmul(
            a, b, b_min=b_min, bias_max=bias_max, bias_min=bias_min, return_indices=True
        )
        assert_identical(place.numpy(c), place.numpy(expected))
        k = place.numpy(k)
        k_max, k_min = place.numpy(k_max), place.numpy(k_min)
        assert k.shape == (2, *k_max.shape)
        assert_identical(k[0], k_max.astype(k.dtype))
        assert_identical(k[1], k_min.astype(k.dtype))
        assert k.dtype == np.result_type(k_max.dtype, k_min.dtype)


def test_float16_values_are_those_of_the_two_products(float16_place):
    """Each product rounds its sums to float16; the add of the two float16 results rounds once more."""
    rng = np.random.default_rng(40)
    for case in CASES[:3]:
        arrays = operands(rng, case, np.float64)
        # values spread over float16's range, so that the add rounds
        arrays = [
            None if x is None else (x * rng.uniform(0.5, 300.0, x.shape)).astype(np.float16) for x in arrays
        ]
        a, b, b_min, bias_max, bias_min = on(float16_place, arrays)
        c = tropic.maxplus_minplus_matmul(a, b, b_min=b_min, bias_max=bias_max, bias_min=bias_min)
        expected = composition(a, b, b_min, bias_max, bias_min)
        assert_identical(float16_place.numpy(c), float16_place.numpy(expected))


@pytest.mark.parametrize("case", CASES[:4])
def test_gradients_are_those_of_the_two_products(gradient_place, case):
    rng = np.random.default_rng(50 + CASES.index(case))
    for dtype in (np.float32, np.float64):
        arrays = operands(rng, case, dtype)
        out_shape = np.shape(composition(*arrays))
        g = rng.standard_normal(out_shape).astype(dtype)
        results = []
        for fused in (True, False):
            leaves = [None if x is None else gradient_place.leaf(x) for x in arrays]
            a, b, b_min, bias_max, bias_min = leaves
            if fused:
                c = tropic.maxplus_minplus_matmul(a, b, b_min=b_min, bias_max=bias_max, bias_min=bias_min)
            else:
                c = composition(a, b, b_min, bias_max, bias_min)
            present = [t for t in leaves if t is not None]
            results.append(gradient_place.backward(c, g, present))
        for fused_grad, expected in zip(*results, strict=True):
            assert_identical(fused_grad, expected)


def test_an_operand_used_three_times_gets_its_gradients_added_in_the_same_order(gradient_place):
    """``x + mpm(x)`` (a residual block): ``x`` gets three gradients, and their float sum depends on
    the order. The operator lists the min-plus operands first so that engines add them as they add
    those of two separate calls; the data are chosen so that the other order gives other bits."""
    rng = np.random.default_rng(60)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    g = rng.standard_normal((16, 8)).astype(np.float32)
    results = []
    for fused in (True, False):
        tx, tw = gradient_place.leaf(x), gradient_place.leaf(w)
        if fused:
            y = tx + tropic.maxplus_minplus_matmul(tx, tw)
        else:
            y = tx + (tropic.maxplus_matmul(tx, tw) + tropic.minplus_matmul(tx, tw))
        results.append(gradient_place.backward(y, g, [tx, tw]))
    assert_identical(results[0][0], results[1][0])
    assert_identical(results[0][1], results[1][1])
    # the test can fail: the two orders of adding the products' gradients differ here
    _, (k_max, k_min) = composition(x, w, None, None, None, return_indices=True)
    from_max = tropic.matmul_vjp(g, k_max, x.shape, w.shape)[0]
    from_min = tropic.matmul_vjp(g, k_min, x.shape, w.shape)[0]
    min_first, max_first = (g + from_min) + from_max, (g + from_max) + from_min
    assert not np.array_equal(min_first, max_first)
    # torch runs the later call's node (the min-plus product's) first, tropic.autodiff the earlier
    assert_identical(results[0][0], min_first if gradient_place.name.startswith("torch") else max_first)


def test_mixed_dtypes_promote_per_product(place):
    """Operands of two dtypes: each product promotes its own (the max-plus one stays float32 here),
    as the two calls would; the winners come back as the place's arrays or tensors, as always."""
    rng = np.random.default_rng(70)
    a = rng.standard_normal((4, 5)).astype(np.float32) * 1e3
    b = rng.standard_normal((5, 3)).astype(np.float32) * 1e-3
    bias_min = rng.standard_normal(3)  # float64
    a, b, bias_min = on(place, (a, b, bias_min))
    c, k = tropic.maxplus_minplus_matmul(a, b, bias_min=bias_min, return_indices=True)
    assert type(k) is type(c)
    expected, (k_max, k_min) = composition(a, b, None, None, bias_min, return_indices=True)
    assert_identical(place.numpy(c), place.numpy(expected))
    k, k_max, k_min = place.numpy(k), place.numpy(k_max), place.numpy(k_min)
    assert_identical(k[0], k_max.astype(k.dtype))
    assert_identical(k[1], k_min.astype(k.dtype))


def test_bad_arguments_are_named():
    a, b = np.zeros((2, 3)), np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"b_min must have b's shape \(3, 4\), got \(3, 5\)"):
        tropic.maxplus_minplus_matmul(a, b, b_min=np.zeros((3, 5)))
    with pytest.raises(TypeError, match="a must have a real floating-point dtype"):
        tropic.maxplus_minplus_matmul(np.zeros((2, 3), np.int32), b)
    with pytest.raises(ValueError, match=r"^bias_min must broadcast to the product's shape \(2, 4\)"):
        tropic.maxplus_minplus_matmul(a, b, bias_min=np.zeros(5))
    with pytest.raises(ValueError, match=r"^bias_max must broadcast to the product's shape \(2, 4\)"):
        tropic.maxplus_minplus_matmul(a, b, bias_max=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="contracted dimension"):
        tropic.maxplus_minplus_matmul(a, np.zeros((4, 4)))


def test_torch_op_without_a_gradient_skips_the_winners(monkeypatch):
    """No gradient to record and no indices asked for: both products run values only (the same
    bits); with a gradient to record they compute their winners."""
    torch = pytest.importorskip("torch")
    import tropic.core.matmul as matmul_module

    asked = []
    run = matmul_module._run

    def recording_run(*args, **kwargs):
        asked.append(kwargs.get("winners", True))
        return run(*args, **kwargs)

    monkeypatch.setattr(matmul_module, "_run", recording_run)
    rng = np.random.default_rng(80)
    a, b, b_min, bias_max, bias_min = (
        None if x is None else torch.from_numpy(x) for x in operands(rng, CASES[1], np.float32)
    )
    with torch.no_grad():
        c = tropic.maxplus_minplus_matmul(a, b, b_min=b_min, bias_max=bias_max, bias_min=bias_min)
    assert asked == [False, False]
    monkeypatch.setattr(matmul_module, "_run", run)
    assert_identical(c.numpy(), composition(a, b, b_min, bias_max, bias_min).numpy())
    monkeypatch.setattr(matmul_module, "_run", recording_run)
    asked.clear()
    tropic.maxplus_minplus_matmul(a.requires_grad_(), b, b_min=b_min, bias_max=bias_max, bias_min=bias_min)
    assert asked == [True, True]


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_torch_half_precision_values_and_gradients_are_those_of_the_two_products(dtype_name):
    """The torch CPU kernels widen half precision, round every sum back, and narrow the results: the
    operator adds the two products in float32 and rounds once, as torch adds two half tensors, and
    rounds each gradient as the two calls' backward ops do."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(90)

    def leaf(shape, scale):
        return torch.tensor(rng.standard_normal(shape) * scale, dtype=dtype, requires_grad=True)

    x, w, bias_max, bias_min = leaf((6, 9), 50.0), leaf((5, 9), 30.0), leaf(5, 40.0), leaf(5, 40.0)
    g = torch.tensor(rng.standard_normal((6, 5)), dtype=dtype)
    results = []
    for fused in (True, False):
        for t in (x, w, bias_max, bias_min):
            t.grad = None
        if fused:
            y = tropic.maxplus_minplus_matmul(x, w.T, bias_max=bias_max, bias_min=bias_min)
        else:
            y = tropic.maxplus_matmul(x, w.T, bias=bias_max) + tropic.minplus_matmul(x, w.T, bias=bias_min)
        y.backward(g)
        results.append([y.detach()] + [t.grad for t in (x, w, bias_max, bias_min)])
    for fused_result, expected in zip(*results, strict=True):
        assert fused_result.dtype == dtype
        assert torch.equal(fused_result.view(torch.int16), expected.view(torch.int16))


def test_torch_backward_op_wants_the_stacked_winners():
    """The backward op checks ``indices`` against the stacked winners' shape (2, M, N), not the
    output's (the spec's ``winners_shape``)."""
    torch = pytest.importorskip("torch")
    backward = torch.ops.tropic.maxplus_minplus_matmul_backward
    grad = torch.zeros(3, 5)
    shapes = ([3, 4], [4, 5], None, [3, 4], [4, 5], None)
    with pytest.raises(
        ValueError, match=r"indices must have the shape of the winners \(2, 3, 5\), got \(3, 5\)"
    ):
        backward(grad, torch.zeros(3, 5, dtype=torch.int8), *shapes, [True] * 6, True)
    grads = backward(grad, torch.zeros(2, 3, 5, dtype=torch.int8), *shapes, [True] * 6, True)
    assert [None if g is None else tuple(g.shape) for g in grads] == [
        (3, 4),
        (4, 5),
        None,
        (3, 4),
        (4, 5),
        None,
    ]


PAIR_SHAPES = [
    ((1, 7), 5),
    ((2, 9), 17),
    ((3, 300), 40),
    ((4, 300), 9),
    ((37, 600), 45),
    ((64, 256), 256),
    ((5, 1100), 33),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("a_shape", "N"), [*PAIR_SHAPES, ((2, 3, 40), 16)], ids=str)
def test_the_pair_kernel_gives_the_bits_of_two_product_calls(monkeypatch, a_shape, N, dtype):
    """The NumPy backend's ``matmul_pair`` (a max-plus and a min-plus product of one ``a`` and one
    ``b``, in one compiled call) returns the sum of what its ``matmul`` kernel returns for the two
    products and their winners stacked (in the wider of the two products' index dtypes, as the
    operator stacks them), bit for bit: ties, both infinities, signed zeros, NaN
    in ``a`` or in ``b``, ``b`` in C order and as a weight's transpose, a bias on both products, on
    one or on neither, values only, either product first, on one thread and split on the pool. The
    shapes take the micro-kernel's rows 1 to 3, the panels' column tails, k blocks past the first
    (K = 600, 1100: the bests reloaded; 3 rows and B in C order: B read in place by blocks of 64 k)
    and an ``a`` with leading axes."""
    from tropic.backends.numpy import compiled, kernels
    from tropic.core.semiring import MAX_PLUS, MIN_PLUS

    if compiled.entry("matmul_c", "product") is None:
        pytest.skip("the pair kernel needs the compiled product")
    rng = np.random.default_rng(sum(a_shape) + N)
    K = a_shape[-1]

    def data(shape):  # ties, signed zeros, and few enough infinities that most bests are finite
        x = rng.integers(-8, 9, shape).astype(dtype)
        for value, share in ((np.inf, 0.1 / K), (-np.inf, 0.1 / K), (-0.0, 0.1)):
            x[rng.random(shape) < share] = value
        return x

    a, weight = data(a_shape), data((N, K))
    a_nan, weight_nan = a.copy(), weight.copy()
    a_nan.reshape(-1)[rng.integers(a.size)] = np.nan
    weight_nan.reshape(-1)[rng.integers(weight.size)] = np.nan
    bias_max, bias_min = (tie_heavy(rng, (N,), dtype, nan=0.1) for _ in range(2))
    monkeypatch.setattr(kernels, "_PARALLEL_PRODUCT_PAIRS", 0)  # every call on the pool with 2 threads
    for threads in (1, 2):
        tropic.set_num_threads(threads)
        try:
            for left, w in ((a, weight), (a_nan, weight), (a, weight_nan)):
                for b in (w.T, np.ascontiguousarray(w.T)):
                    for biases in ((bias_max, bias_min), (None, bias_min), (bias_max, None), (None, None)):
                        for winners in (True, False):
                            operands = [(left, b, biases[0], True), (left, b, biases[1], False)]
                            for order in (operands, operands[::-1]):
                                got = kernels.matmul_pair(np, *order, None, winners)
                                assert got is not None
                                products = {
                                    maximise: kernels.matmul(
                                        np, MAX_PLUS if maximise else MIN_PLUS, x, y, bias, None, winners
                                    )
                                    for x, y, bias, maximise in order
                                }
                                assert_identical(got[0], products[True][0] + products[False][0])
                                if not winners:
                                    assert got[1] is None
                                    continue
                                dtype = np.result_type(products[True][1].dtype, products[False][1].dtype)
                                expected = np.stack([products[op[3]][1].astype(dtype) for op in order])
                                assert_identical(got[1], expected)
        finally:
            tropic.set_num_threads(None)


def test_the_pair_kernel_declines_what_it_does_not_cover_and_the_operator_takes_it(monkeypatch):
    """``matmul_pair`` returns None (the operator then makes the two calls) for two different
    ``b`` (or two objects), two products of one sense, a vector operand, two dtypes, a bias that
    broadcasts and a rounding; the operator hands it a layer's operands (one call, values only
    without a gradient)."""
    from tropic.backends.numpy import compiled, kernels
    from tropic.core import dispatch

    if compiled.entry("matmul_c", "product") is None:
        pytest.skip("the pair kernel needs the compiled product")
    a, w = np.ones((2, 3)), np.ones((3, 4))
    a32, vector = a.astype(np.float32), a[0]
    declined = [
        ((a, w, None, True), (a, w.copy(), None, False), None),  # two b
        ((a, w.T.T, None, True), (a, w, None, False), None),  # two objects (the operator passes one)
        ((a, w, None, True), (a, w, None, True), None),  # two max-plus products
        ((vector, w, None, True), (vector, w, None, False), None),  # a vector operand
        ((a32, w, None, True), (a32, w, None, False), None),  # a and b of two dtypes
        ((a, w, np.ones(4, np.float32), True), (a, w, None, False), None),  # a bias of another dtype
        ((a, w, np.ones(1), True), (a, w, None, False), None),  # a bias that broadcasts
        ((a, w, None, True), (a, w, None, False), "bfloat16"),  # a rounding
    ]
    for first, second, rounding in declined:
        assert kernels.matmul_pair(np, first, second, rounding, True) is None
    asked = []
    real = kernels.matmul_pair

    def recording(xp, first, second, rounding, winners):
        asked.append(winners)
        return real(xp, first, second, rounding, winners)

    monkeypatch.setitem(dispatch._kernels, ("numpy", "matmul_pair"), recording)
    rng = np.random.default_rng(82)
    x, w = tie_heavy(rng, (4, 6), np.float64), tie_heavy(rng, (3, 6), np.float64)
    bias_max, bias_min = tie_heavy(rng, (3,), np.float64), tie_heavy(rng, (3,), np.float64)
    c = tropic.maxplus_minplus_matmul(x, w.T, bias_max=bias_max, bias_min=bias_min)
    assert asked == [False]
    assert_identical(c, composition(x, w.T, None, bias_max, bias_min))
    torch = pytest.importorskip("torch")
    from tropic.torch import nn as tnn

    layer = tnn.MPM(6, 3, seed=0)
    asked.clear()
    with torch.no_grad():
        layer(torch.from_numpy(x).float())
    layer(torch.from_numpy(x).float()).sum().backward()
    assert asked == [False, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 7, 4), (3, 300, 9), (64, 256, 70), (600, 40, 13)], ids=str)
def test_the_pair_backward_gives_the_bits_of_two_backward_calls(monkeypatch, shape, dtype):
    """The NumPy backend's ``matmul_vjp_pair`` (both products' scatters in one compiled call) returns
    what its ``matmul_vjp`` kernel returns for each product, bit for bit: winners of a real forward
    (ties, -1 where nothing won, K where a bias won), int8 and int16 winners, a bias on both
    products, on one or on neither, every subset of the gradients that asks something of both
    products, W's layout for the gradients of b, on one thread and split on the pool."""
    from itertools import product as combinations

    from tropic.backends.numpy import compiled, kernels

    if compiled.entry("scatter_c", "matmul_vjp") is None:
        pytest.skip("the pair backward needs the compiled scatter")
    M, K, N = shape
    rng = np.random.default_rng(M + K + N)
    a, w = tie_heavy(rng, (M, K), dtype, nan=0.0), tie_heavy(rng, (N, K), dtype, nan=0.0)
    bias_max, bias_min = tie_heavy(rng, (N,), dtype, nan=0.0), tie_heavy(rng, (N,), dtype, nan=0.0)
    grad = (rng.integers(-64, 65, (M, N)) / 8).astype(dtype)
    monkeypatch.setattr(kernels, "_PARALLEL_PRODUCT_PAIRS", 0)
    for biases in ((bias_max, bias_min), (bias_max, None), (None, None)):
        _, winners = tropic.maxplus_minplus_matmul(
            a, w.T, bias_max=biases[0], bias_min=biases[1], return_indices=True
        )
        shapes = [(M, K), (K, N), None if biases[0] is None else (N,)] * 2
        shapes[5] = None if biases[1] is None else (N,)
        for needs in combinations((True, False), repeat=6):
            if not any(needs[:3]) or not any(needs[3:]):
                continue
            for transposed, threads in ((True, 1), (False, 2), (True, 2)):
                tropic.set_num_threads(threads)
                try:
                    got = kernels.matmul_vjp_pair(np, grad, winners, shapes, needs, transposed, transposed)
                    want = []
                    for p in range(2):
                        want += kernels.matmul_vjp(
                            np,
                            grad,
                            winners[p],
                            *shapes[3 * p : 3 * p + 3],
                            needs[3 * p : 3 * p + 3],
                            transposed,
                        )
                finally:
                    tropic.set_num_threads(None)
                assert got is not None
                for g, expected, need, given in zip(got, want, needs, shapes, strict=True):
                    if need and given is not None:
                        assert_identical(g, expected)
                        assert g.strides == expected.strides  # W's layout where asked
                    else:
                        assert g is None and expected is None


def test_the_pair_backward_declines_what_it_does_not_cover_and_names_a_bad_winner():
    """``matmul_vjp_pair`` returns None (the operator then makes the two calls) for a batch, a
    broadcast operand, a bias the scatter does not take, two layouts of b and a product that needs
    no gradient; a winner out of range raises what the single backward raises."""
    from tropic.backends.numpy import compiled, kernels

    if compiled.entry("scatter_c", "matmul_vjp") is None:
        pytest.skip("the pair backward needs the compiled scatter")
    grad, winners = np.ones((4, 3)), np.zeros((2, 4, 3), np.int8)
    matrices = [(4, 5), (5, 3), (3,)] * 2
    every = (True,) * 6
    declined = [
        (np.ones((2, 4, 3)), np.zeros((2, 2, 4, 3), np.int8), matrices, every, (False, False)),  # batch
        (grad, winners, [(4, 5), (2, 5, 3), None] * 2, every, (False, False)),  # b broadcast
        (grad, winners, [(4, 5), (5, 3), (1,)] * 2, every, (False, False)),  # a bias that broadcasts
        (grad, winners, matrices, every, (True, False)),  # two layouts of b
        (grad, winners, matrices, (True,) * 3 + (False,) * 3, (False, False)),  # one product only
    ]
    for g, k, shapes, needs, layouts in declined:
        assert kernels.matmul_vjp_pair(np, g, k, shapes, needs, *layouts) is None
    bad = winners.copy()
    bad[1, 2, 0] = 5  # K = 5 candidates, no bias on the second product
    shapes = [(4, 5), (5, 3), (3,), (4, 5), (5, 3), None]
    with pytest.raises(ValueError) as single:
        kernels.matmul_vjp(np, grad, bad[1], *shapes[3:], every[3:])
    with pytest.raises(ValueError) as pair:
        kernels.matmul_vjp_pair(np, grad, bad, shapes, every, False, False)
    assert str(pair.value) == str(single.value)
