"""Every tropic.nn layer against a direct NumPy formula, its gradients, and the initialisers."""

from __future__ import annotations

import numpy as np
import pytest

import tropic.autodiff as ad
import tropic.nn as nn
from tests.helpers import assert_identical
from tropic.nn import init

RNG = np.random.default_rng(1234)


def randn(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def check_param_grads(module, x, n_entries=6, h=1e-6, rtol=1e-5):
    """Backward of ``sum(module(x) * r)`` against central differences on a few entries of every
    parameter (float64, random data: the max/min winners are unique and stable under ``h``)."""
    r = randn(*module(x).shape)
    module.zero_grad()
    ad.sum(module(x) * r).backward()
    rng = np.random.default_rng(0)
    checked = 0
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        finite = np.flatnonzero(np.isfinite(p.data))
        for flat in rng.choice(finite, size=min(n_entries, finite.size), replace=False):
            idx = np.unravel_index(flat, p.shape)
            base = p.data
            values = []
            for step in (h, -h):
                data = base.copy()
                data[idx] += step
                p.data = data
                with ad.no_grad():
                    values.append(float(np.sum(module(x).data * r)))
            p.data = base
            numeric = (values[0] - values[1]) / (2 * h)
            np.testing.assert_allclose(p.grad[idx], numeric, rtol=rtol, atol=1e-6, err_msg=f"{name}{idx}")
            checked += 1
    assert checked > 0


# -- dense layers --------------------------------------------------------------------------------


def test_linear_forward_and_grads():
    layer = nn.Linear(5, 3, seed=0, dtype=np.float64)
    x = randn(4, 5)
    assert_identical(layer(x).data, x @ layer.weight.data.T + layer.bias.data)
    assert nn.Linear(5, 3, bias=False, seed=0).bias is None
    check_param_grads(layer, x)


def test_linear_he_init_statistics():
    w = nn.Linear(400, 300, seed=0).weight.data
    assert w.dtype == np.float32 and w.shape == (300, 400)
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.01 * np.sqrt(2 / 400) * 5
    w = nn.Linear(400, 300, init="glorot_uniform", seed=0).weight.data
    bound = np.sqrt(6 / 700)
    assert w.max() <= bound and w.min() >= -bound and w.max() > 0.99 * bound
    with pytest.raises(ValueError, match="init must be one of"):
        nn.Linear(2, 2, init="kaiming")


def test_maxplus_forward_formula_bias_inside_the_max():
    layer = nn.MaxPlus(6, 4, seed=0, dtype=np.float64)
    x = randn(5, 6)
    w, b = layer.weight.data, layer.bias.data
    expected = np.maximum(
        b, np.max(x[:, None, :] + w[None, :, :], axis=-1)
    )  # y_j = max(b_j, max_i x_i + W_ji)
    assert_identical(layer(x).data, expected)
    layer.bias = None
    assert_identical(layer(x).data, np.max(x[:, None, :] + w[None, :, :], axis=-1))


def test_minplus_forward_formula():
    layer = nn.MinPlus(6, 4, seed=0, dtype=np.float64)
    x = randn(5, 6)
    w, b = layer.weight.data, layer.bias.data
    assert_identical(layer(x).data, np.minimum(b, np.min(x[:, None, :] + w[None, :, :], axis=-1)))


@pytest.mark.parametrize("cls", [nn.MaxPlus, nn.MinPlus])
def test_tropical_dense_grads(cls):
    layer = cls(6, 4, seed=3, dtype=np.float64)
    layer.bias.data = layer.bias.data - 3.0 * (1 if cls is nn.MaxPlus else -1)  # let products win too
    check_param_grads(layer, randn(5, 6), n_entries=24)


def test_maxplus_gradient_goes_to_the_single_winner():
    layer = nn.MaxPlus(3, 2, seed=0, dtype=np.float64)
    layer.weight.data = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    layer.bias.data = np.array([5.0, -5.0])
    ad.sum(layer(np.array([[1.0, 0.5, 3.0]]))).backward()
    # Output 0: the bias 5 wins (1 + 0, 0.5 + 1, 3 - 1 are smaller);
    # output 1: x_0 + 2 = 3 ties with x_2 + 0 = 3 -> the lowest index i = 0.
    assert_identical(layer.bias.grad, np.array([1.0, 0.0]))
    assert_identical(layer.weight.grad, np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))


