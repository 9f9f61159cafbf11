"""tropic.torch.nn: every torch module against the tropic.nn layer it mirrors.

Built with the same seed (and, separately, converted with ``from_tropic``), a torch module and its
tropic.nn layer hold the same parameters bitwise and give the same forward outputs and gradients
(input and every parameter) in float64: bitwise for the tropical layers (max/min and + are exact,
both sides run the same kernels and tie rules: outputs, input gradients, weight gradients), to
1e-12 where a sum runs in a different order (linear parts; the batch sum of a bias gradient).
Also: state round trips, the binarised forward, regularisers, dtypes, errors.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import tropic.nn as tn
from tropic import autodiff as ad
from tropic.nn import dmnn_models

from .helpers import assert_identical

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

F64 = np.float64

# (torch class name, args, kwargs, input shape, bitwise). The tropic class has the same name.
CASES = [
    ("MaxPlus", (5, 4), {}, (6, 5), True),
    ("MaxPlus", (5, 4), {"init": "sparse", "p": 0.4}, (6, 5), True),
    ("MaxPlus", (5, 4), {"bias": False}, (2, 3, 5), True),
    ("MinPlus", (5, 4), {}, (6, 5), True),
    ("MinPlus", (5, 4), {"init": "sparse", "count": 8}, (6, 5), True),
    ("DilationErosion", (5, 3, 2), {}, (6, 5), True),
    ("DilationErosion", (5, 3), {"combine": "sum", "init": "sparse", "p": 0.5}, (6, 5), True),
    ("Maxout", (5, 3, 2), {}, (6, 5), False),
    ("MaxPlusConv2d", (2, 4, 3), {"padding": 1, "bias": True}, (2, 2, 6, 7), True),
    ("MaxPlusConv2d", (4, 2, (2, 3)), {"stride": 2, "groups": 2}, (2, 4, 7, 6), True),
    (
        "MinPlusConv2d",
        (2, 3, 3),
        {"padding": (1, 0), "bias": True, "init": "sparse", "p": 0.6},
        (2, 2, 5, 6),
        True,
    ),
    ("Dilation2d", (3, 3), {"init": "normal"}, (2, 3, 6, 5), True),
    ("Dilation2d", (2, (2, 3)), {"init": "normal"}, (2, 2, 5, 6), True),
    ("Erosion2d", (3, (3, 2)), {"init": "normal"}, (2, 3, 6, 5), True),
    ("BiSE", (2, 3, 3), {}, (2, 2, 6, 5), False),
    ("BiSE", (2, 4, (3, 1)), {"groups": 2, "bias_clamp": True, "init": "sparse"}, (2, 2, 5, 5), False),
    ("LUI", (4, 2), {"scale_init": -0.5}, (2, 4, 3, 3), False),
    ("BiSEL", (2, 3, 3), {}, (2, 2, 5, 6), False),
    ("DenseLUI", (6, 4), {"bias_clamp": True}, (5, 6), False),
    ("DenseLUI", (6, 4), {"real_valued": True}, (5, 6), False),
    ("MPM", (5, 4), {}, (6, 5), True),
    ("MPM", (5, 4), {"init": "zeros"}, (6, 5), True),
    ("DEP", (5, 4), {}, (6, 5), False),
    ("DEP", (5, 4), {"mix": "fixed"}, (6, 5), False),
    ("DiagonalActivation", (5,), {}, (6, 5), True),
    ("SVDActivation", (5,), {}, (6, 5), False),
    # x's gradient adds three paths (identity, max, min) in different orders: not bitwise.
    ("MPMResidual", (5,), {}, (6, 5), False),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def _inputs(shape, seed=0, binary=False, ties=False):
    rng = np.random.default_rng(seed)
    if binary:
        return (rng.random(shape) < 0.5).astype(F64)
    if ties:
        return rng.integers(-2, 3, size=shape).astype(F64)
    return rng.standard_normal(shape)


def _run_tropic(layer, x, seed):
    layer.zero_grad()
    xt = ad.Tensor(x, requires_grad=True)
    y = layer(xt)
    g = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(g)
    grads = {name: p.grad for name, p in layer.named_parameters()}
    return y.numpy(), xt.grad, grads, g


def _run_torch(module, x, g):
    xt = torch.from_numpy(x.copy()).requires_grad_()
    y = module(xt)
    y.backward(torch.from_numpy(g))
    grads = {name: p.grad for name, p in module.named_parameters()}
    return y.detach().numpy(), xt.grad.numpy(), grads


def assert_equivalent(layer, module, x, bitwise, seed=1):
    """Same forward and gradients (w.r.t. x and every parameter, by name) for one upstream gradient."""
    y0, gx0, gp0, g = _run_tropic(layer, x, seed)
    y1, gx1, gp1 = _run_torch(module, x, g)
    assert sorted(gp0) == sorted(gp1)
    # Weights (2-D and more) get their gradient from the tropical kernels' backward: bitwise. A vector
    # parameter broadcast over the batch (a bias, a scale) sums its gradient over the batch, which
    # torch's autograd and tropic.autodiff do in different orders: 1e-12.
    pairs = [(y1, y0, True), (gx1, gx0, True)] + [
        (None if gp1[k] is None else gp1[k].numpy(), gp0[k], gp0[k] is not None and gp0[k].ndim >= 2)
        for k in gp0
    ]
    for i, (actual, expected, exact) in enumerate(pairs):
        if expected is None:  # a parameter the output does not depend on
            assert actual is None or not np.any(actual), i
            continue
        if bitwise and exact:
            assert_identical(actual, expected)
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12, err_msg=f"item {i}")


def assert_same_state(module, layer):
    state = layer.state_dict()
    own = module.state_dict()
    assert sorted(own) == sorted(state)
    for key, value in state.items():
        assert_identical(own[key].numpy(), value)


@pytest.mark.parametrize(("name", "args", "kwargs", "shape", "bitwise"), CASES, ids=IDS)
def test_same_seed_same_module(name, args, kwargs, shape, bitwise):
    layer = getattr(tn, name)(*args, seed=3, dtype=F64, **kwargs)
    module = getattr(tnn, name)(*args, seed=3, dtype=torch.float64, **kwargs)
    assert_same_state(module, layer)
    assert_equivalent(layer, module, _inputs(shape), bitwise)


@pytest.mark.parametrize(("name", "args", "kwargs", "shape", "bitwise"), CASES, ids=IDS)
def test_from_tropic_after_training_steps(name, args, kwargs, shape, bitwise):
    """A tropic layer trained a few steps (parameters off their initial values), then converted."""
    layer = getattr(tn, name)(*args, seed=4, dtype=F64, **kwargs)
    opt = tn.Adam(list(layer.parameters()), lr=0.05)
    for step in range(3):
        x = _inputs(shape, seed=10 + step)
        opt.zero_grad()
        out = layer(x)
        (out * out).sum().backward() if np.all(np.isfinite(out.numpy())) else out.sum().backward()
        opt.step()
    module = tnn.from_tropic(layer)
    assert type(module) is getattr(tnn, name)
    assert_same_state(module, layer)
    assert_equivalent(layer, module, _inputs(shape, seed=20), bitwise)
    # and back: a fresh tropic layer loaded with the torch module's state
    other = getattr(tn, name)(*args, seed=99, dtype=F64, **kwargs)
    other.load_state_dict(tnn.tropic_state_dict(module))
    assert_same_state(module, other)


@pytest.mark.parametrize("name", ["MaxPlus", "MinPlus", "MPM"])
def test_ties_follow_tropic_rules(name):
    """Integer inputs and weights: ties everywhere (between products and with the bias)."""
    layer = getattr(tn, name)(6, 5, seed=0, dtype=F64)
    for p in layer.parameters():
        p.data[...] = np.round(p.data)
    module = tnn.from_tropic(layer)
    assert_equivalent(layer, module, _inputs((7, 6), ties=True), bitwise=True)


@pytest.mark.parametrize("name", ["MaxPlusConv2d", "MinPlusConv2d"])
def test_conv_ties_follow_tropic_rules(name):
    layer = getattr(tn, name)(2, 3, 3, padding=1, bias=True, seed=0, dtype=F64)
    for p in layer.parameters():
        p.data[...] = np.round(p.data)
    assert_equivalent(layer, tnn.from_tropic(layer), _inputs((2, 2, 5, 5), ties=True), bitwise=True)


def test_nan_and_infinities_propagate_as_in_tropic():
    layer = tn.MaxPlus(4, 3, seed=0, dtype=F64)
    module = tnn.from_tropic(layer)
    x = np.array([[np.nan, 0.0, 1.0, 2.0], [-np.inf, -np.inf, -np.inf, -np.inf], [np.inf, 0, 0, 0]])
    assert_identical(module(torch.from_numpy(x)).detach().numpy(), layer(x).numpy())


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "shape"),
    [
        ("BiSE", (2, 3, 3), {}, (3, 2, 7, 6)),
        ("BiSE", (2, 3, 3), {"init": "sparse", "binarization": "activable"}, (3, 2, 7, 6)),
        ("LUI", (4, 2), {"scale_init": -1.0, "binarization": "threshold_2/3"}, (3, 4, 5, 5)),
        ("BiSEL", (2, 2, 3), {}, (3, 2, 6, 6)),
        ("DenseLUI", (9, 5), {"init": "sparse", "density": 0.3}, (8, 9)),
    ],
)
def test_binary_forward_and_regularisers(name, args, kwargs, shape):
    layer = getattr(tn, name)(*args, seed=5, dtype=F64, **kwargs)
    module = tnn.from_tropic(layer)
    x = _inputs(shape, binary=True)
    expected = layer.binary()(x).numpy()
    actual = module.binary()(torch.from_numpy(x))
    assert_identical(actual.numpy(), expected)
    assert module(torch.from_numpy(x)).requires_grad is False  # binary mode: no gradient
    module.binary(False)
    assert module(torch.from_numpy(x)).requires_grad
    for reg in ("constant_set_regularization", "activable_set_regularization"):
        value = getattr(tnn, reg)(module)
        value.backward()
        np.testing.assert_allclose(value.item(), getattr(tn, reg)(layer).item(), rtol=1e-12)
    bises = [m for m in module.modules() if isinstance(m, tnn.BiSE | tnn.DenseLUI)]
    for m in bises:
        assert m.binarized().structuring_elements.shape[0] == m.out_channels


def test_bise_inspection_methods():
    layer = tn.BiSE(1, 2, 3, seed=0, dtype=F64)
    module = tnn.from_tropic(layer)
    for i in range(2):
        assert module.find_operation(i) == layer.find_operation(i)
        a, b = module.is_activated(i), layer.is_activated(i)
        assert (a is None) == (b is None)
    with pytest.raises(ValueError, match="neuron="):
        module.find_operation()


@pytest.mark.parametrize(
    ("build", "kwargs", "shape"),
    [
        ("hybrid_head", {}, (8, 10)),
        ("hybrid_head", {"init": "dense"}, (8, 10)),
        ("relu_head", {}, (8, 10)),
        ("maxout_head", {}, (8, 10)),
        ("rmpm", {"blocks": 2}, (8, 10)),
        ("mpm_svd", {"blocks": 1}, (8, 10)),
        ("act_dep", {"blocks": 1}, (8, 10)),
        ("hybrid_mlp", {"blocks": 1}, (8, 10)),
        ("maxout_mlp", {"blocks": 1}, (8, 10)),
        ("mp", {"blocks": 1}, (8, 10)),
    ],
)
def test_models_match_tropic(build, kwargs, shape):
    args = (10, 6, 3)
    net = getattr(dmnn_models, build)(*args, seed=0, dtype=F64, **kwargs)
    model = getattr(tnn, build)(*args, seed=0, dtype=torch.float64, **kwargs)
    assert_same_state(model, net)
    assert_equivalent(net, model, _inputs(shape), bitwise=False)
    # training mode updated the batch norms' running statistics alike (sums: to rounding)
    state = model.state_dict()
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(state[key].numpy(), value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_load_tropic_state_and_dtype_conversion():
    layer = tn.MaxPlus(5, 4, seed=0, dtype=F64)
    module = tnn.MaxPlus(5, 4, seed=1, dtype=torch.float64)
    module.load_tropic_state(layer.state_dict())
    assert_same_state(module, layer)
    half = tnn.from_tropic(layer, dtype=torch.bfloat16)
    assert half.weight.dtype == torch.bfloat16
    assert torch.equal(half.weight, torch.from_numpy(layer.weight.data).to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    """Every layer runs forward and backward in each dtype; the tropical ones agree with the float64
    result rounded where the ops are exact (integer data)."""
    for name, args, kwargs, shape, _ in CASES:
        module = getattr(tnn, name)(*args, seed=2, dtype=dtype, **kwargs)
        for p in module.parameters():
            assert p.dtype == dtype
        x = torch.from_numpy(_inputs(shape)).to(dtype).requires_grad_()
        y = module(x)
        assert y.dtype == dtype, name
        y.float().sum().backward()
        assert x.grad is not None and x.grad.dtype == dtype
    layer = tnn.MaxPlus(6, 5, seed=0, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(layer.weight.round())
        layer.bias.copy_(layer.bias.round())
    x = torch.from_numpy(_inputs((4, 6), ties=True))
    low = tnn.MaxPlus(6, 5, seed=0, dtype=dtype)
    low.load_state_dict({k: v.to(dtype) for k, v in layer.state_dict().items()})
    assert torch.equal(low(x.to(dtype)).double(), layer(x))


def test_constructor_errors_are_tropic_errors():
    with pytest.raises(ValueError, match="init must be"):
        tnn.MaxPlus(3, 2, init="bogus")
    with pytest.raises(ValueError, match="odd"):
        tnn.BiSE(1, 1, 2)
    with pytest.raises(TypeError, match="dtype"):
        tnn.MaxPlus(3, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        tnn.Dilation2d(3)(torch.zeros(1, 2, 4, 4))
    with pytest.raises(NotImplementedError, match="no torch equivalent"):
        tnn.from_tropic(tn.WeightDropout(tn.Linear(3, 2), 0.5))


def test_dropout_converts_to_torch_dropout_with_its_rate_and_mode():
    assert tnn.from_tropic(tn.Dropout(0.3)).training
    model = tn.Sequential(tn.Linear(4, 4, seed=0), tn.Dropout(0.3)).eval()
    module = tnn.from_tropic(model)[1]
    assert isinstance(module, torch.nn.Dropout) and module.p == 0.3 and not module.training
    x = torch.randn(2, 4)
    assert torch.equal(module(x), x)  # evaluation mode: the identity, as in tropic.nn


def test_mpm_weight_dropout_draws_from_torch():
    module = tnn.MPM(8, 6, weight_dropout=0.5, seed=0, dtype=torch.float64)
    x = torch.randn(4, 8, dtype=torch.float64)
    torch.manual_seed(0)
    a = module(x)
    torch.manual_seed(0)
    assert torch.equal(module(x), a)
    assert not torch.equal(module(x), a)  # a fresh mask per call
    module.eval()
    layer = tn.MPM(8, 6, weight_dropout=0.5, seed=0, dtype=F64).eval()
    assert_identical(module(x).detach().numpy(), layer(x.numpy()).numpy())


LAYERS = (
    "MaxPlus MinPlus DilationErosion Maxout MaxPlusConv2d MinPlusConv2d Dilation2d Erosion2d BiSE BiSEL "
    "LUI DenseLUI MPM DEP DiagonalActivation SVDActivation MPMResidual Negator MPMConv2d SoftMPMConv2d "
    "ConvLinAct GlobalAvgPool2d"
).split()


def test_public_names_mirror_tropic_nn():
    for name in tnn.__all__:
        assert getattr(tnn, name) is not None, name
    for name in LAYERS:
        cls = getattr(tnn, name)
        assert issubclass(cls, torch.nn.Module) and cls._tropic_cls is getattr(tn, name), name
    for name in dmnn_models.__all__:
        assert callable(getattr(tnn, name)), name
    from tropic.torch import nn as documented

    assert documented is tnn


def test_from_tropic_reads_layers_on_other_array_libraries():
    strict = pytest.importorskip("array_api_strict")
    layer = tn.MPM(4, 3, seed=0, dtype=F64)
    expected = {k: v.copy() for k, v in layer.state_dict().items()}
    module = tnn.from_tropic(layer.to(strict))
    for key, value in module.state_dict().items():
        assert_identical(value.numpy(), expected[key])


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (lambda: tnn.MaxPlus(5, 4, seed=0, dtype=torch.float64), (3, 5)),
        (lambda: tnn.MinPlusConv2d(2, 3, 3, padding=1, bias=True, seed=0, dtype=torch.float64), (2, 2, 4, 4)),
        (lambda: tnn.Dilation2d(2, 3, init="normal", seed=0, dtype=torch.float64), (2, 2, 4, 5)),
        (lambda: tnn.MPM(5, 4, seed=0, dtype=torch.float64), (3, 5)),
    ],
)
def test_gradcheck_through_functional_call(module, shape):
    """torch.autograd.gradcheck of input and parameters at points with unique winners (distinct
    values far apart), through torch.func.functional_call."""
    module = module()
    rng = np.random.default_rng(0)
    names = [name for name, _ in module.named_parameters()]
    count = int(np.prod(shape)) + sum(p.numel() for p in module.parameters())
    values = torch.from_numpy(rng.permutation(count) + rng.random(count) * 0.5)
    x, *params = torch.split(values, [int(np.prod(shape))] + [p.numel() for p in module.parameters()])
    inputs = [x.reshape(shape)] + [
        v.reshape(p.shape) for v, p in zip(params, module.parameters(), strict=True)
    ]
    inputs = [t.clone().requires_grad_() for t in inputs]

    def call(x, *params):
        return torch.func.functional_call(module, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(call, inputs, eps=1e-6, atol=1e-8)
