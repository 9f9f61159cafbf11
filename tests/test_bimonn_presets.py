"""``preset=`` of the binarised layers: tropic's own settings and those of the paper's code.

The reference is ``TheodoreAouad/WANT2023`` at commit 04088a9 (not code we wrote): its initialisers
(``deep_morpho/initializer/bise_initializer.py``), bias handlers (``deep_morpho/models/bias_layer.py``),
LUI (``deep_morpho/models/lui.py``) and regularisers (``deep_morpho/loss/``). The formulas below are
written from that code, independently of tropic's implementation; float64 throughout so that they can
be compared to 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import tropic.autodiff as ad
import tropic.nn as tn
import tropic.torch.nn as tnn
from tropic.nn._synthetic import diskorect
from tropic.nn.binary import (
    LUI,
    BiSE,
    BiSEL,
    DenseLUI,
    activable_set_regularization,
    constant_set_regularization,
)

F64 = np.float64
A = np.arctanh(0.9)  # tanh_threshold_inverse(0.95): xi^{-1}(0.95)
# The reference's weight range is (2A/n) (1 -+ c): with p0 = (sqrt3 + 2) sqrt(n) / (8A) its variance
# 1/(p0^2 n) - (2A/n)^2 is (2A/n)^2 (16/(sqrt3 + 2)^2 - 1) = (2A/n)^2 (111 - 64 sqrt3).
C = np.sqrt(3 * (111 - 64 * np.sqrt(3)))
L_SHAPE = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)


def _softplus(x):
    return np.logaddexp(0.0, np.asarray(x, dtype=F64))


def _inverse_softplus(y):
    y = np.asarray(y, dtype=F64)
    return y + np.log(-np.expm1(-y))


def _xi(u):
    return np.tanh(u) / 2 + 0.5


def _host_state(layer):
    return {k: np.asarray(v) for k, v in layer.state_dict().items()}


def _torch_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _assert_same_state(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _clamp_interval(w):
    """``[(w_(1) + w_(2))/2, sum(W) - w_(1)/2]`` per row of ``w`` (0 as the lower bound for one weight)."""
    s = np.sort(w, axis=1)
    low = (s[:, 0] + s[:, 1]) / 2 if w.shape[1] > 1 else np.zeros(len(w))
    return low, w.sum(axis=1) - s[:, 0] / 2


def _edge_reference(x, s, erosion):
    r = s.shape[0] // 2, s.shape[1] // 2
    padded = np.pad(x.astype(bool), ((r[0], r[0]), (r[1], r[1])), mode="edge")
    out = ndimage.binary_erosion(padded, s) if erosion else ndimage.binary_dilation(padded, s[::-1, ::-1])
    return out[r[0] : r[0] + x.shape[0], r[1] : r[1] + x.shape[1]]


def _set(layer, w, b):
    layer.theta.data[...] = _inverse_softplus(np.asarray(w).reshape(layer.theta.shape))
    layer.beta.data[...] = _inverse_softplus(np.asarray(b, dtype=F64).reshape(-1))


# -- initial values ------------------------------------------------------------------------------


@pytest.mark.parametrize("input_mean", [0.5, 0.13])
def test_reference_bise_initial_values_are_the_reference_formulas(input_mean):
    bise = BiSE(2, 3, 5, preset="reference", input_mean=input_mean, seed=11, dtype=F64)
    n = 2 * 5 * 5
    # draws: U(low, high] as rand * (low - high) + high, then one u = rand * 0.02 - 0.01 per layer
    rng = np.random.default_rng(11)
    mean, half = 2 * A / n, 2 * A / n * C
    w = rng.random((3, n)) * ((mean - half) - (mean + half)) + (mean + half)
    u = rng.random() * 0.02 - 0.01
    b = input_mean * w.sum(axis=1)
    b = b + u * b
    np.testing.assert_allclose(bise._neuron_weights(), w, rtol=1e-12)
    np.testing.assert_allclose(_softplus(bise.beta.numpy()), b, rtol=1e-12)
    np.testing.assert_array_equal(bise.scale.numpy(), np.zeros(3))  # activation_P = 0 in the configs
    assert bise.bias_mode == "reparametrized" and bise.bias_clamp and bise.preset == "reference"
    # the effective bias is the clamp of that value (inside the interval here)
    low, high = _clamp_interval(w)
    np.testing.assert_allclose(bise._neuron_biases(), np.clip(b, low, high), rtol=1e-12)


def test_reference_weight_distribution():
    layer = DenseLUI(400, 200, preset="reference", seed=0, dtype=F64)
    w = layer._neuron_weights() * 400  # n W: in (0.977, 4.911], mean 2A, variance (2A c)^2 / 3
    assert (2 * A * (1 - C) - 1e-9 < w).all() and (w <= 2 * A * (1 + C) + 1e-9).all()
    assert 0.977 < 2 * A * (1 - C) < 0.978 and 4.911 < 2 * A * (1 + C) < 4.912
    # 80 000 draws: the mean's standard error is 0.14 % of the mean, the variance's about 0.3 %
    assert abs(w.mean() / (2 * A) - 1) < 0.01
    assert abs(w.var() / ((2 * A * C) ** 2 / 3) - 1) < 0.03
    assert w.min() < 2 * A * (1 - C) + 0.01 and w.max() > 2 * A * (1 + C) - 0.01  # fills the range
    assert layer.output == "xi" and not layer.real_valued


def test_reference_lui_starts_with_constant_weights_and_bisel_splits_input_mean():
    lui = LUI(4, 2, preset="reference", seed=3, dtype=F64)
    np.testing.assert_allclose(lui._neuron_weights(), np.full((2, 4), 2 * A / 4), rtol=1e-14)
    u = np.random.default_rng(3).random() * 0.02 - 0.01  # the only draw: the bias noise
    np.testing.assert_allclose(_softplus(lui.beta.numpy()), np.full(2, 0.5 * 2 * A * (1 + u)), rtol=1e-12)
    assert not lui.identity and lui.bias_mode == "reparametrized"
    np.testing.assert_array_equal(lui.scale.numpy(), 0.0)

    layer = BiSEL(2, 3, 3, preset="reference", input_mean=0.2, seed=4, dtype=F64)
    w = layer.bises._neuron_weights()
    assert len(np.unique(w)) == w.size  # uniform draws
    b = _softplus(layer.bises.beta.numpy()) / w.sum(axis=1)
    assert np.all(np.abs(b / 0.2 - 1) <= 0.01 + 1e-12)  # the data's mean, perturbed by u
    np.testing.assert_allclose(layer.luis._neuron_weights(), 2 * A / 2, rtol=1e-14)
    b = _softplus(layer.luis.beta.numpy()) / layer.luis._neuron_weights().sum(axis=1)
    assert np.all(np.abs(b / 0.5 - 1) <= 0.01 + 1e-12)  # the LUIs read BiSE outputs: 1/2
    assert not layer.luis.identity


def test_default_is_unchanged_and_pinned():
    x = (np.random.default_rng(0).random((2, 2, 6, 6)) < 0.5).astype(np.float32)
    plain = BiSE(2, 3, 3, seed=5)
    spelled = BiSE(2, 3, 3, seed=5, preset="tropic", init="dense", scale_init=1.0, input_mean=0.5)
    _assert_same_state(_host_state(plain), _host_state(spelled))
    np.testing.assert_array_equal(plain(x).numpy(), spelled(x).numpy())
    assert plain.bias_mode == "softplus" and not plain.bias_clamp and plain.preset == "tropic"
    np.testing.assert_array_equal(plain.scale.numpy(), np.ones(3, np.float32))
    # the default's draws, pinned: |1 + 0.3 N(0, 1)| / sqrt(n), B = sum(W) / 2
    w0 = np.abs(1.0 + 0.3 * np.random.default_rng(5).standard_normal((3, 18))) / np.sqrt(18)
    np.testing.assert_array_equal(
        plain.theta.numpy(), _inverse_softplus(w0).astype(np.float32).reshape(3, 2, 3, 3)
    )
    np.testing.assert_array_equal(
        plain.beta.numpy(), _inverse_softplus(w0.sum(axis=1) / 2).astype(np.float32)
    )
    # bias_clamp=True is bias_mode="projected", bitwise
    clamped, projected = BiSE(2, 3, 3, seed=5, bias_clamp=True), BiSE(2, 3, 3, seed=5, bias_mode="projected")
    assert clamped.bias_mode == "projected"
    np.testing.assert_array_equal(clamped(x).numpy(), projected(x).numpy())
    # the regularisers' defaults
    np.testing.assert_array_equal(
        activable_set_regularization(plain).numpy(),
        activable_set_regularization(plain, preset="tropic").numpy(),
    )
    head = DenseLUI(4, 2, real_valued=True, seed=0)
    assert head.output == "preactivation"
    with pytest.raises(ValueError, match="no BiSE-type layer"):
        constant_set_regularization(head)


# -- the reparametrised clamp --------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["autodiff", "torch"])
def test_reparametrized_bias_stays_in_the_clamp_interval(engine):
    rng = np.random.default_rng(2)
    cls = BiSE if engine == "autodiff" else tnn.BiSE
    dtype = F64 if engine == "autodiff" else torch.float64
    for trial in range(20):
        layer = cls(1, 6, 3, bias_mode="reparametrized", seed=trial, dtype=dtype)
        theta = rng.uniform(-6, 3, (6, 1, 3, 3))
        beta = np.array([-40.0, -3.0, 0.0, 1.0, 5.0, 40.0]) + rng.uniform(-1, 1, 6)
        with torch.no_grad() if engine == "torch" else ad.no_grad():
            if engine == "torch":
                layer.theta.copy_(torch.from_numpy(theta))
                layer.beta.copy_(torch.from_numpy(beta))
            else:
                layer.theta.data[...], layer.beta.data[...] = theta, beta
        bias = layer.bias.detach().numpy() if engine == "torch" else layer.bias.numpy()
        low, high = _clamp_interval(_softplus(theta).reshape(6, -1))
        assert np.all(low - 1e-12 <= bias) and np.all(bias <= high + 1e-12)
        assert bias[0] == pytest.approx(low[0], rel=1e-12) and bias[-1] == pytest.approx(high[-1], rel=1e-12)
        # the value the binarisation reads is the forward's, exactly
        np.testing.assert_array_equal(layer._neuron_biases(), bias)
    one = LUI(1, 1, bias_mode="reparametrized", seed=0, dtype=F64)  # one weight: [0, w/2]
    _set(one, [3.0], 100.0)
    assert one.bias.numpy()[0] == pytest.approx(1.5, rel=1e-12)


@pytest.mark.parametrize("mode", ["softplus", "projected", "reparametrized"])
def test_torch_weights_and_bias_are_the_binarisations_values_where_torch_rounds_otherwise(monkeypatch, mode):
    """Where torch's ``exp`` / ``log1p`` round differently from NumPy's (an ulp on some CPUs), the
    torch mirror's ``weight`` and ``bias`` still hold the values the binarisation reads, exactly,
    and their gradients are torch's softplus's: here torch's softplus is made an ulp off on purpose."""
    from tropic.torch import functional

    exact = functional.softplus

    def off_by_an_ulp(x):
        y = exact(x)
        return y + (torch.nextafter(y.detach(), torch.full_like(y, np.inf)) - y.detach())

    monkeypatch.setattr(functional, "softplus", off_by_an_ulp)
    layer = tnn.BiSE(2, 3, 3, bias_mode=mode, seed=4, dtype=torch.float64)
    weight, bias = layer.weight, layer.bias
    np.testing.assert_array_equal(weight.detach().numpy().reshape(3, -1), layer._neuron_weights())
    np.testing.assert_array_equal(bias.detach().numpy(), layer._neuron_biases())
    assert not np.array_equal(off_by_an_ulp(layer.theta).detach().numpy(), weight.detach().numpy())
    # the gradients: torch's softplus's (the ulp added is a constant)
    for parameter, value in (("theta", weight), ("beta", bias)):
        if parameter == "beta" and mode != "softplus":
            continue  # a clamped bias: its gradient goes through the clamp too
        value.sum().backward()
        reference = getattr(layer, parameter).detach().clone().requires_grad_()
        exact(reference).sum().backward()
        assert torch.equal(getattr(layer, parameter).grad, reference.grad)


