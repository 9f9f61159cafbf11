"""Min-max-plus networks of the DMNN paper's reference code and the :class:`Negator` layer.

The reference (kostfoto/Morphological-Networks-as-Universal-Approximators @ b522dd3, ``mainMNNs.ipynb``,
classes ``MinMaxPlus``, ``Negator`` and ``MinMaxPlus_neg``): a diagonal "linear" activation on the
input, then pairs of a max-plus and a min-plus layer without biases, every weight ``N(0, 1)``; the
``_neg`` variant puts ``[x, -x]`` before each max-plus layer. The forwards are checked against the
formulas written here with NumPy broadcasting, the gradients against torch autograd of the same
formulas (tie-free inputs), the initial values against the draws of a NumPy generator with the same
seed, and the two engines (tropic.nn, tropic.torch.nn) against each other.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

import tropic.autodiff as ad
from tropic.nn import dmnn_models as models
from tropic.nn.dmnn import DiagonalActivation, Negator
from tropic.nn.tropical import MaxPlus, MinPlus

BUILDERS = {"min_max_plus": (models.min_max_plus, False), "min_max_plus_neg": (models.min_max_plus_neg, True)}
NAMES = list(BUILDERS)
SMALL = dict(in_features=7, hidden=5, out_features=3, blocks=2)
DIAGONAL_STD = {"tropic": 1.0 / math.sqrt(12.0), "reference": 1.0 / 3.46}


def build(name, **kwargs):
    return BUILDERS[name][0](**kwargs)


def params_of(net):
    """(a, [(W, V) per pair]) as float64 NumPy arrays, in the network's order."""
    layers = list(net)
    a = np.asarray(layers[0].weight.data, dtype=np.float64)
    tropical = [m for m in layers if isinstance(m, (MaxPlus, MinPlus))]
    weights = [np.asarray(m.weight.data, dtype=np.float64) for m in tropical]
    return a, list(zip(weights[::2], weights[1::2], strict=True))


def formula(a, pairs, x, negate):
    """The network written out with NumPy broadcasting: ``x <- a * x``, then per pair ``[x, -x]``
    (negate), ``u_j = max_i (x_i + W_ji)``, ``x_k = min_j (u_j + V_kj)``."""
    x = x * a
    for w, v in pairs:
        if negate:
            x = np.concatenate([x, -x], -1)
        u = (x[..., None, :] + w).max(-1)
        x = (u[..., None, :] + v).min(-1)
    return x


def torch_formula(torch, a, pairs, x, negate):
    """:func:`formula` on torch tensors (``amax`` / ``amin``, differentiable by autograd)."""
    x = x * a
    for w, v in pairs:
        if negate:
            x = torch.cat([x, -x], -1)
        u = (x[..., None, :] + w).amax(-1)
        x = (u[..., None, :] + v).amin(-1)
    return x


def second_gap(candidates, axis=-1):
    """Smallest gap between the largest and second largest candidate (> 0: unique winners)."""
    s = np.sort(candidates, axis=axis)
    return float(np.min(np.take(s, -1, axis) - np.take(s, -2, axis)))


# -- Negator --------------------------------------------------------------------------------------


def test_negator_forward_is_x_then_minus_x_on_the_last_axis():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    expected = np.concatenate([x, -x], axis=-1)
    for layer in (Negator(), Negator(4)):
        y = layer(x).numpy()
        assert y.shape == (2, 3, 8)
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(y[..., :4], x)
        np.testing.assert_array_equal(y[..., 4:], -x)
    assert not list(Negator(4).parameters())
    assert repr(Negator(4)) == "Negator(num_features=4)" and repr(Negator()) == "Negator()"


def test_negator_gradient_is_upstream_head_minus_tail():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 10))
    xt = ad.tensor(x.copy(), requires_grad=True)
    (Negator(5)(xt) * g).sum().backward()
    xr = torch.from_numpy(x.copy()).requires_grad_()
    (torch.cat([xr, -xr], -1) * torch.from_numpy(g)).sum().backward()
    np.testing.assert_array_equal(xt.grad, xr.grad.numpy())
    np.testing.assert_array_equal(xt.grad, g[:, :5] - g[:, 5:])


