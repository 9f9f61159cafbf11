"""Convolutional deep morphological networks (tropic.nn.dmnn_conv): the max-plus-min convolution, its
log-sum-exp form, the depthwise / SVD "linear" activation and the LeNet-5 / ResNet-20 models, checked
against the papers' formulas written here with torch broadcasting, on both engines."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tropic.nn import dmnn_conv as dc  # noqa: E402
from tropic.torch import nn as tnn  # noqa: E402

ENGINES = ("tropic", "torch")


# -- the formulas, independently ---------------------------------------------------------------------


def hard_reference(x, w, b_max, b_min, stride, padding, combine):
    """MPM convolution by unfold + max/min over (c, u, v): tropical-zero padding, shared weight."""
    o, c, kh, kw = w.shape
    b = x.shape[0]

    def branch(value, bias, sign):
        # sign +1: max over x + w with -inf padding; -1: min over x + w with +inf padding.
        padded = F.pad(x, (padding, padding, padding, padding), value=-sign * np.inf)
        cols = F.unfold(padded, (kh, kw), stride=stride)  # (B, C kh kw, L)
        cand = cols[:, None] + w.reshape(o, -1)[None, :, :, None]  # (B, O, K, L)
        if bias is not None:
            cand = torch.cat([cand, bias.reshape(1, o, 1, 1).expand(b, o, 1, cand.shape[-1])], dim=2)
        out = cand.max(dim=2).values if sign > 0 else cand.min(dim=2).values
        ho = (x.shape[2] + 2 * padding - kh) // stride + 1
        return out.reshape(b, o, ho, -1)

    y = branch(x, b_max, 1) + branch(x, b_min, -1)
    return y / 2 if combine == "mean" else y


def soft_reference(x, w, b_max, b_min, stride, padding, method):
    """The reference code's log-sum-exp formulas, literally: log(conv2d(e^x, e^w) + e^b) and
    -log(conv2d(e^-x, e^-w) + e^-b')."""
    y_max = torch.log(
        F.conv2d(torch.exp(x), torch.exp(w), None if b_max is None else torch.exp(b_max), stride, padding)
    )
    y_min = -torch.log(
        F.conv2d(torch.exp(-x), torch.exp(-w), None if b_min is None else torch.exp(-b_min), stride, padding)
    )
    return {"max": y_max, "min": y_min, "sum": y_max + y_min}[method]


# -- helpers -------------------------------------------------------------------------------------------


def build(cls, engine, *args, **kwargs):
    return (cls if engine == "tropic" else tnn.engine_class(cls))(*args, **kwargs)


def cotangent(rng, shape):
    """Multiples of 1/8: sums of a few of them are exact, so gradients compare bitwise."""
    return np.round(8 * rng.standard_normal(shape)) / 8


def run(layer, x, engine, grad=True):
    """(output, d sum(output * g)/dx, {parameter: gradient}) as NumPy, for either engine."""
    rng = np.random.default_rng(123)
    if engine == "tropic":
        import tropic.autodiff as ad

        xt = ad.tensor(x, requires_grad=grad)
        y = layer(xt)
        g = cotangent(rng, y.shape)
        if grad:
            (y * g).sum().backward()
        params = {n: (None if p.grad is None else np.asarray(p.grad)) for n, p in layer.named_parameters()}
        return y.numpy(), (np.asarray(xt.grad) if grad else None), params
    xt = torch.tensor(x, requires_grad=grad)
    y = layer(xt)
    g = cotangent(rng, tuple(y.shape))
    if grad:
        (y * torch.from_numpy(g).to(y.dtype)).sum().backward()
    params = {n: (None if p.grad is None else p.grad.numpy()) for n, p in layer.named_parameters()}
    return y.detach().numpy(), (xt.grad.numpy() if grad else None), params


def reference_grads(formula, x, params, g_shape_dtype):
    """Torch autograd of ``formula(x, *params)`` for sum(y * g) with the same g as :func:`run`."""
    xt = torch.tensor(x, requires_grad=True)
    ps = [None if p is None else torch.tensor(p, requires_grad=True) for p in params]
    y = formula(xt, *ps)
    g = cotangent(np.random.default_rng(123), tuple(y.shape))
    (y * torch.from_numpy(g).to(y.dtype)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), [None if p is None else p.grad.numpy() for p in ps]


def state(layer):
    if isinstance(layer, torch.nn.Module):
        return {k: v.detach().numpy() for k, v in layer.state_dict().items()}
    return {k: np.asarray(v) for k, v in layer.state_dict().items()}


# -- MPMConv2d -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("bias", "stride", "padding", "combine", "dtype"),
    [
        (False, 1, 1, "mean", np.float64),
        (True, 1, 1, "mean", np.float64),
        (True, 2, 0, "sum", np.float64),
        (False, 2, 2, "sum", np.float32),
        (True, 1, 1, "mean", np.float32),
    ],
)
def test_mpm_conv_values_bitwise(engine, bias, stride, padding, combine, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    layer = build(
        dc.MPMConv2d, engine, 3, 4, 3, stride, padding, bias=bias, combine=combine, seed=1, dtype=dtype
    )
    if bias:  # biases that win at some outputs and lose at others
        with_bias = {
            "bias_max": np.array([0.5, 50.0, -50.0, 1.0]),
            "bias_min": np.array([-0.5, -50.0, 50.0, -1.0]),
        }
        for name, value in with_bias.items():
            getattr(layer, name).data = (torch.from_numpy if engine == "torch" else np.asarray)(
                value.astype(dtype)
            )
    params = state(layer)
    expected = hard_reference(
        torch.from_numpy(x),
        torch.from_numpy(params["weight"]),
        *(torch.from_numpy(params[n]) if bias else None for n in ("bias_max", "bias_min")),
        stride,
        padding,
        combine,
    ).numpy()
    y, _, _ = run(layer, x, engine, grad=False)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)
    if bias:  # channel 1: the biases win everywhere (b = 50 in the max, b' = -50 in the min)
        np.testing.assert_array_equal(y[:, 1], np.zeros_like(y[:, 1]))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bias", [False, True])