def test_sparse_maxplus_layer_init():
    layer = nn.MaxPlus(512, 512, init="sparse", count=1024, seed=0)
    w = layer.weight.data
    kept = np.isfinite(w)
    assert np.all(kept | (w == -np.inf)) and layer.weight.zero == -np.inf
    # p = 1024 / 512^2 = 1/256: the kept count is Binomial(262144, 1/256), mean 1024, sd 32.
    assert 1024 - 5 * 32 < kept.sum() < 1024 + 5 * 32
    dead = ~kept.any(axis=1)
    assert 0.08 < dead.mean() < 0.2  # about e^-2 = 13.5% of neurons start without a finite input
    y = layer(randn(3, 512, dtype=np.float32)).data
    assert np.all(np.isfinite(y)) and np.all(y[:, dead] == layer.bias.data[dead])
    minp = nn.MinPlus(20, 10, init="sparse", p=0.3, seed=0)
    assert np.all(np.isfinite(minp.weight.data) | (minp.weight.data == np.inf))
    with pytest.raises(ValueError, match="exactly one of p and count"):
        nn.MaxPlus(4, 4, init="sparse")
    with pytest.raises(ValueError, match="init='sparse' only"):
        nn.MaxPlus(4, 4, p=0.5)


def test_dilation_erosion_concat_and_sum():
    layer = nn.DilationErosion(5, 3, 2, seed=0, dtype=np.float64)
    x = randn(4, 5)
    d, e = layer.dilation, layer.erosion
    dil = np.maximum(d.bias.data, np.max(x[:, None] + d.weight.data[None], axis=-1))
    ero = np.minimum(e.bias.data, np.min(x[:, None] + e.weight.data[None], axis=-1))
    assert_identical(layer(x).data, np.concatenate([dil, ero], axis=1))
    summed = nn.DilationErosion(5, 3, combine="sum", seed=0, dtype=np.float64)
    d, e = summed.dilation, summed.erosion
    dil = np.maximum(d.bias.data, np.max(x[:, None] + d.weight.data[None], axis=-1))
    ero = np.minimum(e.bias.data, np.min(x[:, None] + e.weight.data[None], axis=-1))
    assert_identical(summed(x).data, dil + ero)
    assert [n for n, _ in layer.named_parameters()] == [
        "dilation.weight", "dilation.bias", "erosion.weight", "erosion.bias",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="n_dilation == n_erosion"):
        nn.DilationErosion(5, 3, 2, combine="sum")
    check_param_grads(layer, x, n_entries=8)


def test_maxout_groups_consecutive_units():
    layer = nn.Maxout(5, 3, pieces=4, seed=0, dtype=np.float64)
    x = randn(6, 5)
    z = x @ layer.linear.weight.data.T + layer.linear.bias.data
    assert_identical(layer(x).data, z.reshape(6, 3, 4).max(axis=-1))
    check_param_grads(layer, x)


# -- convolutions --------------------------------------------------------------------------------


def conv_reference(x, w, stride, padding, groups, reduce, pad_value):
    """Direct loops: y[b,o,i,j] = reduce_{c,u,v} x[b, g(o)*Cg + c, i*s+u-p, j*s+v-p] (+ or *) w[o,c,u,v]."""
    b, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp_ = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.empty((b, cout, oh, ow))
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                patch = xp_[:, g * cg : (g + 1) * cg, i * sh : i * sh + kh, j * sw : j * sw + kw]
                out[:, o, i, j] = reduce(patch, w[o])
    return out


