"""1-D and 3-D morphological layers and the 1-D tropical convolutions, on both engines.

- ``Dilation1d``, ``Erosion1d``, ``Dilation3d``, ``Erosion3d`` (depthwise: one learnable element per
  channel) against ``scipy.ndimage.grey_dilation`` / ``grey_erosion`` per (batch, channel) with
  ``mode="constant"`` and ``cval=-inf`` / ``+inf``, bitwise, on tropic.autodiff and torch; their
  gradients against per-channel ``tropic.dilation`` / ``tropic.erosion`` calls and torch's against
  tropic.autodiff's, bitwise (ties included: the sums are of dyadic values, exact in any order), and
  against finite differences where no ties are near.
- ``tropic.maxplus_conv1d`` / ``minplus_conv1d``: equal to the 2-D operator with a unit height
  (values, winners, gradients) and to a brute-force NumPy definition; ``MaxPlusConv1d`` /
  ``MinPlusConv1d``: the 2-D layers with a unit height.
- Errors name the layer or the argument; a small model of the new layers compiles (fullgraph).
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest

import tropic
import tropic.nn as tn
from tropic import autodiff as ad

from .helpers import assert_identical, dyadic

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip
ndi = pytest.importorskip("scipy.ndimage")

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

F64 = np.float64
ENGINES = ["autodiff", "torch"]

# (class name, kernel_size, input shape)
MORPHOLOGY = [
    ("Dilation1d", 3, (2, 3, 13)),
    ("Dilation1d", 4, (2, 3, 9)),
    ("Dilation1d", (1,), (1, 2, 5)),
    ("Erosion1d", 2, (2, 3, 11)),
    ("Erosion1d", 5, (2, 2, 7)),
    ("Dilation3d", 3, (2, 2, 4, 5, 6)),
    ("Dilation3d", (2, 3, 1), (1, 3, 5, 4, 3)),
    ("Erosion3d", (3, 2, 2), (2, 2, 4, 5, 3)),
    ("Erosion3d", 1, (1, 2, 3, 3, 3)),
]
MORPHOLOGY_IDS = [f"{c[0]}-{c[1]}" for c in MORPHOLOGY]


def spatial(name: str) -> int:
    return int(name[-2])


def make(engine: str, name: str, *args, **kwargs):
    if engine == "torch":
        return getattr(tnn, name)(*args, dtype=torch.float64, **kwargs)
    return getattr(tn, name)(*args, dtype=F64, **kwargs)


def params(layer) -> dict[str, np.ndarray]:
    return {n: np.array(to_numpy(p), copy=True) for n, p in layer.named_parameters()}


def to_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().numpy()
    return t.numpy() if isinstance(t, ad.Tensor) else np.asarray(t)


def set_param(layer, name: str, values: np.ndarray) -> None:
    p = getattr(layer, name)
    if isinstance(p, torch.Tensor):
        with torch.no_grad():
            p.copy_(torch.from_numpy(values))
    else:
        p.data = values.copy()


def run(engine: str, layer, x: np.ndarray, g: np.ndarray):
    """Forward ``x``, backward ``g``: output, input gradient and parameter gradients as NumPy."""
    layer.zero_grad()
    if engine == "torch":
        leaf = torch.tensor(x, requires_grad=True)
        y = layer(leaf)
        y.backward(torch.from_numpy(g))
    else:
        leaf = ad.Tensor(x.copy(), requires_grad=True)
        y = layer(leaf)
        y.backward(g)
    grads = {n: np.array(to_numpy(p.grad), copy=True) for n, p in layer.named_parameters()}
    return to_numpy(y).copy(), np.array(to_numpy(leaf.grad), copy=True), grads


def scipy_per_channel(name: str, x: np.ndarray, structure: np.ndarray) -> np.ndarray:
    op, cval = (ndi.grey_dilation, -np.inf) if name.startswith("Dilation") else (ndi.grey_erosion, np.inf)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[b, c] = op(x[b, c], structure=structure[c], mode="constant", cval=cval)
    return out


def integers(rng, shape, low=-2, high=3) -> np.ndarray:
    return rng.integers(low, high, size=shape).astype(F64)


# -- depthwise dilation / erosion layers ----------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "kernel_size", "shape"), MORPHOLOGY, ids=MORPHOLOGY_IDS)
def test_morphology_layers_match_scipy_per_channel(engine, name, kernel_size, shape):
    rng = np.random.default_rng(0)
    layer = make(engine, name, shape[1], kernel_size, init="normal", seed=3)
    s = params(layer)["structure"]
    n = spatial(name)
    assert s.shape == (shape[1], *((kernel_size,) * n if isinstance(kernel_size, int) else kernel_size))
    assert_identical(
        s, params(make("autodiff", name, shape[1], kernel_size, init="normal", seed=3))["structure"]
    )
    for x in (rng.standard_normal(shape), integers(rng, shape)):  # distinct values, then ties
        y = to_numpy(layer(torch.from_numpy(x) if engine == "torch" else x))
        assert y.shape == shape
        assert_identical(y, scipy_per_channel(name, x, s))
    flat = make(engine, name, shape[1], kernel_size)  # init="zeros": a max / min filter
    assert not params(flat)["structure"].any()
    x = rng.standard_normal(shape)
    y = to_numpy(flat(torch.from_numpy(x) if engine == "torch" else x))
    assert_identical(y, scipy_per_channel(name, x, params(flat)["structure"]))


@pytest.mark.parametrize(("name", "kernel_size", "shape"), MORPHOLOGY, ids=MORPHOLOGY_IDS)
def test_morphology_layer_gradients_torch_autodiff_and_per_channel_calls_agree(name, kernel_size, shape):
    """Integer inputs and structure (many ties): torch's autograd, tropic.autodiff's, and the
    gradients of per-channel ``tropic.dilation`` / ``tropic.erosion`` calls agree bitwise."""
    rng = np.random.default_rng(1)
    x = integers(rng, shape)
    layers = {e: make(e, name, shape[1], kernel_size, init="normal", seed=0) for e in ENGINES}
    s = integers(rng, params(layers["autodiff"])["structure"].shape, -1, 2)
    for layer in layers.values():
        set_param(layer, "structure", s)
    g = dyadic(np.random.default_rng(2), shape, F64)
    y_a, gx_a, gp_a = run("autodiff", layers["autodiff"], x, g)
    y_t, gx_t, gp_t = run("torch", layers["torch"], x, g)
    assert_identical(y_t, y_a)
    assert_identical(gx_t, gx_a)
    assert_identical(gp_t["structure"], gp_a["structure"])
    assert np.abs(gx_a).sum() > 0 and np.abs(gp_a["structure"]).sum() > 0

    op = tropic.dilation if name.startswith("Dilation") else tropic.erosion
    axes = tuple(range(spatial(name)))
    xs = ad.Tensor(x.copy(), requires_grad=True)
    st = ad.Tensor(s.copy(), requires_grad=True)
    total = None
    for b in range(shape[0]):
        for c in range(shape[1]):
            term = ad.sum(op(xs[b, c], st[c], axes=axes) * ad.Tensor(g[b, c]))
            total = term if total is None else total + term
    total.backward()
    assert_identical(gx_a, xs.grad)
    assert_identical(gp_a["structure"], st.grad)


@pytest.mark.parametrize("engine", ENGINES)
def test_tied_candidates_send_the_gradient_to_the_lowest_tap(engine):
    """A flat element on a constant signal: every candidate ties, and the winner is the lowest tap
    ``u`` inside the signal (``tropic.dilation``'s rule); the dilation's ``y[i]`` reads ``x[i + 1 - u]``."""
    g = np.ones((1, 1, 5))
    for name, structure_grad, x_grad in (
        ("Dilation1d", [4, 1, 0], [0, 1, 1, 1, 2]),  # u = 0 (x[i + 1]) but at the last position
        ("Erosion1d", [-4, -1, 0], [2, 1, 1, 1, 0]),  # y[i] = x[i + u - 1] - s[u]: u = 0 but at i = 0
    ):
        _, gx, gp = run(engine, make(engine, name, 1, 3), np.zeros((1, 1, 5)), g)
        assert_identical(gp["structure"], np.array([structure_grad], dtype=F64))
        assert_identical(gx, np.array([[x_grad]], dtype=F64))


@pytest.mark.parametrize("name", ["Dilation1d", "Erosion1d", "Dilation3d", "Erosion3d"])
def test_morphology_layer_gradients_match_finite_differences(name):
    """Distinct random values (no ties within a step ``h``): the backward of ``sum(y * r)`` against
    central differences, input and structure, on tropic.autodiff; torch's gradcheck on torch."""
    n = spatial(name)
    shape = (2, 2, 7) if n == 1 else (1, 2, 3, 4, 3)
    kernel_size = 3 if n == 1 else (2, 3, 2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    layer = make("autodiff", name, 2, kernel_size, init="normal", seed=5)
    set_param(layer, "structure", rng.standard_normal(layer.structure.shape))
    r = rng.standard_normal(shape)
    _, gx, gp = run("autodiff", layer, x, r)
    h = 1e-6

    def loss(x_, s_):
        set_param(layer, "structure", s_)
        with ad.no_grad():
            return float(np.sum(layer(x_).numpy() * r))

    s = params(layer)["structure"]
    for array, grad, which in ((x, gx, "x"), (s, gp["structure"], "structure")):
        for flat in rng.choice(array.size, size=min(8, array.size), replace=False):
            idx = np.unravel_index(flat, array.shape)
            values = []
            for step in (h, -h):
                moved = array.copy()
                moved[idx] += step
                values.append(loss(moved, s) if which == "x" else loss(x, moved))
            numeric = (values[0] - values[1]) / (2 * h)
            np.testing.assert_allclose(grad[idx], numeric, rtol=1e-6, atol=1e-8, err_msg=f"{which}{idx}")
    set_param(layer, "structure", s)

    module = make("torch", name, 2, kernel_size, init="normal", seed=5)
    set_param(module, "structure", s)

    def f(xt, st):
        return torch.func.functional_call(module, {"structure": st}, (xt,))

    inputs = (torch.tensor(x, requires_grad=True), torch.tensor(s, requires_grad=True))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["Erosion1d", "Dilation3d"])
def test_pruned_structure_entries_are_absent(engine, name):
    """A pruned entry is -inf for the dilation and the erosion alike: the output is the morphology
    by the kept entries alone (SciPy with a footprint)."""
    n = spatial(name)
    shape = (2, 2, 9) if n == 1 else (1, 2, 4, 4, 3)
    kernel_size = 4 if n == 1 else (2, 2, 3)
    layer = make(engine, name, 2, kernel_size, init="normal", seed=6)
    if engine == "torch":
        importlib.import_module("tropic.torch.prune").l1_unstructured(layer, "structure", amount=3)
    else:
        tn.pruning.l1_unstructured(layer, 3, name="structure")
    x = np.random.default_rng(7).standard_normal(shape)
    y = to_numpy(layer(torch.from_numpy(x) if engine == "torch" else x))
    s = to_numpy(layer.structure)
    kept = s != -np.inf
    assert (~kept).sum() == 3
    op = ndi.grey_dilation if name.startswith("Dilation") else ndi.grey_erosion
    cval = -np.inf if name.startswith("Dilation") else np.inf
    for b in range(shape[0]):
        for c in range(2):
            expected = op(
                x[b, c], footprint=kept[c], structure=np.where(kept[c], s[c], 0.0), mode="constant", cval=cval
            )
            assert_identical(y[b, c], expected)


@pytest.mark.parametrize("name", ["Dilation2d", "Erosion2d"])
def test_2d_layers_equal_the_generic_depthwise_call_in_values(name):
    """The 2-D layers keep their convolution form (their tie winners and gradients are unchanged);
    their values equal the one-call depthwise ``tropic.dilation`` / ``tropic.erosion`` the 1-D and
    3-D layers use."""
    rng = np.random.default_rng(8)
    layer = tn.__dict__[name](3, (2, 3), init="normal", seed=0, dtype=F64)
    x = integers(rng, (2, 3, 6, 5))
    op = tropic.dilation if name.startswith("Dilation") else tropic.erosion
    assert_identical(layer(x).numpy(), op(x, layer.structure.data, axes=(-2, -1)))


# -- maxplus_conv1d / minplus_conv1d -----------------------------------------------------------------


def conv1d_brute(x, w, stride, padding, groups, maximise):
    """``y[b, o, i] = max_{c, v} x[b, g(o) C_g + c, i s + v - p] + w[o, c, v]`` and the lowest flat
    index ``c * k + v`` of a winner (-1 if every candidate is the padding's zero)."""
    B, _, L = x.shape
    C_out, C_g, k = w.shape
    zero = -np.inf if maximise else np.inf
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding)), constant_values=zero)
    L_out = (L + 2 * padding - k) // stride + 1
    y = np.empty((B, C_out, L_out))
    winners = np.empty((B, C_out, L_out), dtype=np.int64)
    for o in range(C_out):
        g = o // (C_out // groups)
        for i in range(L_out):
            window = padded[:, g * C_g : (g + 1) * C_g, i * stride : i * stride + k]
            candidates = (window + w[o]).reshape(B, C_g * k)
            best = candidates.argmax(axis=1) if maximise else candidates.argmin(axis=1)
            y[:, o, i] = candidates[np.arange(B), best]
            winners[:, o, i] = np.where(y[:, o, i] == zero, -1, best)
    return y, winners


