"""Tests of the tropical 3-D convolutions ``maxplus_conv3d`` / ``minplus_conv3d``, ``conv3d_vjp`` and
the layers ``MaxPlusConv3d`` / ``MinPlusConv3d``.

References: a brute-force NumPy definition written here (one pass over the candidates
``(c, a, u, v)`` in flat order over a padded copy of the input, the tie and NaN rules of DESIGN.md)
for values and winners, bitwise, with many ties, infinities and NaN; its scatter of the gradient to
the winners for the vjp (dyadic values: exact); the vjp's transpose for the jvp; the 2-D operator for
a depth of one. Every place (tests/engines.py) runs the values and, where differentiable, the
gradients.
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest

import tropic
import tropic.autodiff as ad
import tropic.nn as tn
from tropic.core.conv3d import CONV3D

from .helpers import assert_identical, dyadic, expected_index_dtype, sample, strict

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # torch.library.opcheck's torch.jit
]

OPS = {True: tropic.maxplus_conv3d, False: tropic.minplus_conv3d}

# (x shape, w shape, stride, padding, groups)
PROBLEMS = [
    ((2, 3, 4, 5, 4), (4, 3, 2, 3, 2), 1, 0, 1),
    ((1, 4, 5, 4, 6), (6, 2, 3, 2, 3), (2, 1, 2), 1, 2),
    ((2, 2, 3, 3, 3), (2, 1, 3, 3, 3), 1, (2, 1, 0), 2),
    ((1, 3, 6, 3, 2), (2, 3, 2, 1, 1), (3, 2, 1), (1, 0, 1), 1),
]
IDS = ["plain", "stride-padding-groups", "depthwise-deep-padding", "depth-only"]


def triple(value):
    return (value,) * 3 if isinstance(value, int) else tuple(value)


def brute_conv3d(x, w, stride, padding, groups, maximise):
    """The definition: candidates ``(c, a, u, v)`` in flat order over the input padded with the
    tropical zero; the zero absorbs (unless the other operand is NaN); the first strictly better
    candidate wins, the first NaN candidate wins for good; only zero candidates: zero and -1."""
    (sd, sh, sw), (pd, ph, pw) = triple(stride), triple(padding)
    dtype = np.result_type(x, w)
    x, w = x.astype(dtype), w.astype(dtype)
    zero = dtype.type(-np.inf if maximise else np.inf)
    padded = np.pad(x, ((0, 0), (0, 0), (pd, pd), (ph, ph), (pw, pw)), constant_values=zero)
    B, _, Dp, Hp, Wp = padded.shape
    C_out, C_group, kd, kh, kw = w.shape
    out = (B, C_out, (Dp - kd) // sd + 1, (Hp - kh) // sh + 1, (Wp - kw) // sw + 1)
    _, _, D_out, H_out, W_out = out
    first_channel = (np.arange(C_out) // (C_out // groups)) * C_group
    y = np.full(out, zero, dtype)
    index = np.full(out, -1, np.int64)
    seen_nan = np.zeros(out, bool)
    for k, (c, a, u, v) in enumerate(np.ndindex(C_group, kd, kh, kw)):
        xs = padded[
            :,
            first_channel + c,
            a : a + sd * (D_out - 1) + 1 : sd,
            u : u + sh * (H_out - 1) + 1 : sh,
            v : v + sw * (W_out - 1) + 1 : sw,
        ]
        ws = w[:, c, a, u, v][None, :, None, None, None]
        with np.errstate(invalid="ignore"):
            value = xs + ws
        absorbed = ((xs == zero) & ~np.isnan(ws)) | ((ws == zero) & ~np.isnan(xs))
        value = np.where(absorbed, zero, value)
        nan = np.isnan(value)
        better = value > y if maximise else value < y
        take = ~seen_nan & (nan | better)
        y, index = np.where(take, value, y), np.where(take, k, index)
        seen_nan |= nan
    return y, index.astype(expected_index_dtype(C_group * kd * kh * kw))


def definition_vjp(g, index, x_shape, w_shape, stride, padding, groups):
    """The gradient of ``sum(g * y)``: each output's ``g`` to the input voxel and the weight its
    winner read (nothing for padding or no winner)."""
    (sd, sh, sw), (pd, ph, pw) = triple(stride), triple(padding)
    B, C_in, D, H, W = x_shape
    C_out, C_group, kd, kh, kw = w_shape
    gx = np.zeros((B, C_in, D + 2 * pd, H + 2 * ph, W + 2 * pw))
    gw = np.zeros(w_shape)
    for b, o, z, i, j in np.ndindex(*index.shape):
        k = int(index[b, o, z, i, j])
        if k < 0:
            continue
        c, a, u, v = np.unravel_index(k, (C_group, kd, kh, kw))
        channel = (o // (C_out // groups)) * C_group + c
        gx[b, channel, z * sd + a, i * sh + u, j * sw + v] += g[b, o, z, i, j]
        gw[o, c, a, u, v] += g[b, o, z, i, j]
    return gx[:, :, pd : pd + D, ph : ph + H, pw : pw + W].astype(g.dtype), gw.astype(g.dtype)


def problem_data(seed, x_shape, w_shape, dtype=np.float64, specials=True):
    rng = np.random.default_rng(seed)
    return sample(rng, x_shape, dtype, specials), sample(rng, w_shape, dtype, specials)


# -- values and winners --------------------------------------------------------------------------


@pytest.mark.parametrize("maximise", [True, False], ids=["maxplus", "minplus"])
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "groups"), PROBLEMS, ids=IDS)
def test_values_and_winners_match_the_definition_everywhere(
    place, maximise, x_shape, w_shape, stride, padding, groups
):
    for seed in range(3):
        x, w = problem_data(seed, x_shape, w_shape)
        expected = brute_conv3d(x, w, stride, padding, groups, maximise)
        y, k = OPS[maximise](place.array(x), place.array(w), stride, padding, groups, return_indices=True)
        assert_identical(place.numpy(y), expected[0])
        assert_identical(place.numpy(k), expected[1])
        assert_identical(
            place.numpy(OPS[maximise](place.array(x), place.array(w), stride, padding, groups)), expected[0]
        )


@pytest.mark.parametrize("maximise", [True, False], ids=["maxplus", "minplus"])
def test_ties_across_depth_taps_go_to_the_lowest_flat_index(maximise):
    """Constant data: every candidate ties, so the winner is 0 (c = a = u = v = 0) wherever it is
    inside; where depth tap 0 reads padding the lowest inside candidate is (c=0, a=1): index kh*kw,
    lower than channel 1's candidates at tap 0 (a tap-by-tap order would pick one of those)."""
    x = np.zeros((1, 2, 3, 3, 3))
    w = np.zeros((1, 2, 3, 2, 2))
    y, k = tropic.maxplus_conv3d(x, w, padding=(1, 0, 0), return_indices=True)
    assert_identical(y, np.zeros((1, 1, 3, 2, 2)))
    assert (k[0, 0, 0] == 4).all() and (k[0, 0, 1:] == 0).all()
    assert_identical(k, brute_conv3d(x, w, 1, (1, 0, 0), 1, maximise)[1])
    # -0.0 and +0.0 tie: the value is the lowest index's, bit for bit.
    x2, w2 = np.full((1, 1, 2, 1, 1), -0.0), np.zeros((1, 1, 2, 1, 1))
    w2[0, 0, 0] = -0.0  # candidates -0.0 (index 0) and +0.0 (index 1)
    assert np.signbit(OPS[maximise](x2, w2)).all()
    w2[0, 0] = w2[0, 0, ::-1].copy()
    assert not np.signbit(OPS[maximise](x2, w2)).any()