def _host_bias_sum(theta, beta, c):
    w = _softplus(theta).reshape(len(beta), -1)
    low, high = _clamp_interval(w)
    return float(np.sum(c * np.clip(_softplus(beta), low, high)))


@pytest.mark.parametrize("engine", ["autodiff", "torch"])
def test_reparametrized_bias_gradient_matches_finite_differences(engine):
    rng = np.random.default_rng(4)
    theta = rng.uniform(-2, 2, (3, 1, 3, 3))  # distinct weights: the order statistics are smooth
    beta = np.array([30.0, -30.0, 0.0])
    beta[2] = _inverse_softplus(_softplus(theta[2]).sum() / 2)  # inside: clamped only for the first two
    c = np.array([1.0, -2.0, 0.5])
    grads = {}
    for mode in ("reparametrized", "projected"):
        if engine == "autodiff":
            layer = BiSE(1, 3, 3, bias_mode=mode, seed=0, dtype=F64)
            layer.theta.data[...], layer.beta.data[...] = theta, beta
            (layer.bias * ad.Tensor(c)).sum().backward()
            grads[mode] = [
                np.zeros_like(theta) if g is None else g.copy() for g in (layer.theta.grad, layer.beta.grad)
            ]
        else:
            layer = tnn.BiSE(1, 3, 3, bias_mode=mode, seed=0, dtype=torch.float64)
            with torch.no_grad():
                layer.theta.copy_(torch.from_numpy(theta))
                layer.beta.copy_(torch.from_numpy(beta))
            (layer.bias * torch.from_numpy(c)).sum().backward()
            grads[mode] = [
                np.zeros_like(theta) if g is None else g.numpy().copy()
                for g in (layer.theta.grad, layer.beta.grad)
            ]
    eps = 1e-6
    fd_theta = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        up, down = theta.copy(), theta.copy()
        up[idx] += eps
        down[idx] -= eps
        fd_theta[idx] = (_host_bias_sum(up, beta, c) - _host_bias_sum(down, beta, c)) / (2 * eps)
    fd_beta = np.zeros_like(beta)
    for i in range(3):
        up, down = beta.copy(), beta.copy()
        up[i] += eps
        down[i] -= eps
        fd_beta[i] = (_host_bias_sum(theta, up, c) - _host_bias_sum(theta, down, c)) / (2 * eps)
    g_theta, g_beta = grads["reparametrized"]
    np.testing.assert_allclose(g_theta, fd_theta, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g_beta, fd_beta, rtol=1e-6, atol=1e-9)
    assert np.abs(g_theta[0]).min() > 0 and np.abs(g_theta[1]).sum() > 0.1  # through the bounds
    assert not np.any(g_theta[2])  # inside the interval: the bias does not depend on theta
    # projected: the bounds are constants, no gradient reaches theta through the bias
    assert not np.any(grads["projected"][0])
    np.testing.assert_allclose(grads["projected"][1], fd_beta, rtol=1e-6, atol=1e-9)