def test_mpm_conv_subgradient_goes_to_the_winner(engine, bias):
    rng = np.random.default_rng(2)
    # Distinct dyadic values: no ties among candidates, exact sums.
    x = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) / 8.0 - 10.0
    w = rng.permutation(4 * 3 * 3 * 3).reshape(4, 3, 3, 3) / 16.0 - 3.0
    layer = build(dc.MPMConv2d, engine, 3, 4, 3, 1, 1, bias=bias, seed=0, dtype=np.float64)
    b_max, b_min = np.array([3.03125, -50.0, 50.0, 1.53125]), np.array([-3.03125, 50.0, -50.0, -1.53125])
    conv = torch.from_numpy if engine == "torch" else np.asarray
    layer.weight.data = conv(w.copy())
    if bias:
        layer.bias_max.data, layer.bias_min.data = conv(b_max.copy()), conv(b_min.copy())
    y, gx, gp = run(layer, x, engine)
    params = [w, b_max, b_min] if bias else [w, None, None]
    y_ref, gx_ref, (gw_ref, gb_ref, gb2_ref) = reference_grads(
        lambda xt, wt, b1, b2: hard_reference(xt, wt, b1, b2, 1, 1, "mean"), x, params, None
    )
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, gx_ref)
    np.testing.assert_array_equal(gp["weight"], gw_ref)
    if bias:
        np.testing.assert_array_equal(gp["bias_max"], gb_ref)
        np.testing.assert_array_equal(gp["bias_min"], gb2_ref)
        assert np.any(gb_ref != 0) and np.any(gb_ref == 0)  # biases won some outputs, not all