@pytest.mark.parametrize("maximise", [True, False], ids=["maxplus", "minplus"])
def test_nan_and_the_tropical_zero(place, maximise):
    """The first NaN candidate in flat order wins and the output is NaN, also where a NaN weight
    meets padding (zero ⊗ NaN = NaN) and where a later depth tap has a lower-index NaN; all-zero
    candidates give the zero and -1; the zero absorbs the opposite infinity."""
    zero = -np.inf if maximise else np.inf
    x = np.full((1, 2, 3, 2, 2), zero)
    x[0, 1, 2] = 1.0
    w = np.zeros((2, 2, 2, 1, 1))
    w[0, 1, 0] = np.nan  # index 2: channel 1, tap 0
    w[0, 0, 1] = np.nan  # index 1: channel 0, tap 1 (lower, though a later tap)
    w[1] = -zero  # the opposite infinity: absorbed by the zero input, beaten by nothing
    for padding in (0, (1, 0, 0)):
        expected = brute_conv3d(x, w, 1, padding, 1, maximise)
        y, k = OPS[maximise](place.array(x), place.array(w), padding=padding, return_indices=True)
        assert_identical(place.numpy(y), expected[0])
        assert_identical(place.numpy(k), expected[1])
        assert np.isnan(expected[0][0, 0]).all() and (expected[1][0, 0] == 1).all()
    y, k = OPS[maximise](np.full((1, 1, 2, 2, 2), zero), np.zeros((1, 1, 2, 2, 2)), return_indices=True)
    assert_identical(y, np.full((1, 1, 1, 1, 1), zero))
    assert_identical(k, np.full((1, 1, 1, 1, 1), -1, np.int8))