def test_binarisation_reads_the_effective_bias():
    x = diskorect(2, 16, seed=3, dtype=F64)
    # an activated dilation by the L shape, bias inside the interval: read back exactly
    bise = BiSE(1, 1, 3, preset="reference", seed=0, dtype=F64)
    w = np.where(L_SHAPE, 2.0, 0.05)
    _set(bise, w, (w[~L_SHAPE].sum() + 2.0) / 2)
    bise.scale.data[...] = 5.0
    assert bise.find_operation() == "dilation"
    operation, s = bise.is_activated()
    assert operation == "dilation"
    np.testing.assert_array_equal(s[0], L_SHAPE)
    out = bise.binary()(x).numpy()
    for image, result in zip(x[:, 0], out[:, 0], strict=True):
        np.testing.assert_array_equal(result.astype(bool), _edge_reference(image, L_SHAPE, erosion=False))
    bise.binary(False)
    # raw softplus(beta) = 1000 > sum(W): as a raw bias, the constant 0 (dilation by nothing); clamped
    # to sum(W) - w_(1)/2 = 6.275, it is the erosion by the whole 3x3 square (6.25 <= 6.275 < 6.3)
    # (find_operation is the bias rule B > sum(W)/2: erosion in both)
    for mode, expected in [("softplus", ("dilation", np.zeros((3, 3), bool))), ("reparametrized", None)]:
        layer = BiSE(1, 1, 3, bias_mode=mode, seed=0, dtype=F64)
        _set(layer, w, 1000.0)
        layer.scale.data[...] = 50.0
        operation, s = layer.is_activated()
        if expected is None:
            expected = ("erosion", np.ones((3, 3), bool))
            assert layer.bias.numpy()[0] == pytest.approx(6.275, rel=1e-12)
        assert operation == expected[0] and layer.find_operation() == "erosion"
        np.testing.assert_array_equal(s[0], expected[1])
        read = layer.binarized()
        assert read.activated[0] and read.operations == [expected[0]]
        out = layer.binary()(x).numpy()
        smooth = layer.binary(False)(x).numpy()
        np.testing.assert_array_equal(smooth > 0.5, out > 0.5)  # activated: float and binary agree
        if mode == "reparametrized":
            for image, result in zip(x[:, 0], out[:, 0], strict=True):
                np.testing.assert_array_equal(result.astype(bool), _edge_reference(image, s[0], erosion=True))