CONV1D = [  # (Cin, Cout, k, stride, padding, groups, L)
    (3, 4, 3, 1, 0, 1, 9),
    (2, 3, 2, 2, 1, 1, 8),
    (4, 6, 3, (1,), (2,), 2, 7),
    (4, 4, 1, 3, 0, 4, 10),
]


@pytest.mark.parametrize(("c_in", "c_out", "k", "stride", "padding", "groups", "length"), CONV1D)
@pytest.mark.parametrize("maximise", [True, False], ids=["maxplus", "minplus"])
def test_conv1d_is_conv2d_with_a_unit_height_and_the_brute_force_definition(
    maximise, c_in, c_out, k, stride, padding, groups, length
):
    rng = np.random.default_rng(9)
    op1, op2 = (
        (tropic.maxplus_conv1d, tropic.maxplus_conv2d)
        if maximise
        else (tropic.minplus_conv1d, tropic.minplus_conv2d)
    )
    s = stride if isinstance(stride, int) else stride[0]
    p = padding if isinstance(padding, int) else padding[0]
    for x in (rng.standard_normal((2, c_in, length)), integers(rng, (2, c_in, length))):
        w = integers(rng, (c_out, c_in // groups, k))
        y, winners = op1(x, w, stride, padding, groups, return_indices=True)
        y2, winners2 = op2(x[:, :, None], w[:, :, None], (1, s), (0, p), groups, return_indices=True)
        assert_identical(y, y2[:, :, 0])
        assert_identical(winners, winners2[:, :, 0])
        y_ref, winners_ref = conv1d_brute(x, w, s, p, groups, maximise)
        assert_identical(y, y_ref)
        np.testing.assert_array_equal(winners, winners_ref)
        assert_identical(op1(x, w, stride, padding, groups), y)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("maximise", [True, False], ids=["maxplus", "minplus"])
def test_conv1d_gradients_are_conv2d_gradients(engine, maximise):
    """Ties included: the engine's gradients of the 1-D operator equal those of the 2-D one with a
    unit height, and torch's equal tropic.autodiff's, bitwise."""
    rng = np.random.default_rng(10)
    x, w = integers(rng, (2, 4, 9)), integers(rng, (6, 2, 3))
    g = dyadic(rng, (2, 6, 5), F64)
    op1, op2 = (
        (tropic.maxplus_conv1d, tropic.maxplus_conv2d)
        if maximise
        else (tropic.minplus_conv1d, tropic.minplus_conv2d)
    )

    def grads(use_2d, on):
        if on == "torch":
            leaves = [torch.tensor(a, requires_grad=True) for a in (x, w)]
        else:
            leaves = [ad.Tensor(a.copy(), requires_grad=True) for a in (x, w)]
        if use_2d:
            y = op2(leaves[0].reshape((2, 4, 1, 9)), leaves[1].reshape((6, 2, 1, 3)), (1, 2), (0, 1), 2)
            y = y.reshape((2, 6, 5))
        else:
            y = op1(*leaves, stride=2, padding=1, groups=2)
        y.backward(torch.from_numpy(g) if on == "torch" else g)
        return [np.array(to_numpy(t.grad), copy=True) for t in leaves]

    mine = grads(False, engine)
    for reference in (grads(True, engine), grads(False, "autodiff")):
        for a, b in zip(mine, reference, strict=True):
            assert_identical(a, b)
    assert all(np.abs(a).sum() > 0 for a in mine)


def test_conv1d_argument_errors_name_the_argument():
    x, w = np.zeros((2, 4, 6)), np.zeros((4, 2, 3))
    cases = [
        (
            lambda: tropic.maxplus_conv1d(np.zeros((2, 4, 1, 6)), w),
            ValueError,
            "x must have 3 dimensions (B, Cin, L)",
        ),
        (lambda: tropic.minplus_conv1d(x, np.zeros((4, 2, 1, 3))), ValueError, "w must have 3 dimensions"),
        (lambda: tropic.maxplus_conv1d(x, np.zeros((4, 4, 3)), groups=2), ValueError, "w.shape[1] must be"),
        (lambda: tropic.maxplus_conv1d(x, w, groups=3), ValueError, "groups=3 must divide"),
        (lambda: tropic.maxplus_conv1d(x, np.zeros((4, 2, 9)), groups=2), ValueError, "(length 9) must fit"),
        (lambda: tropic.maxplus_conv1d(x, w, stride=(1, 2), groups=2), TypeError, "stride must be an int or"),
        (lambda: tropic.maxplus_conv1d(x, w, stride=0, groups=2), ValueError, "stride must be >= 1"),
        (lambda: tropic.maxplus_conv1d(x, w, padding=-1, groups=2), ValueError, "padding must be >= 0"),
        (lambda: tropic.maxplus_conv1d(x.astype(int), w, groups=2), TypeError, "x must have a real floating"),
        (lambda: tropic.maxplus_conv1d(x, [[[1.0]]]), TypeError, "w must be an array"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
    assert tropic.maxplus_conv1d(x, w, padding=(1,), groups=2).shape == (2, 4, 6)


# -- MaxPlusConv1d / MinPlusConv1d ----------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["Max", "Min"])
def test_conv1d_layers_are_the_2d_layers_with_a_unit_height(engine, kind):
    """Same seed, same draws: the 1-D layer's weight is the (1, k) 2-D layer's, and so are the
    outputs and all gradients, bitwise (ties included); the formula against the brute force."""
    rng = np.random.default_rng(11)
    kwargs = {"stride": 2, "padding": 1, "groups": 2, "bias": True, "seed": 12}
    layer = make(engine, f"{kind}PlusConv1d", 4, 6, 3, **kwargs)
    wide = make(
        engine,
        f"{kind}PlusConv2d",
        4,
        6,
        (1, 3),
        stride=(1, 2),
        padding=(0, 1),
        **{k: v for k, v in kwargs.items() if k not in ("stride", "padding")},
    )
    w, w2 = params(layer), params(wide)
    assert_identical(w["weight"], w2["weight"][:, :, 0])
    assert_identical(w["bias"], w2["bias"])
    for x in (rng.standard_normal((2, 4, 9)), integers(rng, (2, 4, 9))):
        g = dyadic(rng, (2, 6, 5), F64)
        y, gx, gp = run(engine, layer, x, g)
        y2, gx2, gp2 = run(engine, wide, x[:, :, None], g[:, :, None])
        assert_identical(y, y2[:, :, 0])
        assert_identical(gx, gx2[:, :, 0])
        assert_identical(gp["weight"], gp2["weight"][:, :, 0])
        assert_identical(gp["bias"], gp2["bias"])
        ref, _ = conv1d_brute(x, w["weight"], 2, 1, 2, kind == "Max")
        combine = np.maximum if kind == "Max" else np.minimum
        assert_identical(y, combine(w["bias"][:, None], ref))
    assert make(engine, f"{kind}PlusConv1d", 2, 2, 3).bias is None  # off by default
    sparse = make(engine, f"{kind}PlusConv1d", 2, 4, 3, init="sparse", p=0.5, seed=0)
    zero = -np.inf if kind == "Max" else np.inf
    assert (params(sparse)["weight"] == zero).any()


def test_conv1d_layers_torch_matches_autodiff_and_repr():
    rng = np.random.default_rng(13)
    x = integers(rng, (2, 3, 8))
    g = dyadic(rng, (2, 4, 8), F64)
    for kind in ("Max", "Min"):
        a = make("autodiff", f"{kind}PlusConv1d", 3, 4, 3, padding=1, bias=True, seed=14)
        t = make("torch", f"{kind}PlusConv1d", 3, 4, 3, padding=1, bias=True, seed=14)
        for mine, reference in zip(run("torch", t, x, g), run("autodiff", a, x, g), strict=True):
            if isinstance(mine, dict):
                assert sorted(mine) == sorted(reference) == ["bias", "weight"]
                for name in mine:
                    assert_identical(mine[name], reference[name])
            else:
                assert_identical(mine, reference)
        assert (
            repr(t)
            == repr(a)
            == (
                f"{kind}PlusConv1d(3, 4, kernel_size=(3,), stride=(1,), padding=(1,), groups=1, bias=True, "
                "init='dense')"
            )
        )
    assert repr(tn.Dilation3d(2, (1, 2, 3))) == "Dilation3d(channels=2, kernel_size=(1, 2, 3))"
    assert repr(tnn.Erosion1d(2, 4)) == "Erosion1d(channels=2, kernel_size=(4,))"


# -- errors, names, conversion, compilation -----------------------------------------------------------

WRONG = [  # (class name, args, wrong input shape, the shape the message must name)
    ("Dilation1d", (2, 3), (1, 3, 6), "(B, 2, L)"),
    ("Erosion1d", (2, 3), (2, 6), "(B, 2, L)"),
    ("Dilation3d", (2, 3), (1, 2, 6, 6), "(B, 2, D, H, W)"),
    ("Erosion3d", (2, 3), (1, 3, 4, 4, 4), "(B, 2, D, H, W)"),
    ("MaxPlusConv1d", (2, 3, 3), (1, 2, 6, 6), "(B, 2, L)"),
    ("MinPlusConv1d", (4, 2, 3, 1, 0, 2), (1, 2, 6), "(B, 4, L)"),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "args", "shape", "expected"), WRONG, ids=[c[0] for c in WRONG])
def test_wrong_input_rank_or_channels_names_the_layer(engine, name, args, shape, expected):
    layer = (tnn if engine == "torch" else tn).__dict__[name](*args)
    x = np.zeros(shape, dtype=np.float32)
    message = f"{name}: x must have shape {expected}, got {shape}"
    with pytest.raises(ValueError, match=re.escape(message)):
        layer(torch.from_numpy(x) if engine == "torch" else x)


@pytest.mark.parametrize("engine", ENGINES)
def test_constructor_errors(engine):
    nn = tnn if engine == "torch" else tn
    with pytest.raises(TypeError, match=re.escape("kernel_size must be an int or a tuple of 3 ints")):
        nn.Dilation3d(2, (3, 3))
    with pytest.raises(TypeError, match=re.escape("kernel_size must be an int or a tuple of 1 int")):
        nn.Erosion1d(2, (3, 3))
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        nn.Dilation1d(2, 0)
    with pytest.raises(ValueError, match="init must be 'zeros' or 'normal'"):
        nn.Erosion3d(2, init="dense")
    with pytest.raises(ValueError, match="channels must be a positive int"):
        nn.Dilation1d(0)
    with pytest.raises(ValueError, match=re.escape("must be divisible by groups (2)")):
        nn.MaxPlusConv1d(3, 4, 3, groups=2)
    with pytest.raises(TypeError, match=re.escape("stride must be an int or a tuple of 1 int")):
        nn.MinPlusConv1d(2, 2, 3, stride=(1, 1))
    with pytest.raises(TypeError, match=r"^Dilation3d\(\) got an unexpected keyword argument 'sed'$"):
        nn.Dilation3d(2, sed=0)


NEW = ["Dilation1d", "Dilation3d", "Erosion1d", "Erosion3d", "MaxPlusConv1d", "MinPlusConv1d"]


def test_public_names_and_from_tropic():
    assert {"maxplus_conv1d", "minplus_conv1d"} <= set(tropic.__all__)
    for name in NEW:
        assert name in tn.__all__ and name in tnn.__all__
        assert issubclass(getattr(tnn, name), torch.nn.Module) and getattr(tnn, name)._tropic_cls is getattr(
            tn, name
        )
    rng = np.random.default_rng(15)
    for layer, shape in (
        (tn.Dilation1d(2, 3, init="normal", seed=1, dtype=F64), (2, 2, 7)),
        (tn.Erosion3d(2, (2, 1, 3), init="normal", seed=2, dtype=F64), (1, 2, 3, 4, 5)),
        (tn.MinPlusConv1d(2, 4, 3, padding=1, bias=True, seed=3, dtype=F64), (2, 2, 6)),
    ):
        module = tnn.from_tropic(layer)
        assert type(module) is getattr(tnn, type(layer).__name__)
        x = rng.standard_normal(shape)
        assert_identical(module(torch.from_numpy(x)).detach().numpy(), layer(x).numpy())


def test_small_model_compiles_fullgraph_and_matches_eager():
    """Dilation1d + MaxPlusConv1d + Erosion1d (+ a 3-D branch) under torch.compile(fullgraph=True,
    backend="aot_eager"): no graph break, values and gradients as in eager mode (bitwise: only
    tropic's exact operators run)."""
    kw = {"dtype": torch.float64}
    signal = torch.nn.Sequential(
        tnn.Dilation1d(3, 3, init="normal", seed=0, **kw),
        tnn.MaxPlusConv1d(3, 4, 3, padding=1, bias=True, seed=1, **kw),
        tnn.Erosion1d(4, 2, init="normal", seed=2, **kw),
        tnn.MinPlusConv1d(4, 2, 2, stride=2, groups=2, seed=3, **kw),
    )
    volume = tnn.Dilation3d(2, (2, 3, 2), init="normal", seed=4, **kw)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.signal, self.volume = signal, volume

        def forward(self, x, v):
            return self.signal(x).sum() + self.volume(v).sum()

    model = Model()
    x, v = torch.randn(2, 3, 10, dtype=torch.float64), torch.randn(1, 2, 3, 4, 5, dtype=torch.float64)

    def step(m):
        model.zero_grad()
        leaves = (x.clone().requires_grad_(), v.clone().requires_grad_())
        out = m(*leaves)
        out.backward()
        return [out.detach()] + [t.grad for t in leaves] + [p.grad.clone() for p in model.parameters()]

    eager = step(model)
    compiled = step(torch.compile(model, fullgraph=True, backend="aot_eager"))
    assert len(eager) == len(compiled) == 3 + 6
    for a, b in zip(compiled, eager, strict=True):
        assert torch.equal(a, b)