@pytest.mark.parametrize("maximise", [True, False], ids=["maxplus", "minplus"])
def test_a_depth_of_one_is_the_2d_operator(maximise):
    rng = np.random.default_rng(4)
    x, w = sample(rng, (2, 4, 1, 6, 5)), sample(rng, (6, 2, 1, 3, 2))
    op2 = tropic.maxplus_conv2d if maximise else tropic.minplus_conv2d
    y, k = OPS[maximise](x, w, (1, 2, 1), (0, 1, 1), 2, return_indices=True)
    y2, k2 = op2(x[:, :, 0], w[:, :, 0], (2, 1), (1, 1), 2, return_indices=True)
    assert_identical(y[:, :, 0], y2)
    assert_identical(k[:, :, 0], k2)


@pytest.mark.parametrize(
    ("dx", "dw"), [(np.float32, np.float64), (np.float16, np.float32), (np.float16, np.float16)]
)
def test_dtypes_promote_and_winner_dtype(dx, dw):
    x, w = problem_data(5, (1, 3, 4, 4, 4), (2, 3, 2, 2, 2))
    x, w = x.astype(dx), w.astype(dw)
    y, k = tropic.maxplus_conv3d(x, w, padding=1, return_indices=True)
    expected = brute_conv3d(x, w, 1, 1, 1, True)
    assert_identical(y, expected[0])
    assert_identical(k, expected[1])
    assert y.dtype == np.result_type(dx, dw) and k.dtype == np.int8
    big = np.zeros((1, 20, 2, 2, 2))
    assert tropic.maxplus_conv3d(big, np.zeros((1, 20, 2, 2, 2)), return_indices=True)[1].dtype == np.int16