def test_mpm_conv_pruned_weight_is_the_tropical_zero_of_both_branches():
    import tropic.nn as tnn_np

    x = np.random.default_rng(3).standard_normal((1, 2, 5, 5))
    layer = dc.MPMConv2d(2, 3, 3, padding=1, seed=0, dtype=np.float64)
    tnn_np.pruning.l1_unstructured(layer, 0.5)
    keep, w = layer.weight.mask, np.asarray(layer.weight.data)
    xt = torch.from_numpy(x)
    cols_max = F.unfold(F.pad(xt, (1, 1, 1, 1), value=-np.inf), 3)[:, None]
    cols_min = F.unfold(F.pad(xt, (1, 1, 1, 1), value=np.inf), 3)[:, None]
    w_max = torch.from_numpy(np.where(keep, w, -np.inf)).reshape(3, -1)[None, :, :, None]
    w_min = torch.from_numpy(np.where(keep, w, np.inf)).reshape(3, -1)[None, :, :, None]
    expected = ((cols_max + w_max).amax(2) + (cols_min + w_min).amin(2)) / 2
    y = layer(x).numpy()
    np.testing.assert_array_equal(y, expected.reshape(1, 3, 5, 5).numpy())
    unpruned = hard_reference(xt, torch.from_numpy(w), None, None, 1, 1, "mean").numpy()
    assert not np.array_equal(y, unpruned)  # the stored zeros are not used as 0