def test_negator_on_torch_engine_and_through_from_tropic():
    torch = pytest.importorskip("torch")
    tnn = importlib.import_module("tropic.torch.nn")
    from tropic.torch.nn import engine_class

    x = np.random.default_rng(2).standard_normal((4, 3))
    for module in (engine_class(Negator)(3), tnn.from_tropic(Negator(3)), tnn.from_tropic(Negator())):
        assert isinstance(module, torch.nn.Module) and type(module).__name__ == "Negator"
        xr = torch.from_numpy(x.copy()).requires_grad_()
        y = module(xr)
        np.testing.assert_array_equal(y.detach().numpy(), np.concatenate([x, -x], -1))
        y.sum().backward()  # d/dx of sum([x, -x]) = 0
        np.testing.assert_array_equal(xr.grad.numpy(), np.zeros_like(x))
    assert tnn.from_tropic(Negator(3)).num_features == 3


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: Negator(0), ValueError, "num_features"),
        (lambda: Negator(2.5), (TypeError, ValueError), "num_features"),
        (lambda: Negator(3)(np.zeros((2, 4))), ValueError, r"Negator: x must have shape \(\.\.\., 3\)"),
        (lambda: Negator()(np.float64(1.0)), ValueError, "Negator: x must have at least one axis"),
        (lambda: Negator(3, dtype=np.int32), TypeError, "floating dtype"),
    ],
)
def test_negator_bad_arguments_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()


# -- the networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_layout_follows_the_reference(name):
    negate = BUILDERS[name][1]
    n_in, h, n_out, k = 7, 5, 3, 2
    net = build(name, **SMALL, seed=0)
    layers = list(net)
    expected = [(DiagonalActivation, n_in, n_in)]
    for i, a in enumerate([n_in] + [h] * (k + 1)):
        if negate:
            expected.append((Negator, a, 2 * a))
        expected += [(MaxPlus, 2 * a if negate else a, h), (MinPlus, h, n_out if i == k + 1 else h)]
    assert len(layers) == len(expected)
    for layer, (cls, fan_in, fan_out) in zip(layers, expected, strict=True):
        assert type(layer) is cls
        if cls in (MaxPlus, MinPlus):
            assert (layer.in_features, layer.out_features) == (fan_in, fan_out)
            assert layer.bias is None  # the reference's bias=False
            assert layer.weight.data.shape == (fan_out, fan_in)
        elif cls is Negator:
            assert layer.num_features == fan_in
        else:
            assert layer.num_features == n_in
    assert sum(type(m) in (MaxPlus, MinPlus) for m in layers) == 2 * (k + 2)


@pytest.mark.parametrize("name, count", [("min_max_plus", 859_408), ("min_max_plus_neg", 1_387_792)])
def test_default_sizes_have_the_reference_notebooks_parameter_counts(name, count):
    # mainMNNs.ipynb prints "Total number of parameters" for MinMaxPlus() and MinMaxPlus_neg().
    net = build(name, seed=0)
    assert sum(p.data.size for p in net.parameters()) == count