def test_inputs_not_modified_and_empty_batches():
    x, w = problem_data(6, (2, 2, 4, 3, 3), (2, 2, 2, 2, 2))
    x0, w0 = x.copy(), w.copy()
    tropic.minplus_conv3d(x, w, padding=1, return_indices=True)
    assert_identical(x, x0)
    assert_identical(w, w0)
    y, k = tropic.maxplus_conv3d(np.zeros((0, 2, 4, 3, 3)), w, return_indices=True)
    assert y.shape == k.shape == (0, 2, 3, 2, 2)
    gx, gw = tropic.conv3d_vjp(y, k, (0, 2, 4, 3, 3), w.shape)
    assert_identical(gx, np.zeros((0, 2, 4, 3, 3)))
    assert_identical(gw, np.zeros(w.shape))


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "padding", "groups"),
    [
        ((2, 2, 7, 3, 4), (4, 1, 3, 2, 2), 1, 1, 2),
        ((1, 3, 9, 4, 3), (2, 3, 2, 3, 1), (2, 1, 1), (1, 0, 1), 1),
    ],
)
def test_output_depths_in_chunks(cpu_path, monkeypatch, x_shape, w_shape, stride, padding, groups):
    """With the fold budget at its minimum (chunks of about D / kd output depths), values, winners and
    gradients are still the definition's."""
    import tropic.core.conv3d as conv3d

    monkeypatch.setattr(conv3d, "_FOLD_ELEMENTS", 1)
    geometry = conv3d.Conv3dGeometry(x_shape, w_shape, stride, padding, groups)
    assert len(geometry.chunks()) > 1
    x, w = problem_data(17, x_shape, w_shape)
    for maximise in (True, False):
        y, k = OPS[maximise](x, w, stride, padding, groups, return_indices=True)
        expected = brute_conv3d(x, w, stride, padding, groups, maximise)
        assert_identical(y, expected[0])
        assert_identical(k, expected[1])
        g = dyadic(np.random.default_rng(18), k.shape, np.float64)
        grads = tropic.conv3d_vjp(g, k, x_shape, w_shape, stride, padding, groups)
        expected = definition_vjp(g, k, x_shape, w_shape, stride, padding, groups)
        for actual, reference in zip(grads, expected, strict=True):
            assert_identical(actual, reference)


# -- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("maximise", [True, False], ids=["maxplus", "minplus"])
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "groups"), PROBLEMS, ids=IDS)
def test_gradients_are_the_definitions_scatter(
    gradient_place, maximise, x_shape, w_shape, stride, padding, groups
):
    place = gradient_place
    x, w = problem_data(7, x_shape, w_shape)
    _, index = brute_conv3d(x, w, stride, padding, groups, maximise)
    g = dyadic(np.random.default_rng(8), index.shape, np.float64)
    expected = definition_vjp(g, index, x_shape, w_shape, stride, padding, groups)
    leaves = [place.leaf(x), place.leaf(w)]
    y = OPS[maximise](*leaves, stride, padding, groups)
    for actual, reference in zip(place.backward(y, g, leaves), expected, strict=True):
        assert_identical(actual, reference)


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict"])
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "groups"), PROBLEMS[:2], ids=IDS[:2])
def test_conv3d_vjp_is_the_definitions_scatter(cpu_path, xp_name, x_shape, w_shape, stride, padding, groups):
    xp = np if xp_name == "numpy" else strict()
    x, w = problem_data(9, x_shape, w_shape)
    _, index = brute_conv3d(x, w, stride, padding, groups, True)
    g = dyadic(np.random.default_rng(10), index.shape, np.float32)
    gx, gw = tropic.conv3d_vjp(xp.asarray(g), xp.asarray(index), x_shape, w_shape, stride, padding, groups)
    expected = definition_vjp(g, index, x_shape, w_shape, stride, padding, groups)
    assert_identical(np.from_dlpack(gx), expected[0])
    assert_identical(np.from_dlpack(gw), expected[1])


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict"])
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "groups"), PROBLEMS, ids=IDS)
def test_jvp_is_the_transpose_of_the_vjp(xp_name, x_shape, w_shape, stride, padding, groups):
    """``<g, J t> = <J^T g, t>`` exactly (dyadic values), for tangents of x, of w and of both; and
    ``J t`` of a one-hot tangent of w is the indicator of the outputs it wins."""
    xp = np if xp_name == "numpy" else strict()
    x, w = problem_data(11, x_shape, w_shape)
    _, index = brute_conv3d(x, w, stride, padding, groups, False)
    rng = np.random.default_rng(12)
    g = dyadic(rng, index.shape, np.float64)
    tx, tw = dyadic(rng, x_shape, np.float64), dyadic(rng, w_shape, np.float64)
    gx, gw = definition_vjp(g, index, x_shape, w_shape, stride, padding, groups)
    params = {
        "stride": list(triple(stride)),
        "padding": list(triple(padding)),
        "groups": groups,
        "maximise": False,
    }
    for tangents, expected in (
        ((tx, tw), np.sum(gx * tx) + np.sum(gw * tw)),
        ((tx, None), np.sum(gx * tx)),
        ((None, tw), np.sum(gw * tw)),
    ):
        arrays = tuple(None if t is None else xp.asarray(t) for t in tangents)
        out = CONV3D.jvp(xp, arrays, xp.asarray(index), (x_shape, w_shape), **params)
        assert float(np.sum(g * np.from_dlpack(out))) == float(expected)
    hot = np.zeros(w_shape)
    hot[0, 0, -1, 0, 0] = 1.0
    out = CONV3D.jvp(xp, (None, xp.asarray(hot)), xp.asarray(index), (x_shape, w_shape), **params)
    k = int(np.ravel_multi_index((0, -1 % w_shape[2], 0, 0), w_shape[1:]))
    wins = (index == k) & (np.arange(w_shape[0])[None, :, None, None, None] == 0)
    assert_identical(np.from_dlpack(out), wins.astype(np.float64))