# -- BiSEL(1, C), identity LUIs ------------------------------------------------------------------


def test_reference_bisel_with_one_input_is_its_bises():
    x = diskorect(3, 12, seed=1, dtype=F64)
    scale = np.random.default_rng(0).uniform(1, 3, 4)
    layer = BiSEL(1, 4, 5, preset="reference", seed=7, dtype=F64)
    bises = BiSE(1, 4, 5, preset="reference", seed=7, dtype=F64)
    assert layer.luis.identity
    _assert_same_state(_host_state(layer.bises), _host_state(bises))
    layer.bises.scale.data[...] = bises.scale.data[...] = scale
    np.testing.assert_array_equal(layer(x).numpy(), bises(x).numpy())
    np.testing.assert_array_equal(layer.binary()(x).numpy(), bises.binary()(x).numpy())
    read = layer.luis.binarized()
    assert read.activated.all() and read.operations == ["dilation"] * 4 and read.structuring_elements.all()
    assert (
        layer.luis.is_activated(neuron=2)[0] == "dilation"
        and layer.luis.find_operation(neuron=2) == "dilation"
    )
    np.testing.assert_array_equal(layer.luis.bias.numpy(), np.zeros(4))
    # the regularisers skip the identity LUIs (their distance is 0 in the reference too)
    layer.binary(False)
    np.testing.assert_array_equal(
        constant_set_regularization(layer).numpy(), constant_set_regularization(layer.bises).numpy()
    )
    # tropic's BiSEL(1, C) has a learned LUI: a different output (this test can fail)
    tropic_layer = BiSEL(1, 4, 5, seed=7, dtype=F64)
    tropic_bises = BiSE(1, 4, 5, seed=7, dtype=F64)
    assert not tropic_layer.luis.identity
    assert np.abs(tropic_layer(x).numpy() - tropic_bises(x).numpy()).max() > 0.1
    # mixing: the identity with tropic's other settings, and the reference without it
    mixed = BiSEL(1, 4, 5, identity_lui=True, seed=7, dtype=F64)
    np.testing.assert_array_equal(mixed(x).numpy(), tropic_bises(x).numpy())
    assert not BiSEL(1, 4, 5, preset="reference", identity_lui=False, seed=7).luis.identity
    assert not BiSEL(2, 4, 5, preset="reference", seed=7).luis.identity  # two inputs per LUI