# -- SoftMPMConv2d ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("method", ["sum", "max", "min"])
@pytest.mark.parametrize(("bias", "stride", "padding"), [(True, 1, 1), (False, 2, 0), (True, 2, 2)])
def test_soft_conv_matches_the_reference_formula_in_float64(engine, method, bias, stride, padding):
    rng = np.random.default_rng(4)
    x = rng.uniform(-3, 3, (2, 3, 7, 8))
    layer = build(
        dc.SoftMPMConv2d, engine, 3, 4, 3, stride, padding, bias=bias, method=method, seed=5, dtype=np.float64
    )
    p = state(layer)
    params = [p["weight"], p.get("bias_max"), p.get("bias_min")]
    assert (params[1] is not None) == (bias and method != "min")
    assert (params[2] is not None) == (bias and method != "max")
    y_ref, gx_ref, g_ref = reference_grads(
        lambda xt, wt, b1, b2: soft_reference(xt, wt, b1, b2, stride, padding, method), x, params, None
    )
    y, gx, gp = run(layer, x, engine)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gp["weight"], g_ref[0], rtol=1e-10, atol=1e-12)
    for name, ref in zip(("bias_max", "bias_min"), g_ref[1:], strict=True):
        if ref is not None:
            np.testing.assert_allclose(gp[name], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_soft_conv_is_stable_where_the_reference_overflows(engine):
    rng = np.random.default_rng(6)
    x = np.clip(100.0 * rng.standard_normal((2, 2, 6, 6)), -400, 400)
    layer = build(dc.SoftMPMConv2d, engine, 2, 3, 3, 1, 1, seed=7, dtype=np.float32)
    p = state(layer)
    args = [torch.from_numpy(p[n]) for n in ("weight", "bias_max", "bias_min")]
    with torch.no_grad():
        naive32 = soft_reference(torch.from_numpy(x.astype(np.float32)), *args, 1, 1, "sum").numpy()
        exact64 = soft_reference(torch.from_numpy(x), *(a.double() for a in args), 1, 1, "sum").numpy()
    assert not np.all(np.isfinite(naive32))  # the reference formula in float32 breaks here
    assert np.all(np.isfinite(exact64))
    y, gx, gp = run(layer, x.astype(np.float32), engine)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gx)) and np.all(np.isfinite(gp["weight"]))
    np.testing.assert_allclose(y, exact64, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_soft_conv_translation_far_beyond_float64_exp(engine):
    """Without bias, the soft dilation commutes with adding a constant: y(x + t) = y(x) + t, also for
    t = 1e4, where e^x overflows even in float64."""
    rng = np.random.default_rng(8)
    x = rng.uniform(-2, 2, (1, 2, 5, 5))
    layer = build(dc.SoftMPMConv2d, engine, 2, 3, 3, 1, 1, bias=False, method="max", seed=9, dtype=np.float64)
    y0, _, _ = run(layer, x, engine, grad=False)
    y1, gx, _ = run(layer, x + 1.0e4, engine)
    np.testing.assert_allclose(y1 - 1.0e4, y0, rtol=0, atol=1e-9)
    assert np.all(np.isfinite(gx))
    layer_min = build(
        dc.SoftMPMConv2d, engine, 2, 3, 3, 1, 1, bias=False, method="min", seed=9, dtype=np.float64
    )
    z0, _, _ = run(layer_min, x, engine, grad=False)
    z1, _, _ = run(layer_min, x - 1.0e4, engine, grad=False)
    np.testing.assert_allclose(z1 + 1.0e4, z0, rtol=0, atol=1e-9)


# -- ConvLinAct ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_conv_linact_simple_is_the_reference_diagonal_kernel(engine):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 4, 5, 6))
    layer = build(dc.ConvLinAct, engine, 4, init="normal", seed=0, dtype=np.float64)
    a = state(layer)["weight"]  # (C, 3, 3)
    assert a.shape == (4, 3, 3)
    # The reference's kernel: a (3, 3, C) made a diagonal C x C matrix per offset, then (C, C, 3, 3).
    a_ref = torch.from_numpy(a.transpose(1, 2, 0).copy())
    kernel = torch.diag_embed(a_ref).permute(2, 3, 0, 1)
    y_ref = F.conv2d(torch.from_numpy(x), kernel, padding=1).numpy()
    y, _, _ = run(layer, x, engine, grad=False)
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("engine", ENGINES)
def test_conv_linact_identity_init_is_the_identity(engine):
    x = np.random.default_rng(11).standard_normal((2, 3, 4, 5)).astype(np.float32)
    layer = build(dc.ConvLinAct, engine, 3, seed=0)
    a = state(layer)["weight"]
    expected = np.zeros((3, 3, 3), np.float32)
    expected[:, 1, 1] = 1
    np.testing.assert_array_equal(a, expected)
    y, gx, gp = run(layer, x, engine)
    np.testing.assert_array_equal(y, x)
    assert gp["weight"].shape == (3, 3, 3)


@pytest.mark.parametrize("engine", ENGINES)
def test_conv_linact_svd_starts_as_the_default_kernel_and_learns_singular_values(engine):
    from tropic.nn import init

    c = 5
    layer = build(dc.ConvLinAct, engine, c, method="svd", seed=12, dtype=np.float64)
    k0 = init.fan_in_uniform((c, c, 3, 3), np.random.default_rng(12), np.float64)  # U(+-1/sqrt(9C))
    assert np.abs(k0).max() <= 1 / np.sqrt(9 * c)
    s = state(layer)
    u, v, a = s["u"], s["v"], s["weight"]
    # The reference's kernel formula: U @ (a[..., None] * V^T) per offset (3, 3, C, C) -> (C, C, 3, 3).
    a_ref = torch.from_numpy(a.transpose(1, 2, 0).copy())
    kernel = (torch.from_numpy(u) @ (a_ref.unsqueeze(-1) * torch.from_numpy(v).transpose(-1, -2))).permute(
        2, 3, 0, 1
    )
    np.testing.assert_allclose(kernel.numpy(), k0, rtol=1e-12, atol=1e-14)
    x = np.random.default_rng(13).standard_normal((2, c, 4, 4))
    y, _, gp = run(layer, x, engine)
    np.testing.assert_allclose(
        y, F.conv2d(torch.from_numpy(x), torch.from_numpy(k0), padding=1).numpy(), atol=1e-12
    )
    params = dict(layer.named_parameters())
    assert set(params) == {"weight"} and gp["weight"].shape == (c, 3, 3)  # U, V frozen buffers


# -- engines, conversion, models -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (dc.MPMConv2d, (3, 4, 3), {"padding": 1, "bias": True}),
        (dc.SoftMPMConv2d, (3, 4, 3), {"padding": 1}),
        (dc.ConvLinAct, (3,), {"init": "normal"}),
        (dc.ConvLinAct, (3,), {"method": "svd"}),
    ],
)
def test_same_seed_same_layer_on_both_engines(cls, args, kwargs):
    own = cls(*args, **kwargs, seed=3, dtype=np.float64)
    mirror = tnn.engine_class(cls)(*args, **kwargs, seed=3, dtype=np.float64)
    converted = tnn.from_tropic(own)
    a, b, c = state(own), state(mirror), state(converted)
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a[key], c[key])
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    y = own(x).numpy()
    np.testing.assert_allclose(mirror(torch.from_numpy(x)).detach().numpy(), y, rtol=1e-13, atol=1e-13)