# -- torch: forward mode, vmap, opcheck, torch.compile ----------------------------------------------


def test_torch_forward_mode_vmap_and_opcheck():
    torch = pytest.importorskip("torch")
    x, w = problem_data(13, (2, 4, 4, 5, 4), (4, 2, 2, 3, 2), specials=False)
    tx, tw = x * 0.5 + 1, w - 0.25
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)

    def f(a, b):
        return tropic.minplus_conv3d(a, b, stride=(1, 2, 1), padding=1, groups=2)

    _, jvp = torch.func.jvp(f, (xt, wt), (torch.from_numpy(tx), torch.from_numpy(tw)))
    _, index = tropic.minplus_conv3d(x, w, (1, 2, 1), 1, 2, return_indices=True)
    params = {"stride": [1, 2, 1], "padding": [1, 1, 1], "groups": 2, "maximise": False}
    expected = CONV3D.jvp(np, (tx, tw), index, (x.shape, w.shape), **params)
    assert_identical(jvp.numpy(), expected)
    batch = torch.stack([xt, xt + 1.5, -xt])
    assert torch.equal(
        torch.func.vmap(f, in_dims=(0, None))(batch, wt), torch.stack([f(b, wt) for b in batch])
    )
    ops = torch.ops.tropic
    torch.library.opcheck(ops.conv3d, (xt, wt, [1, 2, 1], [1, 0, 1], 2, True))


def test_torch_compile_fullgraph_matches_eager():
    torch = pytest.importorskip("torch")
    x, w = problem_data(14, (2, 2, 4, 4, 4), (3, 2, 2, 3, 2), specials=False)

    def f(a, b):
        y = tropic.maxplus_conv3d(a, b, stride=(2, 1, 1), padding=(1, 1, 0))
        return (y * torch.arange(y.shape[-1], dtype=y.dtype)).sum()

    def step(fn):
        a, b = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        out = fn(a, b)
        out.backward()
        return out.detach(), a.grad, b.grad

    torch._dynamo.reset()
    eager, compiled = step(f), step(torch.compile(f, fullgraph=True, backend="aot_eager"))
    for a, b in zip(compiled, eager, strict=True):
        assert torch.equal(a, b)
    tnn = importlib.import_module("tropic.torch.nn")
    layer = tnn.MinPlusConv3d(2, 4, 2, padding=1, groups=2, bias=True, seed=0, dtype=torch.float64)
    v = torch.tensor(x)
    assert torch.equal(torch.compile(layer, fullgraph=True, backend="aot_eager")(v), layer(v))