def test_identity_lui_rule():
    x = (np.random.default_rng(1).random((2, 3, 4, 4)) < 0.5).astype(F64)
    lui = LUI(3, 3, groups=3, preset="reference", seed=0, dtype=F64)
    assert lui.identity
    np.testing.assert_array_equal(lui(x).numpy(), x)
    np.testing.assert_array_equal(lui.binary()(x).numpy(), x)
    assert not LUI(3, 3, groups=3, seed=0).identity  # tropic: learned
    assert not LUI(3, 3, groups=1, preset="reference", seed=0).identity  # each output reads 3
    assert not LUI(6, 3, groups=3, preset="reference", seed=0).identity
    assert LUI(2, 2, groups=2, identity=True, seed=0).identity


# -- DenseLUI output -----------------------------------------------------------------------------


def test_dense_lui_xi_output_is_xi_of_the_logits():
    x = (np.random.default_rng(3).random((7, 20)) < 0.5).astype(F64)
    logits = DenseLUI(20, 4, real_valued=True, seed=2, dtype=F64)
    xi = DenseLUI(20, 4, real_valued=True, output="xi", seed=2, dtype=F64)
    _assert_same_state(_host_state(logits), _host_state(xi))
    u = logits(x).numpy()
    np.testing.assert_allclose(xi(x).numpy(), _xi(u), rtol=1e-15, atol=0)
    assert np.ptp(u) > 0.5  # not a trivial comparison
    np.testing.assert_allclose(xi.binary()(x).numpy(), _xi(u), rtol=1e-15, atol=0)  # never binarised
    reference = DenseLUI(20, 4, real_valued=True, preset="reference", seed=2, dtype=F64)
    assert reference.output == "xi"
    np.testing.assert_array_equal(reference(x).numpy(), 0.5)  # p = 0 at the start
    reference.load_state_dict(logits.state_dict())
    np.testing.assert_allclose(reference(x).numpy(), _xi(u), rtol=1e-15, atol=0)
    mixed = DenseLUI(20, 4, real_valued=True, preset="reference", output="preactivation", seed=2, dtype=F64)
    mixed.load_state_dict(logits.state_dict())
    np.testing.assert_array_equal(mixed(x).numpy(), u)


