"""Binarised morphological layers (BiSE, LUI, BiSEL, DenseLUI) and their binarisation.

References nobody here wrote: SciPy's ``ndimage.binary_dilation`` / ``binary_erosion`` for the binary
morphology, ``scipy.optimize.minimize(method="SLSQP")`` for the projection onto the activable set,
and brute force over all subsets / all binary inputs for the activation tests and projections.

Border convention: a BiSE pads with replicated border pixels. For SciPy comparisons on whole images we
either pad the image with ``mode="edge"`` ourselves and crop SciPy's result (any structuring element),
or, for the 3x3 cross, use ``border_value=1`` (erosion) / ``0`` (dilation): for an SE whose
neighbours across the border are the pixel itself (the cross), the replicated border is then the same.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from scipy.optimize import minimize

import tropic.autodiff as ad
import tropic.nn as nn
from tropic.nn import binarize as bz
from tropic.nn._synthetic import diskorect
from tropic.nn.binary import (
    LUI,
    BiSE,
    BiSEL,
    DenseLUI,
    activable_set_regularization,
    constant_set_regularization,
)

CROSS = ndimage.generate_binary_structure(2, 1)


def _inverse_softplus(y):
    y = np.asarray(y, dtype=np.float64)
    return y + np.log(-np.expm1(-y))


def _set(layer, w, b, p=None):
    """Hand-set ``W = softplus(theta)``, ``B = softplus(beta)`` (and ``p``) of a BiSE-type layer."""
    dtype = layer.theta.data.dtype
    layer.theta.data[...] = _inverse_softplus(np.asarray(w).reshape(layer.theta.shape)).astype(dtype)
    layer.beta.data[...] = _inverse_softplus(np.asarray(b, dtype=np.float64).reshape(-1)).astype(dtype)
    if p is not None:
        layer.scale.data[...] = np.asarray(p, dtype=dtype).reshape(-1)


def _edge_reference(x, s, erosion):
    """SciPy binary morphology of the edge-padded image, cropped: the BiSE's border convention.

    The BiSE correlates with ``1_S``, so its dilation is SciPy's dilation by the reflected ``S``.
    """
    r = s.shape[0] // 2, s.shape[1] // 2
    padded = np.pad(x.astype(bool), ((r[0], r[0]), (r[1], r[1])), mode="edge")
    if erosion:
        out = ndimage.binary_erosion(padded, s)
    else:
        out = ndimage.binary_dilation(padded, s[::-1, ::-1])
    return out[r[0] : r[0] + x.shape[0], r[1] : r[1] + x.shape[1]]


def _truth_table(n):
    return np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float64)


# -- activation tests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "b", "expected"),
    [
        # dilation: sum outside S <= B < min over S
        ([3.0, 3.0, 1.0], 1.5, ("dilation", [1, 1, 0])),
        ([3.0, 3.0, 1.0], 1.0, ("dilation", [1, 1, 0])),  # boundary: sum outside S == B is allowed
        ([3.0, 3.0, 1.0], 2.999, ("dilation", [1, 1, 0])),
        ([3.0, 3.0, 1.0], 3.0, None),  # boundary: B == min over S is not (and no erosion either)
        ([3.0, 3.0, 1.0], 0.99, ("dilation", [1, 1, 1])),  # B < 1: every pixel alone switches it on
        ([3.0, 3.0, 1.0], 3.5, None),
        # erosion: sum(W) - min over S <= B < sum over S
        ([2.0, 2.0, 2.0], 5.0, ("erosion", [1, 1, 1])),
        ([2.0, 2.0, 2.0], 4.0, ("erosion", [1, 1, 1])),  # boundary: sum - min == B allowed
        ([2.0, 2.0, 0.5], 4.0, ("erosion", [1, 1, 1])),  # 4 <= 4 < 4.5: the 0.5 is needed too
        ([2.0, 2.0, 0.5], 3.0, ("erosion", [1, 1, 0])),  # 2.5 <= 3 < 4
        ([2.0, 2.0, 2.0], 6.0, ("dilation", [0, 0, 0])),  # w.x <= 6 always: the constant 0
        ([2.0, 2.0, 2.0], 3.9, None),
        ([4.0, 0.5, 0.5], 1.0, ("dilation", [1, 0, 0])),  # one point: both tests pass, B <= sum/2
        ([4.0, 0.5, 0.5], 3.5, ("erosion", [1, 0, 0])),  # one point, B > sum/2: read as an erosion
    ],
)
def test_activation_hand_made(w, b, expected):
    activated, is_erosion, s = bz.activation_test(w, b)
    if expected is None:
        assert not activated
        return
    assert activated
    assert (bz.EROSION if is_erosion else bz.DILATION) == expected[0]
    assert s.tolist() == [bool(v) for v in expected[1]]


def test_activation_matches_brute_force_truth_tables():
    # The neuron reads as x -> [w.x > b]; it is activated iff that Boolean function is an OR or an AND
    # of a subset of inputs, and the returned (operation, S) must reproduce it on every binary input.
    rng = np.random.default_rng(0)
    seen = {"dilation": 0, "erosion": 0, "none": 0}
    for _ in range(600):
        n = int(rng.integers(1, 8))
        w = rng.integers(0, 5, n).astype(np.float64)  # small integers: many boundary cases
        b = float(rng.integers(0, 2 * int(w.sum()) + 2)) / 2
        x = _truth_table(n)
        truth = x @ w > b
        ors = [x[:, list(c)].max(axis=1, initial=0) > 0 for k in range(n + 1) for c in _subsets(n, k)]
        ands = [x[:, list(c)].min(axis=1) > 0 for k in range(1, n + 1) for c in _subsets(n, k)]
        expected = any(np.array_equal(truth, f) for f in ors + ands)
        activated, is_erosion, s = bz.activation_test(w, b)
        assert bool(activated) == expected, (w, b)
        if activated:
            picked = x[:, s]
            value = picked.min(axis=1) > 0 if is_erosion else picked.max(axis=1, initial=0) > 0
            np.testing.assert_array_equal(value, truth)
            seen["erosion" if is_erosion else "dilation"] += 1
        else:
            seen["none"] += 1
    assert min(seen.values()) > 50, seen


def _subsets(n, k):
    return itertools.combinations(range(n), k)


def test_find_operation_and_vectorised_tests():
    w = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(bz.find_operation(w, np.array([2.0, 2.5])), [False, True])
    activated, is_erosion, s = bz.activation_test(w, np.array([0.5, 3.5]))
    np.testing.assert_array_equal(activated, [True, True])
    np.testing.assert_array_equal(is_erosion, [False, True])
    assert s.all()


# -- projections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_constant_set_projection_is_the_best_subset(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        w = rng.exponential(1.0, n) * (rng.random(n) < 0.8)
        s, d2 = bz.project_constant_set(w)
        brute = min(
            float(bz.constant_set_distance(w, np.isin(np.arange(n), c)))
            for k in range(1, n + 1)
            for c in _subsets(n, k)
        )
        assert d2 == pytest.approx(brute, rel=1e-12, abs=1e-12)
        assert float(bz.constant_set_distance(w, s)) == pytest.approx(brute, rel=1e-12, abs=1e-12)
        # the closed form of the distance: ||w - mean_S(w) 1_S||^2
        assert float(bz.constant_set_distance(w, s)) == pytest.approx(
            float(((w - np.where(s, w[s].mean(), 0.0)) ** 2).sum()), rel=1e-9, abs=1e-12
        )


def test_constant_set_projection_batched_and_ties():
    w = np.array([[1.0, 1.0, 1.0], [0.0, 5.0, 0.1]])
    s, d2 = bz.project_constant_set(w)
    np.testing.assert_array_equal(s, [[True, True, True], [False, True, False]])
    np.testing.assert_allclose(d2, [0.0, 0.01], atol=1e-12)


def test_thresholds():
    w = np.array([0.0, 0.6, 0.7, 1.0, 1.2])  # mean 0.7: 2/3 mean = 0.4667, 3/4 mean = 0.525
    assert bz.threshold_set(w).tolist() == [False, True, True, True, True]
    assert bz.threshold_set(w, 0.75).tolist() == [False, True, True, True, True]
    assert bz.threshold_set(w, 1.0).tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="ratio"):
        bz.threshold_set(w, -1.0)


def _slsqp(w, b, s, operation):
    """The same QP solved numerically (reference only: the library never calls a solver)."""
    n = w.size
    rows = []
    if operation == "dilation":
        rows.append(np.append(np.where(s, 0.0, -1.0), 1.0))  # b' - sum_{not S} w' >= 0
        for i in np.flatnonzero(s):
            rows.append(np.eye(n + 1)[i] - np.eye(n + 1)[n])  # w'_i - b' >= 0
    else:
        for i in np.flatnonzero(s):
            row = -np.ones(n + 1)
            row[i], row[n] = 0.0, 1.0  # b' - (sum w' - w'_i) >= 0
            rows.append(row)
        rows.append(np.append(s.astype(float), -1.0))  # sum_S w' - b' >= 0
    a = np.array(rows)
    z0 = np.append(w, b)
    result = minimize(
        lambda z: ((z - z0) ** 2).sum(),
        z0,
        jac=lambda z: 2 * (z - z0),
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda z: a @ z, "jac": lambda z: a}],
        bounds=[(0, None)] * n + [(None, None)],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert (a @ result.x).min() > -1e-8
    return result.fun


@pytest.mark.parametrize("operation", ["dilation", "erosion"])
def test_activable_projection_matches_slsqp(operation):
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(2, 7))
        w = rng.exponential(1.0, n) * (rng.random(n) < 0.8)
        b = float(rng.exponential(1.0) * rng.choice([0.3, 1.0, 3.0]))
        s = np.zeros(n, dtype=bool)
        s[rng.choice(n, int(rng.integers(1, n + 1)), replace=False)] = True
        w_proj, b_proj, d2 = bz.project_activable(w, b, s, operation)
        assert d2 == pytest.approx(_slsqp(w, b, s, operation), rel=1e-6, abs=1e-9)
        assert d2 == pytest.approx(((w_proj - w) ** 2).sum() + (b_proj - b) ** 2, rel=1e-12, abs=1e-12)
        # the projected point is (the closure of) that activation: nudging B inside the interval
        # makes it activated with exactly this S, unless the interval is a single point
        assert (w_proj >= 0).all()
        inside, outside = w_proj[s], w_proj[~s]
        if operation == "dilation":
            assert outside.sum() <= b_proj + 1e-9 and b_proj <= inside.min() + 1e-9
        else:
            assert w_proj.sum() - inside.min() <= b_proj + 1e-9 and b_proj <= inside.sum() + 1e-9


def test_activable_projection_is_best_over_all_subsets():
    rng = np.random.default_rng(4)
    for _ in range(40):
        n = int(rng.integers(2, 6))
        w = rng.exponential(1.0, n)
        b = float(rng.exponential(1.0) * rng.choice([0.5, 1.0, 2.0]))
        operation, s, w_proj, b_proj, d2 = bz.activable_projection(w, b)
        brute = min(
            bz.project_activable(w, b, np.isin(np.arange(n), c), op)[2]
            for k in range(1, n + 1)
            for c in _subsets(n, k)
            for op in ("dilation", "erosion")
        )
        assert d2 == pytest.approx(brute, rel=1e-9, abs=1e-12)
        assert bz.project_activable(w, b, s, operation)[2] == pytest.approx(d2, rel=1e-12, abs=1e-12)


def test_activable_projection_of_an_activated_neuron_is_itself():
    operation, s, w_proj, b_proj, d2 = bz.activable_projection([3.0, 3.0, 1.0], 1.5)
    assert (operation, s.tolist(), d2) == ("dilation", [True, True, False], 0.0)
    np.testing.assert_array_equal(w_proj, [3.0, 3.0, 1.0])


def test_binarize_methods():
    w = np.array([[0.1, 2.0, 1.9, 0.3], [3.0, 3.0, 1.0, 0.0]])
    b = np.array([1.95, 1.5])  # neuron 0 is not activated, neuron 1 is a dilation by {0, 1}
    for method in bz.METHODS:
        is_erosion, s, activated = bz.binarize(w, b, method)
        np.testing.assert_array_equal(activated, [False, True])
        assert s[1].tolist() == [True, True, False, False] and not is_erosion[1]
    assert bz.binarize(w, b, "constant")[1][0].tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="method"):
        bz.binarize(w, b, "qp")


def test_binarize_input_errors():
    with pytest.raises(ValueError, match="b must have shape"):
        bz.activation_test(np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match="finite"):
        bz.project_constant_set([1.0, np.nan])
    with pytest.raises(ValueError, match="operation"):
        bz.project_activable([1.0, 2.0], 1.0, [True, False], "opening")
    with pytest.raises(ValueError, match="non-empty"):
        bz.project_activable([1.0, 2.0], 1.0, [False, False], "dilation")


# -- the BiSE layer ------------------------------------------------------------------------------

L_SHAPE = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)  # asymmetric: pins the orientation


def _hand_set_bise(s, operation, p=1.0):
    bise = BiSE(1, 1, s.shape, seed=0, dtype=np.float64)
    w = np.where(s, 2.0, 0.05)
    inside, outside = w[s].sum(), w[~s].sum()
    # dilation: outside <= B < min_S; erosion: sum - min_S <= B < sum_S
    b = (outside + 2.0) / 2 if operation == "dilation" else (inside + outside - 2.0 + inside) / 2
    _set(bise, w, b, p)
    return bise


@pytest.mark.parametrize("operation", ["dilation", "erosion"])
@pytest.mark.parametrize("s", [L_SHAPE, CROSS, np.ones((1, 3), dtype=bool)], ids=["L", "cross", "row"])
def test_binary_forward_is_scipy_morphology(operation, s):
    bise = _hand_set_bise(s, operation)
    assert bise.find_operation() == operation
    read = bise.is_activated()
    assert read is not None and read[0] == operation
    np.testing.assert_array_equal(read[1], s[None])
    x = diskorect(3, 20, seed=5)
    out = bise.binary()(x).numpy()
    assert out.dtype == np.float64 and set(np.unique(out)) <= {0.0, 1.0}
    for image, result in zip(x[:, 0], out[:, 0], strict=True):
        np.testing.assert_array_equal(result.astype(bool), _edge_reference(image, s, operation == "erosion"))
    # an activated BiSE is exact: its smooth output is on the same side of 1/2 everywhere
    smooth = bise.binary(False)(x).numpy()
    np.testing.assert_array_equal(smooth > 0.5, out > 0.5)


def test_negative_scale_complements_the_binary_output():
    bise = _hand_set_bise(CROSS, "dilation", p=-2.0)
    x = diskorect(2, 16, seed=6)
    out = bise.binary()(x).numpy()
    expected = [~_edge_reference(image, CROSS, erosion=False) for image in x[:, 0]]
    np.testing.assert_array_equal(out[:, 0].astype(bool), np.array(expected))
    np.testing.assert_array_equal(bise.binary(False)(x).numpy() > 0.5, out > 0.5)


def test_bise_float_forward_formula():
    bise = BiSE(2, 4, 3, groups=2, seed=1, dtype=np.float64)
    x = np.random.default_rng(0).random((2, 2, 6, 7))
    w = np.log1p(np.exp(bise.theta.data))
    b = np.log1p(np.exp(bise.beta.data))
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    z = np.zeros((2, 4, 6, 7))
    for o in range(4):
        for u, v in itertools.product(range(3), range(3)):
            z[:, o] += padded[:, o // 2, u : u + 6, v : v + 7] * w[o, 0, u, v]
    expected = np.tanh(bise.scale.data[None, :, None, None] * (z - b[None, :, None, None])) / 2 + 0.5
    np.testing.assert_allclose(bise(x).numpy(), expected, rtol=1e-12)
    assert bise(x).requires_grad


def test_bise_gradients_reach_every_parameter():
    bise = BiSE(1, 2, 3, seed=2, dtype=np.float64, bias_clamp=True)
    x = diskorect(2, 8, seed=1, dtype=np.float64)
    nn.mse_loss(bise(x), np.zeros((2, 2, 8, 8))).backward()
    for p in bise.parameters():
        assert p.grad is not None and np.all(np.isfinite(p.grad)) and np.any(p.grad != 0)


def test_bias_clamp_bounds():
    bise = BiSE(1, 1, 3, seed=0, bias_clamp=True, dtype=np.float64)
    w = np.arange(1.0, 10.0)
    _set(bise, w, 100.0)
    assert bise.bias.numpy()[0] == pytest.approx(w.sum() - 0.5)
    _set(bise, w, 0.01)
    assert bise.bias.numpy()[0] == pytest.approx(1.5)


def test_binary_cache_follows_the_weights():
    bise = _hand_set_bise(CROSS, "dilation")
    x = diskorect(1, 12, seed=2)
    bise.binary()
    first = bise(x).numpy()
    _set(bise, np.where(CROSS, 2.0, 0.05), 2 * 4 + 2 * 0.05 + 1.0)  # now an erosion
    second = bise(x).numpy()
    np.testing.assert_array_equal(second[0, 0].astype(bool), _edge_reference(x[0, 0], CROSS, True))
    assert not np.array_equal(first, second)


def test_state_round_trip_and_binarisation_methods(tmp_path):
    bise = BiSE(2, 3, 3, seed=3)
    x = (np.random.default_rng(1).random((2, 2, 9, 9)) < 0.4).astype(np.float32)
    path = tmp_path / "bise.npz"
    bise.save(path)
    again = BiSE(2, 3, 3, seed=4)
    again.load(path)
    np.testing.assert_array_equal(again(x).numpy(), bise(x).numpy())
    np.testing.assert_array_equal(again.binary()(x).numpy(), bise.binary()(x).numpy())
    w, b = bise._neuron_weights(), bise._neuron_biases()
    for method in bz.METHODS:
        read = bise.binarized(method)
        assert read.structuring_elements.shape == (3, 2, 3, 3)
        expected = bz.binarize(w, b, method)
        np.testing.assert_array_equal(read.structuring_elements.reshape(3, -1), expected[1])
        assert read.operations == ["erosion" if e else "dilation" for e in expected[0]]


def test_bise_errors():
    with pytest.raises(ValueError, match="odd"):
        BiSE(1, 1, 4)
    with pytest.raises(ValueError, match="groups"):
        BiSE(3, 2, 3, groups=2)
    with pytest.raises(ValueError, match="binarization"):
        BiSE(1, 1, 3, binarization="qp")
    bise = BiSE(2, 3, 3, seed=0)
    with pytest.raises(ValueError, match="neuron="):
        bise.is_activated()
    with pytest.raises(ValueError, match="neuron"):
        bise.find_operation(neuron=3)
    with pytest.raises(ValueError, match="x must have shape"):
        bise(np.zeros((1, 1, 5, 5), dtype=np.float32))


# -- LUI, BiSEL, DenseLUI ------------------------------------------------------------------------


def test_lui_is_or_and_of_channels():
    lui = LUI(4, 2, seed=0, dtype=np.float64)
    w = np.array([[2.0, 0.01, 2.0, 0.01], [0.01, 2.0, 2.0, 2.0]])
    _set(lui, w, [1.0, 5.0])  # OR of {0, 2}: 0.02 <= 1 < 2; AND of {1, 2, 3}: 4.01 <= 5 < 6
    assert lui.is_activated(neuron=0)[0] == "dilation"
    assert lui.is_activated(neuron=1)[0] == "erosion"
    np.testing.assert_array_equal(lui.binarized().structuring_elements[:, :, 0, 0], w > 1)
    x = (np.random.default_rng(0).random((3, 4, 5, 5)) < 0.5).astype(np.float64)
    out = lui.binary()(x).numpy().astype(bool)
    assert out.shape == (3, 2, 5, 5)
    np.testing.assert_array_equal(out[:, 0], (x[:, 0] > 0) | (x[:, 2] > 0))
    np.testing.assert_array_equal(out[:, 1], (x[:, 1] > 0) & (x[:, 2] > 0) & (x[:, 3] > 0))
    np.testing.assert_array_equal(lui.binary(False)(x).numpy() > 0.5, out)


def test_bisel_shapes_and_binary_semantics():
    layer = BiSEL(2, 2, 3, seed=0, dtype=np.float64)
    assert layer.bises.theta.shape == (4, 1, 3, 3) and layer.luis.theta.shape == (2, 2, 1, 1)
    x = diskorect(2, 16, seed=3, dtype=np.float64)
    x = np.concatenate([x, diskorect(2, 16, seed=4, dtype=np.float64)], axis=1)
    assert layer(x).shape == (2, 2, 16, 16)
    # BiSE neuron i * out + o reads input i for output o
    square = np.ones((3, 3), dtype=bool)
    plans = {(0, 0): (CROSS, "dilation"), (1, 0): (square, "erosion")}
    plans |= {(0, 1): (L_SHAPE, "erosion"), (1, 1): (CROSS, "erosion")}
    for (i, o), (s, operation) in plans.items():
        one = _hand_set_bise(s, operation)
        layer.bises.theta.data[i * 2 + o] = one.theta.data[0]
        layer.bises.beta.data[i * 2 + o] = one.beta.data[0]
    _set(layer.luis, [[2.0, 2.0], [2.0, 2.0]], [1.0, 3.0])  # output 0: OR, output 1: AND
    out = layer.binary()(x).numpy().astype(bool)
    for k in range(2):
        parts = {key: _edge_reference(x[k, key[0]], s, op == "erosion") for key, (s, op) in plans.items()}
        np.testing.assert_array_equal(out[k, 0], parts[0, 0] | parts[1, 0])
        np.testing.assert_array_equal(out[k, 1], parts[0, 1] & parts[1, 1])


@pytest.mark.parametrize("engine", ["autodiff", "torch"])
@pytest.mark.parametrize(
    ("in_channels", "out_channels", "groups"), [(3, 3, 3), (2, 6, 2), (3, 1, 1), (4, 6, 2), (6, 4, 2)]
)
def test_lui_is_its_one_by_one_convolution(engine, in_channels, out_channels, groups):
    """A 1x1 BiSE (a LUI) computes its cross-correlation as products over each pixel's channels:
    its preactivation ``p (x ⋆ W - B)`` is the one through the engine's own grouped convolution
    (bit for bit with one input channel per group, where each output is a single product; else to
    rounding), and so are the gradients to the input and to theta."""
    rng = np.random.default_rng(in_channels * 10 + out_channels)
    x_host = rng.random((2, in_channels, 5, 7))
    weights = rng.random((2, out_channels, 5, 7))
    if engine == "torch":
        torch = pytest.importorskip("torch")
        from tropic.torch import nn as tnn

        lui = tnn.LUI(in_channels, out_channels, groups=groups, seed=3, dtype=torch.float64)

        def leaf():
            return torch.tensor(x_host, requires_grad=True)

        def gradients(y, x):
            (y * torch.from_numpy(weights)).sum().backward()
            return x.grad.numpy().copy(), lui.theta.grad.numpy().copy()

        def reset():
            lui.theta.grad = None
    else:
        lui = LUI(in_channels, out_channels, groups=groups, seed=3, dtype=np.float64)

        def leaf():
            return ad.tensor(x_host, requires_grad=True)

        def gradients(y, x):
            (y * ad.tensor(weights)).sum().backward()
            return np.array(x.grad), np.array(lui.theta.grad)

        def reset():
            lui.theta.grad = None

    results = []
    for through_convolution in (False, True):
        reset()
        x = leaf()
        if through_convolution:  # p (x ⋆ W - B) with the engine's convolution
            z = lui.F.conv2d(x, lui.weight, groups=groups)
            y = (z - lui._broadcast(lui.bias)) * lui._broadcast(lui.scale)
        else:
            y = lui.preactivation(x)
        results.append((np.array(lui.host(y)), *gradients(y, x)))
    (y, gx, gt), (y_conv, gx_conv, gt_conv) = results
    assert y.shape == (2, out_channels, 5, 7)
    if in_channels == groups:
        np.testing.assert_array_equal(y, y_conv)
    # Two summation orders of z = x ⋆ W (n terms) each err by at most n eps (|x| ⋆ |W|), and z - B
    # can cancel, so y is bounded absolutely by the terms' size, not relative to y itself (torch's
    # own convolution sums in another order on some CPUs: one ulp of 0.5 on a y of 0.006).
    n = in_channels // groups
    w, b, p = (lui.host(getattr(lui, name)) for name in ("weight", "bias", "scale"))
    x_groups = x_host.reshape(2, groups, n, 5, 7)
    w_groups = w.reshape(groups, out_channels // groups, n)
    terms = np.einsum("bgihw,goi->bgohw", np.abs(x_groups), np.abs(w_groups)).reshape(2, out_channels, 5, 7)
    size = np.abs(p)[:, None, None] * (terms + np.abs(b)[:, None, None])
    np.testing.assert_array_less(np.abs(y - y_conv), 4 * (n + 2) * np.finfo(np.float64).eps * size + 1e-300)
    assert np.abs(y - y_conv).max() <= 1e-14 * np.abs(y).max()  # and small against y's scale
    np.testing.assert_allclose(gx, gx_conv, rtol=1e-13)
    np.testing.assert_allclose(gt, gt_conv, rtol=1e-13)


def test_dense_lui_semantics_and_real_valued_head():
    layer = DenseLUI(5, 2, seed=0, dtype=np.float64)
    _set(layer, [[2.0, 2.0, 0.01, 0.01, 0.01], [0.01, 0.01, 2.0, 2.0, 2.0]], [1.0, 5.5])
    x = _truth_table(5)
    out = layer.binary()(x).numpy().astype(bool)
    np.testing.assert_array_equal(out[:, 0], (x[:, 0] > 0) | (x[:, 1] > 0))
    np.testing.assert_array_equal(out[:, 1], (x[:, 2:] > 0).all(axis=1))
    np.testing.assert_array_equal(layer.binary(False)(x).numpy() > 0.5, out)
    head = DenseLUI(5, 3, real_valued=True, seed=1, dtype=np.float64)
    w, b = np.log1p(np.exp(head.theta.data)), np.log1p(np.exp(head.beta.data))
    expected = head.scale.data * (x @ w.T - b)
    np.testing.assert_allclose(head(x).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(head.binary()(x).numpy(), expected, rtol=1e-12)  # never binarised
    with pytest.raises(ValueError, match="x must have shape"):
        layer(np.zeros((2, 4)))


# -- regularisation ------------------------------------------------------------------------------


def test_constant_set_regularization_value_and_gradient():
    model = nn.Sequential(BiSE(1, 2, 3, seed=0, dtype=np.float64), DenseLUI(4, 3, seed=1, dtype=np.float64))
    head = DenseLUI(4, 3, real_valued=True, seed=2, dtype=np.float64)
    model_with_head = nn.Sequential(model, head)
    loss = constant_set_regularization(model_with_head)  # the real-valued head is skipped
    expected = sum(
        bz.project_constant_set(layer._neuron_weights())[1].sum() for layer in (model[0], model[1])
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert head.theta.grad is None
    # d/dW (||W||^2 - (sum_S W)^2/|S|) = 2 W - 2 mean_S(W) 1_S, times softplus'(theta) = sigmoid(theta)
    layer = model[0]
    w = layer._neuron_weights()
    s, _ = bz.project_constant_set(w)
    mean_s = (w * s).sum(axis=1, keepdims=True) / s.sum(axis=1, keepdims=True)
    grad_w = 2 * w - 2 * mean_s * s
    sigmoid = 1 / (1 + np.exp(-layer.theta.data.reshape(2, -1)))
    np.testing.assert_allclose(layer.theta.grad.reshape(2, -1), grad_w * sigmoid, rtol=1e-10)


def test_activable_set_regularization_value():
    bise = BiSE(1, 3, 3, seed=4, dtype=np.float64)
    value = activable_set_regularization(bise).item()
    w, b = bise._neuron_weights(), bise._neuron_biases()
    expected = sum(bz.activable_projection(w[i], b[i])[4] for i in range(3))
    assert value == pytest.approx(expected, rel=1e-10)
    assert activable_set_regularization(_hand_set_bise(CROSS, "erosion")).item() == 0.0
    with pytest.raises(ValueError, match="no BiSE"):
        constant_set_regularization(nn.Sequential(nn.ReLU()))


# -- learning morphological operations (the paper's claims 1 and 2, at small scale) --------------


def _train(model, x, y, steps, seed, regularization=0.0, lr=0.05, batch=16):
    rng = np.random.default_rng(seed)
    opt = nn.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = rng.choice(len(x), batch, replace=False)
        loss = nn.binary_cross_entropy(model(x[idx]), y[idx])
        if regularization:
            loss = loss + regularization * constant_set_regularization(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _dice_error(pred, target):
    return 1.0 - 2.0 * (pred * target).sum() / (pred.sum() + target.sum())


@pytest.mark.parametrize(
    ("operation", "reference", "border"),
    [("erosion", ndimage.binary_erosion, 1), ("dilation", ndimage.binary_dilation, 0)],
)
def test_single_bise_learns_the_cross(operation, reference, border):
    x = diskorect(64, 32, seed=0)
    y = np.stack([reference(im, CROSS, border_value=border) for im in x[:, 0]])[:, None].astype(np.float32)
    bise = _train(BiSE(1, 1, 5, seed=0), x, y, steps=600, seed=0)
    read = bise.is_activated()  # exactly the operation, by the cross inside the 5x5 window
    assert read is not None
    assert read[0] == operation
    np.testing.assert_array_equal(read[1][0], np.pad(CROSS, 1))
    held_out = diskorect(16, 32, seed=1)
    out = bise.binary()(held_out).numpy()
    expected = np.stack([reference(im, CROSS, border_value=border) for im in held_out[:, 0]])
    np.testing.assert_array_equal(out[:, 0].astype(bool), expected)  # whole image, border included


def test_two_bises_learn_an_opening():
    def opening(image):
        return ndimage.binary_dilation(ndimage.binary_erosion(image, CROSS, border_value=1), CROSS)

    x = diskorect(64, 32, seed=0)
    y = np.stack([opening(im) for im in x[:, 0]])[:, None].astype(np.float32)
    model = nn.Sequential(BiSE(1, 1, 3, seed=1), BiSE(1, 1, 3, seed=2))
    _train(model, x, y, steps=800, seed=0, regularization=0.01)
    held_out = diskorect(16, 32, seed=1)
    target = np.stack([opening(im) for im in held_out[:, 0]])[:, None].astype(np.float32)
    assert _dice_error(target, held_out) > 0.05  # the identity is not good enough
    pred = model.binary()(held_out).numpy()
    assert _dice_error(pred, target) < 0.05
    assert [layer.find_operation() for layer in model] == ["erosion", "dilation"]


# -- data ----------------------------------------------------------------------------------------


def test_diskorect_is_seeded_binary_and_checked():
    a, b = diskorect(3, 16, seed=7), diskorect(3, 16, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 1, 16, 16) and a.dtype == np.float32
    assert set(np.unique(a)) == {0.0, 1.0}
    assert not np.array_equal(a, diskorect(3, 16, seed=8))
    with pytest.raises(ValueError, match="salt"):
        diskorect(1, 16, salt=2.0)
    with pytest.raises(ValueError, match="size"):
        diskorect(1, 2)


def test_sparse_init_and_init_errors():
    layer = DenseLUI(400, 50, init="sparse", density=0.05, seed=0, dtype=np.float64)
    w = layer._neuron_weights()
    high = 2.0 / np.sqrt(20.0)
    on = np.isclose(w, high)
    assert np.isclose(w[~on], high / 100).all() and on.any(axis=1).all()
    assert 0.03 < on.mean() < 0.07
    np.testing.assert_allclose(layer._neuron_biases(), w.sum(axis=1) / 2)
    dense = BiSE(1, 8, 5, seed=0, dtype=np.float64)._neuron_weights()
    assert abs(dense.mean() * 5 - 1.0) < 0.1  # near 1/sqrt(25)
    with pytest.raises(ValueError, match="init"):
        BiSE(1, 1, 3, init="zeros")
    with pytest.raises(ValueError, match="density"):
        DenseLUI(4, 2, init="sparse", density=0.0)


def test_layers_run_on_any_array_namespace(xp):
    # the parameters and inputs moved to xp; the binarisation itself runs on NumPy copies
    x = diskorect(2, 8, seed=0)
    for layer, data in [(BiSEL(1, 2, 3, seed=0), x), (DenseLUI(8, 3, seed=0), x[:, 0, 0])]:
        reference, reference_binary = layer(data).numpy(), layer.binary()(data).numpy()
        layer.binary(False)
        for p in layer.parameters():
            p.data = xp.asarray(p.data)
        out = layer(xp.asarray(data))
        assert type(out.data) is type(xp.asarray(0.0))
        np.testing.assert_array_equal(out.numpy(), reference)  # the same NumPy arithmetic underneath
        np.testing.assert_array_equal(layer.binary()(xp.asarray(data)).numpy(), reference_binary)
        layer.binary(False)
        constant_set_regularization(layer).backward()
        thetas = [p for name, p in layer.named_parameters() if name.endswith("theta")]
        assert thetas and all(type(p.grad) is type(xp.asarray(0.0)) for p in thetas)


def test_ad_tensor_input_is_accepted():
    bise = BiSE(1, 1, 3, seed=0)
    x = ad.tensor(diskorect(1, 8, seed=0))
    assert bise(x).shape == (1, 1, 8, 8)
    assert bise.binary()(x).shape == (1, 1, 8, 8)