# -- errors ----------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    x, w = np.zeros((1, 4, 3, 4, 4)), np.zeros((2, 2, 2, 2, 2))
    cases = [
        (lambda: tropic.maxplus_conv3d(np.zeros((1, 4, 4, 4)), w), ValueError, "x must have 5 dimensions"),
        (lambda: tropic.maxplus_conv3d(x, np.zeros((2, 4, 2, 2))), ValueError, "w must have 5 dimensions"),
        (lambda: tropic.maxplus_conv3d(x.astype(int), w, groups=2), TypeError, "x must have a real floating"),
        (
            lambda: tropic.minplus_conv3d(x, w.astype(bool), groups=2),
            TypeError,
            "w must have a real floating",
        ),
        (lambda: tropic.maxplus_conv3d(x, w), ValueError, "w.shape[1] must be x.shape[1] // groups = 4"),
        (lambda: tropic.maxplus_conv3d(x, w, groups=3), ValueError, "groups=3 must divide"),
        (lambda: tropic.maxplus_conv3d(x, w, groups=0), ValueError, "groups must be a positive int"),
        (
            lambda: tropic.maxplus_conv3d(x, np.zeros((2, 2, 4, 2, 2)), groups=2),
            ValueError,
            "the kernel (4, 2, 2) must fit the padded input (3, 4, 4)",
        ),
        (
            lambda: tropic.maxplus_conv3d(x, w, stride=(1, 2), groups=2),
            TypeError,
            "stride must be an int or a tuple of 3 ints",
        ),
        (lambda: tropic.maxplus_conv3d(x, w, stride=0, groups=2), ValueError, "stride must be >= 1"),
        (lambda: tropic.maxplus_conv3d(x, w, padding=-1, groups=2), ValueError, "padding must be >= 0"),
        (lambda: tropic.maxplus_conv3d(x, [[[[[1.0]]]]], groups=2), TypeError, "w must be an array"),
        (lambda: tropic.maxplus_conv3d(strict().asarray(x), w, groups=2), TypeError, "same array library"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
    assert tropic.maxplus_conv3d(x, w, padding=(1, 0, 1), groups=2).shape == (1, 2, 4, 3, 5)


def test_vjp_errors():
    x_shape, w_shape = (1, 2, 3, 3, 3), (2, 2, 2, 2, 2)
    g, k = np.zeros((1, 2, 2, 2, 2)), np.zeros((1, 2, 2, 2, 2), np.int8)
    with pytest.raises(ValueError, match=re.escape("grad must have the output shape (1, 2, 2, 2, 2)")):
        tropic.conv3d_vjp(g[:, :1], k, x_shape, w_shape)
    with pytest.raises(ValueError, match="x_shape must have 5 entries"):
        tropic.conv3d_vjp(g, k, (1, 2, 3, 3), w_shape)
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        tropic.conv3d_vjp(g, g, x_shape, w_shape)
    with pytest.raises(ValueError, match=re.escape("indices must hold winners in [0, 16) or -1")):
        tropic.conv3d_vjp(g, k + 16, x_shape, w_shape)


# -- layers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["autodiff", "torch"])
@pytest.mark.parametrize("kind", ["Max", "Min"])
def test_layers_are_the_function_with_a_bias_candidate(engine, kind):
    torch = pytest.importorskip("torch")
    tnn = importlib.import_module("tropic.torch.nn")
    kwargs = {"stride": (1, 2, 1), "padding": 1, "groups": 2, "bias": True, "seed": 3}
    if engine == "torch":
        layer = getattr(tnn, f"{kind}PlusConv3d")(4, 6, (2, 3, 2), dtype=torch.float64, **kwargs)
    else:
        layer = getattr(tn, f"{kind}PlusConv3d")(4, 6, (2, 3, 2), dtype=np.float64, **kwargs)
    weight = np.array(layer.weight.detach().numpy() if engine == "torch" else layer.weight.numpy())
    bias = np.array(layer.bias.detach().numpy() if engine == "torch" else layer.bias.numpy())
    assert weight.shape == (6, 2, 2, 3, 2) and bias.shape == (6,)
    rng = np.random.default_rng(15)
    x = rng.integers(-2, 3, size=(2, 4, 4, 5, 4)).astype(np.float64)
    g = dyadic(rng, (2, 6, 5, 3, 5), np.float64)
    if engine == "torch":
        leaf = torch.tensor(x, requires_grad=True)
        y = layer(leaf)
        y.backward(torch.from_numpy(g))
        y, gx = y.detach().numpy(), leaf.grad.numpy()
        gw, gb = layer.weight.grad.numpy(), layer.bias.grad.numpy()
    else:
        leaf = ad.Tensor(x, requires_grad=True)
        y = layer(leaf)
        y.backward(g)
        y, gx, gw, gb = (
            y.numpy(),
            np.asarray(leaf.grad),
            np.asarray(layer.weight.grad),
            np.asarray(layer.bias.grad),
        )
    maximise = kind == "Max"
    conv, index = brute_conv3d(x, weight, (1, 2, 1), 1, 2, maximise)
    b = bias[None, :, None, None, None]
    assert_identical(y, (np.maximum if maximise else np.minimum)(b, conv))
    # The bias is the first candidate of tropic.maximum / minimum: it wins ties.
    bias_wins = (b >= conv) if maximise else (b <= conv)
    bias_wins = bias_wins | np.isnan(b)
    expected_x, expected_w = definition_vjp(
        np.where(bias_wins, 0.0, g), index, x.shape, weight.shape, (1, 2, 1), 1, 2
    )
    assert_identical(gx, expected_x)
    assert_identical(gw, expected_w)
    assert_identical(gb, np.where(bias_wins, g, 0.0).sum(axis=(0, 2, 3, 4)))
    assert repr(layer) == (
        f"{kind}PlusConv3d(4, 6, kernel_size=(2, 3, 2), stride=(1, 2, 1), padding=(1, 1, 1), groups=2, "
        "bias=True, init='dense')"
    )


def test_layer_errors_and_names():
    tnn = importlib.import_module("tropic.torch.nn") if importlib.util.find_spec("torch") else None
    with pytest.raises(TypeError, match=re.escape("kernel_size must be an int or a tuple of 3 ints")):
        tn.MaxPlusConv3d(2, 2, (3, 3))
    with pytest.raises(
        ValueError, match=re.escape("MinPlusConv3d: x must have shape (B, 2, D, H, W), got (1, 2, 4, 4)")
    ):
        tn.MinPlusConv3d(2, 2, 1)(np.zeros((1, 2, 4, 4)))
    sparse = tn.MinPlusConv3d(2, 4, 2, init="sparse", p=0.5, seed=0)
    assert (sparse.weight.numpy() == np.inf).any()
    if tnn is not None:
        import torch

        module = tnn.from_tropic(sparse)
        assert type(module) is tnn.MinPlusConv3d
        x = np.random.default_rng(16).standard_normal((1, 2, 3, 4, 3)).astype(np.float32)
        assert_identical(module(torch.from_numpy(x)).detach().numpy(), sparse(x).numpy())
    assert {"maxplus_conv3d", "minplus_conv3d", "conv3d_vjp"} <= set(tropic.__all__)
    for name in ("MaxPlusConv3d", "MinPlusConv3d"):
        assert name in tn.__all__
        if tnn is not None:
            assert name in tnn.__all__ and getattr(tnn, name)._tropic_cls is getattr(tn, name)