# -- regularisers --------------------------------------------------------------------------------


def test_regulariser_factor_and_heads():
    # (not run forward: the regularisers only read the layers' parameters)
    model = tn.Sequential(BiSE(1, 2, 3, seed=0, dtype=F64), DenseLUI(6, 3, seed=1, dtype=F64))
    head = DenseLUI(3, 2, real_valued=True, seed=2, dtype=F64)
    full = tn.Sequential(model, head)
    ours = activable_set_regularization(full)
    np.testing.assert_array_equal(ours.numpy(), activable_set_regularization(model).numpy())  # head skipped
    half = activable_set_regularization(full, preset="reference", include_real_valued=False)
    np.testing.assert_array_equal(half.numpy(), 0.5 * ours.numpy())
    quarter = activable_set_regularization(full, factor=0.25)
    np.testing.assert_array_equal(quarter.numpy(), 0.25 * ours.numpy())
    head_term = activable_set_regularization(head, include_real_valued=True).numpy()
    assert head_term > 0
    np.testing.assert_allclose(
        activable_set_regularization(full, preset="reference").numpy(),
        0.5 * (ours.numpy() + head_term),
        rtol=1e-13,
    )
    # the gradient scales with the factor
    theta = model[0].theta
    full.zero_grad()
    ours.backward()
    g = theta.grad.copy()
    full.zero_grad()
    half.backward()
    np.testing.assert_allclose(theta.grad, 0.5 * g, rtol=1e-14)
    # the constant-set distance has no factor in the reference; its preset only adds the head
    np.testing.assert_allclose(
        constant_set_regularization(full, preset="reference").numpy(),
        constant_set_regularization(full).numpy()
        + constant_set_regularization(head, include_real_valued=True).numpy(),
        rtol=1e-13,
    )


# -- both engines --------------------------------------------------------------------------------

ENGINE_CASES = [
    ("BiSE", (2, 3, 3), {"preset": "reference"}, (2, 2, 6, 5)),
    ("BiSE", (2, 4, 3), {"groups": 2, "bias_mode": "reparametrized", "init": "uniform"}, (2, 2, 5, 5)),
    ("LUI", (4, 2), {"preset": "reference"}, (2, 4, 5, 5)),
    ("LUI", (3, 3), {"groups": 3, "preset": "reference"}, (2, 3, 5, 5)),
    ("BiSEL", (1, 3, 3), {"preset": "reference"}, (2, 1, 6, 6)),
    ("BiSEL", (2, 3, 3), {"preset": "reference", "input_mean": 0.3}, (2, 2, 6, 6)),
    ("DenseLUI", (6, 4), {"preset": "reference"}, (5, 6)),
    ("DenseLUI", (6, 4), {"real_valued": True, "preset": "reference"}, (5, 6)),
    ("DenseLUI", (6, 4), {"real_valued": True, "output": "xi", "bias_mode": "reparametrized"}, (5, 6)),
]


def _set_scales(layer, rng):
    """Nonzero scales (the reference starts at p = 0, where every output is 1/2)."""
    for name, p in layer.named_parameters():
        if name.endswith("scale"):
            p.data[...] = rng.uniform(0.5, 2.0, p.shape)


def _bits(shape, seed=0):
    return (np.random.default_rng(seed).random(shape) < 0.5).astype(F64)