@pytest.mark.parametrize(("stride", "padding", "groups"), [(1, 0, 1), (2, 1, 1), ((1, 2), (2, 1), 2)])
def test_conv2d_formula(stride, padding, groups):
    layer = nn.Conv2d(4, 6, (3, 2), stride, padding, groups, seed=0, dtype=np.float64)
    x = randn(2, 4, 7, 6)
    s, p = nn.conv.pair("stride", stride, 1), nn.conv.pair("padding", padding, 0)
    ref = conv_reference(x, layer.weight.data, s, p, groups, lambda a, w: np.sum(a * w, axis=(1, 2, 3)), 0.0)
    np.testing.assert_allclose(layer(x).data, ref + layer.bias.data[:, None, None], rtol=1e-12, atol=1e-12)
    check_param_grads(layer, x)


@pytest.mark.parametrize(("stride", "padding", "groups"), [(1, 0, 1), (2, 1, 1), ((1, 2), (2, 1), 2)])
@pytest.mark.parametrize("kind", ["max", "min"])
def test_tropical_conv2d_formula(kind, stride, padding, groups):
    cls = nn.MaxPlusConv2d if kind == "max" else nn.MinPlusConv2d
    layer = cls(4, 6, (3, 2), stride, padding, groups, bias=True, seed=0, dtype=np.float64)
    x = randn(2, 4, 7, 6)
    s, p = nn.conv.pair("stride", stride, 1), nn.conv.pair("padding", padding, 0)
    if kind == "max":
        ref = conv_reference(
            x, layer.weight.data, s, p, groups, lambda a, w: np.max(a + w, axis=(1, 2, 3)), -np.inf
        )
        ref = np.maximum(layer.bias.data[:, None, None], ref)
    else:
        ref = conv_reference(
            x, layer.weight.data, s, p, groups, lambda a, w: np.min(a + w, axis=(1, 2, 3)), np.inf
        )
        ref = np.minimum(layer.bias.data[:, None, None], ref)
    assert_identical(layer(x).data, ref)
    assert cls(2, 2, 3).bias is None  # off by default for the convolutions
    check_param_grads(layer, x, n_entries=10)


@pytest.mark.parametrize("kernel_size", [3, 2, (2, 3), (1, 4)])
def test_dilation2d_erosion2d_match_scipy_per_channel(kernel_size):
    ndi = pytest.importorskip("scipy.ndimage")
    x = randn(2, 3, 6, 7)
    dil = nn.Dilation2d(3, kernel_size, init="normal", seed=0, dtype=np.float64)
    ero = nn.Erosion2d(3, kernel_size, init="normal", seed=1, dtype=np.float64)
    s_d, s_e = dil.structure.data, ero.structure.data

    def per_channel(op, s, cval):
        return np.stack(
            [
                np.stack([op(x[b, c], structure=s[c], mode="constant", cval=cval) for c in range(3)])
                for b in range(2)
            ]
        )

    ref_d = per_channel(ndi.grey_dilation, s_d, -np.inf)
    ref_e = per_channel(ndi.grey_erosion, s_e, np.inf)
    assert_identical(dil(x).data, ref_d)
    assert_identical(ero(x).data, ref_e)
    check_param_grads(dil, x)
    check_param_grads(ero, x)


def test_flat_dilation2d_is_a_max_filter_and_rejects_wrong_channels():
    layer = nn.Dilation2d(2, 3, dtype=np.float64)
    x = randn(1, 2, 5, 5)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    assert_identical(layer(x).data, windows.max(axis=(-2, -1)))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        layer(randn(1, 3, 5, 5))