@pytest.mark.parametrize("preset", ["tropic", "reference"])
@pytest.mark.parametrize("name", NAMES)
def test_initial_values_are_the_draws_of_one_generator(name, preset):
    # One NumPy generator: a = N(0, 1) * std first, then each weight N(0, 1), layer by layer.
    net = build(name, **SMALL, preset=preset, seed=42)
    gen = np.random.default_rng(42)
    a, pairs = params_of(net)
    np.testing.assert_array_equal(
        net[0].weight.data, (DIAGONAL_STD[preset] * gen.standard_normal(7)).astype(np.float32)
    )
    for w, v in pairs:
        np.testing.assert_array_equal(w, gen.standard_normal(w.shape).astype(np.float32))
        np.testing.assert_array_equal(v, gen.standard_normal(v.shape).astype(np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_initial_distributions(name):
    net = build(name, in_features=4096, hidden=128, out_features=10, blocks=1, preset="reference", seed=3)
    a, pairs = params_of(net)
    weights = np.concatenate([m.ravel() for pair in pairs for m in pair])
    for values, std in ((a, 1.0 / 3.46), (weights, 1.0)):
        n = values.size
        assert abs(values.mean()) < 6 * std / math.sqrt(n)
        assert abs(values.std() - std) < 6 * std / math.sqrt(2 * n)
    assert np.isfinite(weights).all()


@pytest.mark.parametrize("name", NAMES)
def test_default_preset_is_tropic_and_reference_changes_only_the_diagonal(name):
    default = build(name, **SMALL, seed=5).state_dict()
    tropic_ = build(name, **SMALL, preset="tropic", seed=5).state_dict()
    reference = build(name, **SMALL, preset="reference", seed=5).state_dict()
    assert list(default) == list(tropic_) == list(reference)
    for key in default:
        assert np.asarray(default[key]).tobytes() == np.asarray(tropic_[key]).tobytes()
        same = np.array_equal(default[key], reference[key])
        assert same == (key != "0.weight"), key
    ratio = np.asarray(reference["0.weight"], np.float64) / np.asarray(default["0.weight"], np.float64)
    np.testing.assert_allclose(ratio, math.sqrt(12.0) / 3.46, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_the_broadcast_formula(name):
    negate = BUILDERS[name][1]
    net = build(name, **SMALL, seed=7, dtype=np.float64)
    a, pairs = params_of(net)
    x = np.random.default_rng(8).standard_normal((6, 7))
    got = net(x).numpy()
    assert got.shape == (6, 3)
    np.testing.assert_array_equal(got, formula(a, pairs, x, negate))
    # Batch axes: a (2, 6, 7) input is the (6, 7) one twice.
    np.testing.assert_array_equal(net(np.stack([x, x])).numpy(), np.stack([got, got]))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_equal_torch_autograd_of_the_formula(name):
    torch = pytest.importorskip("torch")
    negate = BUILDERS[name][1]
    net = build(name, **SMALL, seed=9, dtype=np.float64)
    a, pairs = params_of(net)
    rng = np.random.default_rng(10)
    x, g = rng.standard_normal((6, 7)), rng.standard_normal((6, 3))

    # Tie-free: every max and min along the way has a unique winner (subgradients are then gradients).
    h = x * a
    for w, v in pairs:
        h = np.concatenate([h, -h], -1) if negate else h
        cand = h[..., None, :] + w
        assert second_gap(cand) > 1e-9
        u = cand.max(-1)
        cand = u[..., None, :] + v
        assert second_gap(-cand) > 1e-9
        h = cand.min(-1)

    xt = ad.tensor(x.copy(), requires_grad=True)
    (net(xt) * g).sum().backward()
    got = [xt.grad] + [p.grad for p in net.parameters()]

    leaves = [torch.from_numpy(m.copy()).requires_grad_() for m in [x, a] + [m for p in pairs for m in p]]
    xr, ar, rest = leaves[0], leaves[1], leaves[2:]
    out = torch_formula(torch, ar, list(zip(rest[::2], rest[1::2], strict=True)), xr, negate)
    (out * torch.from_numpy(g)).sum().backward()
    expected = [leaf.grad.numpy() for leaf in leaves]
    assert len(got) == len(expected)
    for got_grad, expected_grad in zip(got, expected, strict=True):
        np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert any(np.any(e != 0) for e in expected[2:])


@pytest.mark.parametrize("name", NAMES)
def test_min_max_plus_monotonicity(name):
    # Without negation the diagonal activation is the only sign change: the output is non-decreasing
    # in input i where a_i > 0 and non-increasing where a_i < 0. With negation it is not.
    negate = BUILDERS[name][1]
    net = build(name, in_features=6, hidden=8, out_features=4, blocks=1, seed=12, dtype=np.float64)
    a = np.asarray(net[0].weight.data)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((200, 6))
    base = net(x).numpy()
    violations = 0
    for i in range(6):
        step = np.zeros(6)
        step[i] = 3.0
        diff = (net(x + step).numpy() - base) * np.sign(a[i])
        violations += int(np.sum(diff < -1e-12))
    assert (violations > 0) == negate


@pytest.mark.parametrize("name", NAMES)
def test_torch_models_start_from_the_same_values_and_agree(name):
    torch = pytest.importorskip("torch")
    tmodels = importlib.import_module("tropic.torch.nn.models")
    tnn = importlib.import_module("tropic.torch.nn")
    assert name in tmodels.__all__
    for preset in ("tropic", "reference"):
        net = build(name, **SMALL, preset=preset, seed=21, dtype=np.float64)
        module = getattr(tmodels, name)(**SMALL, preset=preset, seed=21, dtype=torch.float64)
        assert isinstance(module, torch.nn.Sequential)
        assert [type(m).__name__ for m in module] == [type(m).__name__ for m in net]
        mine, own = module.state_dict(), net.state_dict()
        assert list(mine) == list(own)
        for key in own:
            assert mine[key].numpy().tobytes() == np.asarray(own[key]).tobytes(), key

        x = np.random.default_rng(22).standard_normal((5, 7))
        out = module(torch.from_numpy(x))
        np.testing.assert_array_equal(out.detach().numpy(), net(x).numpy())
        converted = tnn.from_tropic(net)
        np.testing.assert_array_equal(converted(torch.from_numpy(x)).detach().numpy(), net(x).numpy())

        # The torch engine's gradients equal tropic.autodiff's.
        g = np.random.default_rng(23).standard_normal((5, 3))
        (out * torch.from_numpy(g)).sum().backward()
        (net(ad.tensor(x)) * g).sum().backward()
        for (key, p), q in zip(module.named_parameters(), net.parameters(), strict=True):
            np.testing.assert_allclose(p.grad.numpy(), q.grad, rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(blocks=-1), ValueError, "blocks must be a non-negative int"),
        (dict(blocks=True), ValueError, "blocks must be a non-negative int"),
        (dict(blocks=1.5), ValueError, "blocks must be a non-negative int"),
        (dict(hidden=0), ValueError, "hidden"),
        (dict(in_features=-3), ValueError, "in_features"),
        (dict(out_features=0), ValueError, "out_features"),
        (dict(preset="paper"), ValueError, "preset must be one of 'tropic', 'reference'"),
        (dict(rng=1, seed=1), ValueError, "rng or seed"),
        (dict(dtype=np.int64), TypeError, "floating dtype"),
    ],
)
def test_bad_arguments_raise(name, kwargs, error, message):
    sizes = {**SMALL, **{k: v for k, v in kwargs.items() if k in SMALL}}
    extra = {k: v for k, v in kwargs.items() if k not in SMALL}
    with pytest.raises(error, match=message):
        build(name, **sizes, **extra)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_width_is_named(name):
    net = build(name, **SMALL, seed=0)
    with pytest.raises(ValueError, match=r"DiagonalActivation: x must have shape \(\.\.\., 7\)"):
        net(np.zeros((2, 8), np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_blocks_zero_and_a_training_step(name):
    # blocks=0: two pairs; one Adam step on a batch lowers the loss (the network is trainable).
    from tropic.nn import optim

    net = build(name, in_features=6, hidden=8, out_features=3, blocks=0, seed=30, dtype=np.float64)
    assert sum(type(m) in (MaxPlus, MinPlus) for m in net) == 4
    rng = np.random.default_rng(31)
    x, target = rng.standard_normal((32, 6)), rng.standard_normal((32, 3))

    def loss():
        d = net(x) - target
        return (d * d).mean()

    opt = optim.Adam(net.parameters(), lr=1e-2)
    before = loss()
    before.backward()
    opt.step()
    assert float(loss().numpy()) < float(before.numpy())