def test_global_avg_pool():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    pool = dc.GlobalAvgPool2d()
    expected = F.avg_pool2d(torch.from_numpy(x), 4).reshape(2, 3).numpy()
    np.testing.assert_allclose(pool(x).numpy(), expected, rtol=1e-14)
    np.testing.assert_allclose(tnn.from_tropic(pool)(torch.from_numpy(x)).numpy(), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="GlobalAvgPool2d: x must have shape"):
        pool(np.zeros((2, 3)))


def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def lenet_reference_counts():
    """Parameter counts of the reference LeNet5 and MPM_LeNet5, layer by layer (mainMNNs.ipynb)."""
    convs = [(1, 6), (6, 16), (16, 120)]
    lenet = sum(o * c * 25 + o for c, o in convs) + (120 * 84 + 84) + 84 * 10
    mpm = sum(o * c * 25 + 2 * o + 9 * o for c, o in convs) + (120 * 84 + 2 * 84) + 84 + (84 * 10 + 2 * 10)
    return lenet, mpm


@pytest.mark.parametrize("which", ["lenet5", "mpm_simple", "mpm_svd", "mpm_hard"])
def test_lenet_models_shapes_counts_and_engines(which):
    make = {
        "lenet5": lambda: dc.lenet5(seed=0, dtype=np.float64),
        "mpm_simple": lambda: dc.mpm_lenet5(seed=0, dtype=np.float64),
        "mpm_svd": lambda: dc.mpm_lenet5(linact="svd", seed=0, dtype=np.float64),
        "mpm_hard": lambda: dc.mpm_lenet5(conv="hard", seed=0, dtype=np.float64),
    }[which]
    net = make()
    lenet, mpm = lenet_reference_counts()
    assert n_params(net) == (lenet if which == "lenet5" else mpm)
    if which != "lenet5":
        assert net[0].weight.shape == (6, 1, 5, 5) and np.abs(np.asarray(net[0].weight.data)).max() < 0.01
        assert np.abs(np.asarray(net[3].weight.data)).std() > 0.5  # N(0, 1)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    y = net(x)
    assert y.shape == (2, 10)
    mirror = tnn.from_tropic(net)
    np.testing.assert_allclose(mirror(torch.from_numpy(x)).detach().numpy(), y.numpy(), rtol=1e-9, atol=1e-9)
    again = state(make())
    for key, value in state(net).items():  # same seed, same initial values
        np.testing.assert_array_equal(value, again[key])


def resnet20_reference_count(in_channels=3, classes=10):
    """Parameters of the reference ResNet20 (resnet_20_experiments_3.ipynb), counted per layer."""
    total = in_channels * 16 * 9 + 2 * 16
    n_in = 16
    for planes in (16, 32, 64):
        for _ in range(3):
            total += n_in * planes * 9 + planes * planes * 9 + 4 * planes
            total += n_in * planes if n_in != planes else 0
            n_in = planes
    return total + 64 * classes + classes