def test_maxpool_flatten_relu():
    x = randn(2, 3, 6, 4)
    pooled = nn.MaxPool2d(2)(x).data
    assert_identical(pooled, x.reshape(2, 3, 3, 2, 2, 2).max(axis=(3, 5)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
    assert_identical(nn.MaxPool2d(3, stride=1)(x).data, windows.max(axis=(-2, -1)))
    assert_identical(nn.Flatten()(x).data, x.reshape(2, 72))
    assert_identical(nn.Flatten(2)(x).data, x.reshape(2, 3, 24))
    assert_identical(nn.ReLU()(x).data, np.maximum(x, 0))
    assert_identical(nn.Tanh()(x).data, np.tanh(x))
    np.testing.assert_allclose(nn.Sigmoid()(x).data, 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_allclose(nn.Softplus()(x).data, np.log1p(np.exp(x)), rtol=1e-14)
    assert nn.Identity()(x) is x


# -- normalisation, dropout, residual ------------------------------------------------------------


def test_batchnorm1d_train_and_eval():
    bn = nn.BatchNorm1d(3, momentum=0.2, dtype=np.float64)
    bn.weight.data = np.array([1.0, 2.0, -1.0])
    bn.bias.data = np.array([0.0, 0.5, 1.0])
    x = randn(8, 3) * 3 + 1
    mean, var = x.mean(axis=0), x.var(axis=0)
    expected = (x - mean) / np.sqrt(var + 1e-5) * bn.weight.data + bn.bias.data
    np.testing.assert_allclose(bn(x).data, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * x.var(axis=0, ddof=1), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    before = bn.running_mean.copy()
    y = randn(4, 3)
    ref = (y - bn.running_mean) / np.sqrt(bn.running_var + 1e-5) * bn.weight.data + bn.bias.data
    np.testing.assert_allclose(bn(y).data, ref, rtol=1e-12, atol=1e-12)
    assert_identical(bn.running_mean, before)  # eval does not update the statistics
    bn.train()
    check_param_grads(bn, x)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        bn(randn(4, 2))


def test_batchnorm_input_gradient_matches_finite_differences():
    bn = nn.BatchNorm1d(2, dtype=np.float64)
    x = ad.Tensor(randn(5, 2), requires_grad=True)
    r = randn(5, 2)
    ad.sum(bn(x) * r).backward()
    h = 1e-6
    for idx in [(0, 0), (3, 1)]:
        vals = []
        for step in (h, -h):
            d = x.data.copy()
            d[idx] += step
            vals.append(float(np.sum(bn(d).data * r)))
        np.testing.assert_allclose(x.grad[idx], (vals[0] - vals[1]) / (2 * h), rtol=1e-5, atol=1e-7)


def test_dropout():
    drop = nn.Dropout(0.25, seed=0)
    x = np.ones((200, 100), dtype=np.float32)
    y = drop(x).data
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert not np.array_equal(drop(x).data, y)  # a fresh mask each call
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.0)


def test_weight_dropout_linear_scales_and_masks_the_weight():
    layer = nn.Linear(30, 20, seed=0, dtype=np.float64)
    wd = nn.WeightDropout(layer, 0.5, seed=1)
    x = randn(4, 30)
    w = layer.weight.data.copy()
    keep = np.random.default_rng(1).random(w.shape) >= 0.5  # the same draw the layer makes
    y = wd(x)
    np.testing.assert_allclose(y.data, x @ (np.where(keep, w, 0) * 2).T + layer.bias.data, rtol=1e-12)
    ad.sum(y).backward()
    assert np.all(layer.weight.grad[~keep] == 0) and np.all(layer.weight.grad[keep] != 0)
    assert_identical(layer.weight.data, w)  # the parameter itself is untouched
    assert isinstance(layer.weight, nn.Parameter)
    wd.eval()
    assert_identical(wd(x).data, layer(x).data)
    assert [n for n, _ in wd.named_parameters()] == ["layer.weight", "layer.bias"]


def test_weight_dropout_tropical_uses_the_tropical_zero():
    layer = nn.MaxPlus(10, 5, seed=0, dtype=np.float64)
    wd = nn.DropConnect(layer, 0.3, seed=2)
    x = randn(3, 10)
    keep = np.random.default_rng(2).random(layer.weight.shape) >= 0.3
    w = np.where(keep, layer.weight.data, -np.inf)
    expected = np.maximum(layer.bias.data, np.max(x[:, None] + w[None], axis=-1))
    assert_identical(wd(x).data, expected)


def test_residual():
    block = nn.Linear(4, 4, seed=0, dtype=np.float64)
    x = randn(3, 4)
    assert_identical(nn.Residual(block)(x).data, x + block(x).data)
    with pytest.raises(ValueError, match="changed the shape"):
        nn.Residual(nn.Linear(4, 2, seed=0))(x)


# -- initialisers --------------------------------------------------------------------------------


def test_initialisers_statistics_and_dtype():
    rng = np.random.default_rng(0)
    shape = (256, 128, 3, 3)
    fan_in, fan_out = init.fans(shape)
    assert (fan_in, fan_out) == (128 * 9, 256 * 9)
    for fn, std in [
        (init.he_normal, np.sqrt(2 / fan_in)),
        (init.he_uniform, np.sqrt(2 / fan_in)),
        (init.glorot_normal, np.sqrt(2 / (fan_in + fan_out))),
        (init.glorot_uniform, np.sqrt(2 / (fan_in + fan_out))),
    ]:
        w = fn(shape, rng, np.float32)
        assert w.dtype == np.float32 and w.shape == shape
        assert abs(w.std() / std - 1) < 0.01, fn.__name__
        assert abs(w.mean()) < 0.01 * std * 10
    w = init.normal((1000, 100), 0, np.float64)
    assert abs(w.std() - 1) < 0.01 and w.dtype == np.float64
    assert_identical(init.normal((3, 4), 5), init.normal((3, 4), np.random.default_rng(5)))


def test_sparse_maxplus_exact_inf_and_rate():
    w = init.sparse_maxplus((200, 300), 0, p=0.1)
    kept = np.isfinite(w)
    assert np.all(kept | np.isneginf(w))
    assert abs(kept.mean() - 0.1) < 0.005
    assert abs(w[kept].std() - 1) < 0.03  # kept entries are N(0, 1), no fan-in scaling
    w2 = init.sparse_maxplus((200, 300), 0, count=6000)  # exactly 6000 finite entries, the same draws
    assert np.isfinite(w2).sum() == 6000 and np.all(np.isfinite(w2) | np.isneginf(w2))
    assert_identical(w2[np.isfinite(w2)], init.normal((200, 300), 0)[np.isfinite(w2)])
    assert np.all(np.isfinite(init.sparse_maxplus((3, 3), 0, p=1.0)))
    assert np.isposinf(init.sparse_maxplus((50, 50), 0, p=0.1, zero=np.inf)).any()
    for kwargs, match in [({}, "exactly one"), ({"p": 0.0}, "p must be"), ({"count": -1}, "count must")]:
        with pytest.raises(ValueError, match=match):
            init.sparse_maxplus((3, 3), 0, **kwargs)


def test_as_rng():
    g = np.random.default_rng(0)
    assert init.as_rng(g) is g
    assert init.as_rng(seed=3).random() == np.random.default_rng(3).random()
    with pytest.raises(ValueError, match="not both"):
        init.as_rng(1, seed=2)
    with pytest.raises(TypeError, match="rng must be"):
        init.as_rng("seed")


@pytest.mark.parametrize("dims", [1, 2])
def test_batchnorm_matches_torch(dims):
    torch = pytest.importorskip("torch")
    ours = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(4, momentum=0.3, dtype=np.float64)
    theirs = (torch.nn.BatchNorm1d if dims == 1 else torch.nn.BatchNorm2d)(4, momentum=0.3).double()
    shape = (6, 4) if dims == 1 else (3, 4, 5, 2)
    for step in range(3):
        x = randn(*shape) * (step + 1) + step
        r = randn(*shape)
        ours.zero_grad()
        y = ours(x)
        ad.sum(y * r).backward()
        ty = theirs(torch.tensor(x))
        theirs.zero_grad()
        (ty * torch.tensor(r)).sum().backward()
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)
    ours.eval()
    theirs.eval()
    x = randn(*shape)
    np.testing.assert_allclose(ours(x).data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="x must have shape"):
        ours(randn(3, 5, 2) if dims == 1 else randn(3, 4))