@pytest.mark.parametrize(("name", "args", "kwargs", "shape"), ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_both_engines_agree(name, args, kwargs, shape):
    layer = getattr(tn, name)(*args, seed=3, dtype=F64, **kwargs)
    module = getattr(tnn, name)(*args, seed=3, dtype=torch.float64, **kwargs)
    _assert_same_state(_host_state(layer), _torch_state(module))
    converted = tnn.from_tropic(layer)
    for attr in ("preset", "bias_mode", "identity", "output"):
        for sub, mine, conv in zip(layer.modules(), module.modules(), converted.modules(), strict=True):
            if hasattr(sub, attr):
                assert getattr(mine, attr) == getattr(sub, attr) == getattr(conv, attr), attr
    _set_scales(layer, np.random.default_rng(1))
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in _host_state(layer).items()})
    converted.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in _host_state(layer).items()})
    x = _bits(shape)
    xt = ad.Tensor(x, requires_grad=True)
    y = layer(xt)
    g = np.random.default_rng(2).standard_normal(y.shape)
    y.backward(g)
    for other in (module, converted):
        other.zero_grad()
        xo = torch.from_numpy(x.copy()).requires_grad_()
        yo = other(xo)
        np.testing.assert_allclose(yo.detach().numpy(), y.numpy(), rtol=1e-12, atol=1e-14)
        yo.backward(torch.from_numpy(g))
        np.testing.assert_allclose(xo.grad.numpy(), xt.grad, rtol=1e-10, atol=1e-12)
        grads = dict(other.named_parameters())
        for pname, p in layer.named_parameters():
            theirs = grads[pname].grad
            if p.grad is None or not np.any(p.grad):
                assert theirs is None or not torch.any(theirs), pname
            else:
                np.testing.assert_allclose(theirs.numpy(), p.grad, rtol=1e-10, atol=1e-12, err_msg=pname)
    if not getattr(layer, "real_valued", False):
        np.testing.assert_array_equal(module.binary()(torch.from_numpy(x)).numpy(), layer.binary()(x).numpy())


# -- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize("ns", [tn, tnn], ids=["tropic", "torch"])
def test_invalid_values_raise(ns):
    allowed = {
        "preset": r"preset must be one of 'tropic', 'reference', got 'paper'",
        "bias_mode": r"bias_mode must be one of 'softplus', 'projected', 'reparametrized', got 'clamp'",
        "init": r"init must be one of 'dense', 'sparse', 'uniform', 'constant', got 'normal'",
    }
    bad = {"preset": "paper", "bias_mode": "clamp", "init": "normal"}
    for arg, message in allowed.items():
        for build in (
            lambda **kw: ns.BiSE(1, 1, 3, **kw),
            lambda **kw: ns.LUI(2, 1, **kw),
            lambda **kw: ns.BiSEL(1, 2, 3, **kw),
            lambda **kw: ns.DenseLUI(3, 2, **kw),
        ):
            with pytest.raises(ValueError, match=message):
                build(**{arg: bad[arg]})
    with pytest.raises(ValueError, match=r"output must be one of 'preactivation', 'xi', got 'logits'"):
        ns.DenseLUI(3, 2, real_valued=True, output="logits")
    with pytest.raises(ValueError, match="output='preactivation' needs real_valued=True"):
        ns.DenseLUI(3, 2, output="preactivation")
    with pytest.raises(ValueError, match="bias_clamp=True"):
        ns.BiSE(1, 1, 3, bias_clamp=True, bias_mode="softplus")
    with pytest.raises(ValueError, match=r"input_mean must be in \[0, 1\]"):
        ns.BiSE(1, 1, 3, input_mean=1.5)
    with pytest.raises(ValueError, match="identity=True needs in_channels == out_channels == groups"):
        ns.LUI(4, 2, identity=True)
    with pytest.raises(ValueError, match="identity_lui=True needs in_channels == 1"):
        ns.BiSEL(2, 2, 3, identity_lui=True)
    layer = ns.BiSE(1, 1, 3, seed=0)
    with pytest.raises(ValueError, match=r"preset must be one of 'tropic', 'reference'"):
        constant_set_regularization(layer, preset="paper")
    with pytest.raises(ValueError, match=r"preset must be one of 'tropic', 'reference'"):
        activable_set_regularization(layer, preset="paper")
    with pytest.raises(ValueError, match="factor must be"):
        activable_set_regularization(layer, factor=-1.0)