def test_resnet_models_full_size_counts():
    assert n_params(dc.resnet20(seed=0)) == resnet20_reference_count() == 272282
    net = dc.mpm_resnet20(seed=0)
    # The reference's MorphConv2d without bias keeps two inert (+-1e9) bias vectors; tropic stores none.
    weights = [m.weight.shape for m in net.modules() if isinstance(m, dc.MPMConv2d) and m.bias_max is None]
    assert len(weights) == 1 + 2 * 9 + 2  # stem, two per block, two projection shortcuts
    assert (32, 16, 1, 1) in weights and (64, 32, 1, 1) in weights


@pytest.mark.parametrize("which", ["resnet20", "mpm_resnet20"])
def test_resnet_models_small_forward_backward_both_engines(which):
    import tropic.autodiff as ad
    import tropic.nn as nn

    make = getattr(dc, which)
    net = make(blocks=(1, 1, 1), seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    mirror = tnn.from_tropic(net)
    y = net(ad.tensor(x))
    assert y.shape == (2, 10)
    y_t = mirror(torch.from_numpy(x))
    np.testing.assert_allclose(y_t.detach().numpy(), y.numpy(), rtol=1e-9, atol=1e-9)
    labels = np.array([1, 7])
    nn.cross_entropy(y, labels).backward()
    F.cross_entropy(y_t, torch.from_numpy(labels)).backward()
    grads = {n: np.asarray(p.grad) for n, p in net.named_parameters()}
    for name, p in mirror.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[name], rtol=1e-7, atol=1e-9)
    if which == "mpm_resnet20":  # identity ConvLinAct at the start: the stem is the MPM conv alone
        np.testing.assert_array_equal(net[1](net[0](x)).numpy(), net[0](x).numpy())


# -- bad arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: dc.MPMConv2d(3, 4, 3, combine="max"), "combine"),
        (lambda: dc.MPMConv2d(3, 4, 3, std=-1.0), "std"),
        (lambda: dc.MPMConv2d(3, 4, 3, std=float("nan")), "std"),
        (lambda: dc.MPMConv2d(0, 4, 3), "in_channels"),
        (lambda: dc.MPMConv2d(3, 4, 3, padding=-1), "padding"),
        (lambda: dc.SoftMPMConv2d(3, 4, 3, method="max-plus-min"), "method"),
        (lambda: dc.SoftMPMConv2d(3, 4, 3, padding=3), "padding"),
        (lambda: dc.SoftMPMConv2d(3, 4, 3, stride=0), "stride"),
        (lambda: dc.ConvLinAct(0), "channels"),
        (lambda: dc.ConvLinAct(3, method="diag"), "method"),
        (lambda: dc.ConvLinAct(3, init="zeros"), "init"),
        (lambda: dc.ConvLinAct(3, method="svd", init="identity"), "init"),
        (lambda: dc.mpm_lenet5(linact="relu"), "linact"),
        (lambda: dc.mpm_lenet5(conv="linear"), "conv"),
        (lambda: dc.mpm_lenet5(num_classes=0), "num_classes"),
        (lambda: dc.lenet5(in_channels=0), "in_channels"),
        (lambda: dc.mpm_resnet20(blocks=(3, 3)), "blocks"),
        (lambda: dc.resnet20(blocks=(3, 0, 3)), "blocks"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls", [dc.MPMConv2d, dc.SoftMPMConv2d])
def test_wrong_input_shape_names_the_layer(engine, cls):
    layer = build(cls, engine, 3, 4, 3, seed=0)
    x = np.zeros((2, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: x must have shape \(B, 3, H, W\)"):
        layer(torch.from_numpy(x) if engine == "torch" else x)


def test_residual_block_shape_mismatch():
    block = dc.ResidualBlock(dc.MPMConv2d(3, 4, 3, padding=1, seed=0))
    with pytest.raises(ValueError, match="shortcut"):
        block(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="shortcut must be a Module"):
        dc.ResidualBlock(block, shortcut="identity")
