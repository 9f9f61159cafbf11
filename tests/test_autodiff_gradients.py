"""Every autodiff op's gradient against central finite differences and against torch autograd.

Inputs are float64 and drawn with fixed seeds at points where every max/min has a unique winner
with a margin far above the finite-difference step. For the tropical ops that means integer-spaced
values plus small distinct offsets on two different scales (see :func:`spaced`), so that no two
candidates of an output can tie. Upstream gradients are small integers, so the tropical gradients
(sums of upstream entries) are exact and compared with torch bitwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tropic.autodiff as ad
from tropic.autodiff import Tensor

from .helpers import assert_identical, hsettings, strict, to_numpy

STEP = 1e-6


def spaced(rng: np.random.Generator, shape: tuple[int, ...], level: int = 0) -> np.ndarray:
    """Integers in [-4, 4] plus distinct offsets: ``level`` 0 offsets are multiples of ``1/256`` below
    ``1/2``, ``level`` 1 offsets distinct multiples of ``2^-17`` below ``1/256``. A sum of a level-0
    and a level-1 entry determines both entries, so tropical candidates never tie; the gaps (at least
    ``2^-17``, about 7.6e-6) stay above the finite-difference step."""
    size = int(np.prod(shape))
    scale = 2.0**-9 if level == 0 else 2.0**-17
    assert size * scale <= (0.5 if level == 0 else 2.0**-8), "too many entries for distinct offsets"
    offsets = rng.permutation(size).reshape(shape) * scale
    return np.asarray(rng.integers(-4, 5, size=shape).astype(np.float64) + offsets)


def normal(rng: np.random.Generator, shape: tuple[int, ...], low: float | None = None) -> np.ndarray:
    x = rng.standard_normal(shape)
    return x if low is None else np.abs(x) + low


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.3, x)


def t_maxplus(a, b):
    return (a[..., :, :, None] + b[..., None, :, :]).amax(-2)


def t_minplus(a, b):
    return (a[..., :, :, None] + b[..., None, :, :]).amin(-2)


def t_morphology(torch, x, s, dilate, mode="neutral"):
    """Naive dilation / erosion with SciPy's centring: a stack of shifted images; neutral borders or
    ``mode="nearest"`` (replicated borders)."""
    kh, kw = s.shape
    ch, cw = kh // 2, kw // 2
    H, W = x.shape[-2:]
    fill = -float("inf") if dilate else float("inf")
    if mode == "nearest":
        padded = torch.nn.functional.pad(x, (kw, kw, kh, kh), mode="replicate")
    else:
        padded = torch.nn.functional.pad(x, (kw, kw, kh, kh), value=fill)
    shifted = []
    for u in range(kh):
        for v in range(kw):
            # dilation reads f(p - y), erosion f(p + y), with y = (u - ch, v - cw)
            du, dv = (ch - u, cw - v) if dilate else (u - ch, v - cw)
            window = padded[..., kh + du : kh + du + H, kw + dv : kw + dv + W]
            shifted.append(window + s[u, v] if dilate else window - s[u, v])
    stacked = torch.stack(shifted, dim=0)
    return stacked.amax(0) if dilate else stacked.amin(0)


def t_tropical_conv(torch, x, w, stride, padding, groups, maximise):
    F = torch.nn.functional
    fill = -float("inf") if maximise else float("inf")
    x = F.pad(x, (padding, padding, padding, padding), value=fill)
    B, C, H, W = x.shape
    Co, Cg, kh, kw = w.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    outs = []
    for g in range(groups):
        xg = x[:, g * Cg : (g + 1) * Cg]
        wg = w[g * (Co // groups) : (g + 1) * (Co // groups)]
        cols = F.unfold(xg, (kh, kw), stride=stride)  # (B, Cg*kh*kw, L), order (c, u, v)
        cand = cols[:, None, :, :] + wg.reshape(Co // groups, -1)[None, :, :, None]
        outs.append(cand.amax(2) if maximise else cand.amin(2))
    return torch.cat(outs, dim=1).reshape(B, Co, Ho, Wo)


@dataclass
class Case:
    name: str
    op: Callable  # on autodiff tensors
    ref: Callable | None  # (torch, *torch tensors) -> torch tensor
    make: Callable  # rng -> list of float64 arrays
    exact: bool = False  # tropical: compared with torch bitwise
    grad_inputs: tuple[int, ...] | None = None  # which inputs get gradients (default all)
    extra: dict = field(default_factory=dict)


def _F(torch):
    return torch.nn.functional


CASES = [
    Case("add", lambda a, b: a + b, lambda t, a, b: a + b, lambda r: [normal(r, (3, 1)), normal(r, (4,))]),
    Case(
        "sub",
        lambda a, b: ad.sub(a, b),
        lambda t, a, b: a - b,
        lambda r: [normal(r, (2, 3)), normal(r, (3,))],
    ),
    Case("rsub", lambda a: 2.0 - a, lambda t, a: 2.0 - a, lambda r: [normal(r, (2, 3))]),
    Case("mul", lambda a, b: a * b, lambda t, a, b: a * b, lambda r: [normal(r, (2, 3)), normal(r, (2, 1))]),
    Case(
        "div", lambda a, b: a / b, lambda t, a, b: a / b, lambda r: [normal(r, (2, 3)), normal(r, (3,), 0.5)]
    ),
    Case("rdiv", lambda a: 1.5 / a, lambda t, a: 1.5 / a, lambda r: [normal(r, (4,), 0.5)]),
    Case("neg", lambda a: -a, lambda t, a: -a, lambda r: [normal(r, (2, 3))]),
    Case("pow2", lambda a: a**2, lambda t, a: a**2, lambda r: [normal(r, (5,))]),
    Case("pow3", lambda a: ad.pow(a, 3), lambda t, a: a**3, lambda r: [normal(r, (5,))]),
    Case("pow_frac", lambda a: a**-1.5, lambda t, a: a**-1.5, lambda r: [normal(r, (5,), 0.5)]),
    Case("exp", ad.exp, lambda t, a: a.exp(), lambda r: [normal(r, (2, 3))]),
    Case("log", lambda a: a.log(), lambda t, a: a.log(), lambda r: [normal(r, (2, 3), 0.3)]),
    Case("sqrt", ad.sqrt, lambda t, a: a.sqrt(), lambda r: [normal(r, (2, 3), 0.3)]),
    Case("abs", ad.abs, lambda t, a: a.abs(), lambda r: [away_from_zero(r, (2, 3))]),
    Case("relu", lambda a: a.relu(), lambda t, a: a.relu(), lambda r: [away_from_zero(r, (2, 3))]),
    Case("tanh", lambda a: a.tanh(), lambda t, a: a.tanh(), lambda r: [normal(r, (2, 3))]),
    Case("sigmoid", lambda a: a.sigmoid(), lambda t, a: a.sigmoid(), lambda r: [3 * normal(r, (2, 3))]),
    Case("softplus", ad.softplus, lambda t, a: _F(t).softplus(a), lambda r: [3 * normal(r, (2, 3))]),
    Case(
        "clamp",
        lambda a: a.clamp(-0.5, 0.7),
        lambda t, a: a.clamp(-0.5, 0.7),
        lambda r: [np.array([-2.0, -0.6, -0.4, 0.0, 0.3, 0.69, 0.8, 3.0])],
    ),
    Case(
        "clamp_min",
        lambda a: ad.clamp(a, min=0.1),
        lambda t, a: a.clamp(min=0.1),
        lambda r: [away_from_zero(r, (6,))],
    ),
    Case(
        "maximum",
        ad.maximum,
        lambda t, a, b: t.maximum(a, b),
        lambda r: [spaced(r, (3, 4)), spaced(r, (4,), 1)],
        exact=True,
    ),
    Case(
        "minimum",
        ad.minimum,
        lambda t, a, b: t.minimum(a, b),
        lambda r: [spaced(r, (3, 1)), spaced(r, (3, 4), 1)],
        exact=True,
    ),
    Case(
        "where",
        lambda a, b: ad.where(a > 0.0, a, b),
        lambda t, a, b: t.where(a > 0.0, a, b),
        lambda r: [away_from_zero(r, (2, 3)), normal(r, (3,))],
    ),
    Case(
        "matmul", lambda a, b: a @ b, lambda t, a, b: a @ b, lambda r: [normal(r, (3, 4)), normal(r, (4, 2))]
    ),
    Case(
        "matmul_batched",
        ad.matmul,
        lambda t, a, b: a @ b,
        lambda r: [normal(r, (2, 1, 3, 4)), normal(r, (3, 4, 2))],
    ),
    Case(
        "matmul_vec_mat", ad.matmul, lambda t, a, b: a @ b, lambda r: [normal(r, (4,)), normal(r, (2, 4, 3))]
    ),
    Case(
        "matmul_mat_vec", ad.matmul, lambda t, a, b: a @ b, lambda r: [normal(r, (2, 3, 4)), normal(r, (4,))]
    ),
    Case("matmul_vec_vec", ad.matmul, lambda t, a, b: a @ b, lambda r: [normal(r, (4,)), normal(r, (4,))]),
    Case("sum_all", lambda a: a.sum(), lambda t, a: a.sum(), lambda r: [normal(r, (2, 3))]),
    Case(
        "sum_axes",
        lambda a: ad.sum(a, axis=(0, 2), keepdims=True),
        lambda t, a: a.sum(dim=(0, 2), keepdim=True),
        lambda r: [normal(r, (2, 3, 2))],
    ),
    Case("mean", lambda a: a.mean(axis=-1), lambda t, a: a.mean(dim=-1), lambda r: [normal(r, (2, 3))]),
    Case("max_all", lambda a: a.max(), lambda t, a: a.amax(), lambda r: [spaced(r, (3, 4))], exact=True),
    Case(
        "max_axes",
        lambda a: ad.max(a, axis=(0, 2)),
        lambda t, a: a.amax(dim=(0, 2)),
        lambda r: [spaced(r, (2, 3, 4))],
        exact=True,
    ),
    Case(
        "min_keepdims",
        lambda a: a.min(axis=1, keepdims=True),
        lambda t, a: a.amin(dim=1, keepdim=True),
        lambda r: [spaced(r, (3, 4))],
        exact=True,
    ),
    Case(
        "reshape", lambda a: a.reshape(3, -1), lambda t, a: a.reshape(3, -1), lambda r: [normal(r, (2, 3, 2))]
    ),
    Case("transpose", lambda a: a.T, lambda t, a: a.permute(2, 1, 0), lambda r: [normal(r, (2, 3, 4))]),
    Case(
        "permute_dims",
        lambda a: ad.permute_dims(a, (1, 2, 0)),
        lambda t, a: a.permute(1, 2, 0),
        lambda r: [normal(r, (2, 3, 4))],
    ),
    Case(
        "expand_squeeze",
        lambda a: ad.squeeze(ad.expand_dims(a, -1), 0) * 2.0,
        lambda t, a: a.unsqueeze(-1).squeeze(0) * 2.0,
        lambda r: [normal(r, (1, 3))],
    ),
    Case(
        "concatenate",
        lambda a, b: ad.concatenate([a, b, a], axis=1),
        lambda t, a, b: t.cat([a, b, a], dim=1),
        lambda r: [normal(r, (2, 3)), normal(r, (2, 1))],
    ),
    Case(
        "stack",
        lambda a, b: ad.stack([a, b, a], axis=-1),
        lambda t, a, b: t.stack([a, b, a], dim=-1),
        lambda r: [normal(r, (2, 3)), normal(r, (2, 3))],
    ),
    Case(
        "getitem_basic",
        lambda a: a[1:, None, ::2, -1],
        lambda t, a: a[1:, None, ::2, -1],
        lambda r: [normal(r, (3, 4, 2))],
    ),
    Case(
        "getitem_int_array",
        lambda a: a.reshape(-1)[a.xp.asarray([2, 0, 2, 2, 5])],
        lambda t, a: a.reshape(-1)[t.tensor([2, 0, 2, 2, 5])],
        lambda r: [normal(r, (3, 4))],
    ),
    Case(
        "pad_constant",
        lambda a: ad.pad(a, ((0, 0), (1, 2), (2, 0)), value=1.5),
        lambda t, a: _F(t).pad(a, (2, 0, 1, 2), value=1.5),
        lambda r: [normal(r, (2, 3, 4))],
    ),
    Case(
        "pad_edge",
        lambda a: ad.pad(a, ((0, 0), (0, 0), (2, 1), (1, 3)), mode="edge"),
        lambda t, a: _F(t).pad(a, (1, 3, 2, 1), mode="replicate"),
        lambda r: [normal(r, (1, 2, 3, 4))],
    ),
    Case(
        "log_softmax",
        lambda a: ad.log_softmax(a, axis=0),
        lambda t, a: a.log_softmax(0),
        lambda r: [normal(r, (3, 4))],
    ),
    Case("softmax", lambda a: ad.softmax(a), lambda t, a: a.softmax(-1), lambda r: [normal(r, (3, 4))]),
    Case(
        "conv2d",
        lambda x, w, b: ad.conv2d(x, w, b, stride=2, padding=1),
        lambda t, x, w, b: _F(t).conv2d(x, w, b, stride=2, padding=1),
        lambda r: [normal(r, (2, 2, 5, 4)), normal(r, (3, 2, 3, 2)), normal(r, (3,))],
    ),
    Case(
        "conv2d_groups",
        lambda x, w: ad.conv2d(x, w, groups=2, padding=(1, 0)),
        lambda t, x, w: _F(t).conv2d(x, w, groups=2, padding=(1, 0)),
        lambda r: [normal(r, (1, 4, 4, 4)), normal(r, (2, 2, 2, 3))],
    ),
    Case(
        "max_pool2d",
        lambda x: ad.max_pool2d(x, 2),
        lambda t, x: _F(t).max_pool2d(x, 2),
        lambda r: [spaced(r, (2, 2, 4, 5))],
        exact=True,
    ),
    Case(
        "max_pool2d_overlap",
        lambda x: ad.max_pool2d(x, (3, 2), stride=1),
        lambda t, x: _F(t).max_pool2d(x, (3, 2), stride=1),
        lambda r: [spaced(r, (1, 2, 4, 4))],
        exact=True,
    ),
    Case(
        "maxplus_matmul",
        ad.maxplus_matmul,
        lambda t, a, b: t_maxplus(a, b),
        lambda r: [spaced(r, (3, 4)), spaced(r, (4, 5), 1)],
        exact=True,
    ),
    Case(
        "maxplus_matmul_batched",
        ad.maxplus_matmul,
        lambda t, a, b: t_maxplus(a, b),
        lambda r: [spaced(r, (2, 3, 4)), spaced(r, (4, 2), 1)],
        exact=True,
    ),
    Case(
        "minplus_matmul",
        ad.minplus_matmul,
        lambda t, a, b: t_minplus(a, b),
        lambda r: [spaced(r, (4, 3), 1), spaced(r, (2, 3, 2))],
        exact=True,
    ),
    Case(
        "dilation",
        lambda x, s: ad.dilation(x, s),
        lambda t, x, s: t_morphology(t, x, s, True),
        lambda r: [spaced(r, (2, 4, 5)), spaced(r, (3, 2), 1)],
        exact=True,
    ),
    Case(
        "erosion",
        lambda x, s: ad.erosion(x, s),
        lambda t, x, s: t_morphology(t, x, s, False),
        lambda r: [spaced(r, (4, 5)), spaced(r, (2, 3), 1)],
        exact=True,
    ),
    Case(
        "dilation_nearest",
        lambda x, s: ad.dilation(x, s, mode="nearest"),
        lambda t, x, s: t_morphology(t, x, s, True, "nearest"),
        lambda r: [spaced(r, (1, 2, 4, 4)), spaced(r, (3, 3), 1)],
        exact=True,
    ),
    Case(
        "erosion_nearest",
        lambda x, s: ad.erosion(x, s, mode="nearest"),
        lambda t, x, s: t_morphology(t, x, s, False, "nearest"),
        lambda r: [spaced(r, (2, 4, 5)), spaced(r, (2, 3), 1)],
        exact=True,
    ),
    Case(
        "maxplus_conv2d",
        lambda x, w: ad.maxplus_conv2d(x, w, stride=1, padding=1),
        lambda t, x, w: t_tropical_conv(t, x, w, 1, 1, 1, True),
        lambda r: [spaced(r, (2, 2, 3, 4)), spaced(r, (3, 2, 2, 2), 1)],
        exact=True,
    ),
    Case(
        "minplus_conv2d_groups",
        lambda x, w: ad.minplus_conv2d(x, w, stride=2, padding=0, groups=2),
        lambda t, x, w: t_tropical_conv(t, x, w, 2, 0, 2, False),
        lambda r: [spaced(r, (1, 4, 5, 5)), spaced(r, (2, 2, 3, 3), 1)],
        exact=True,
    ),
    Case(
        "maxout",
        lambda x: ad.maxout(x, 3, axis=1),
        lambda t, x: x.reshape(2, 2, 3, 2).amax(2),
        lambda r: [spaced(r, (2, 6, 2))],
        exact=True,
    ),
]

IDS = [c.name for c in CASES]


def _upstream(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Small nonzero integers: tropical gradients (sums of them) are then exact."""
    return rng.choice(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), size=shape)


def _setup(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    inputs = case.make(rng)
    out_shape = case.op(*[Tensor(x) for x in inputs]).shape
    return inputs, _upstream(rng, out_shape)


def _autodiff_grads(case: Case, inputs, upstream):
    tensors = [Tensor(x, requires_grad=True) for x in inputs]
    out = case.op(*tensors)
    out.backward(upstream)
    return out.data, [t.grad for t in tensors]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_finite_differences(case):
    inputs, upstream = _setup(case)
    _, grads = _autodiff_grads(case, inputs, upstream)

    def loss(arrays):
        return float(np.sum(case.op(*[Tensor(a) for a in arrays]).data * upstream))

    for i, x in enumerate(inputs):
        numeric = np.empty_like(x)
        for j in range(x.size):
            shifted = [a.copy() for a in inputs]
            shifted[i].flat[j] = x.flat[j] + STEP
            up = loss(shifted)
            shifted[i].flat[j] = x.flat[j] - STEP
            numeric.flat[j] = (up - loss(shifted)) / (2 * STEP)
        assert grads[i].shape == x.shape and grads[i].dtype == x.dtype
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-5, atol=1e-6, err_msg=f"input {i}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_torch(case):
    torch = pytest.importorskip("torch")
    for seed in (0, 1) if case.exact else (0,):
        inputs, upstream = _setup(case, seed)
        value, grads = _autodiff_grads(case, inputs, upstream)
        leaves = [torch.tensor(x, requires_grad=True) for x in inputs]
        out = case.ref(torch, *leaves)
        out.backward(torch.from_numpy(upstream))
        expected = [leaf.grad.numpy() for leaf in leaves]
        if case.exact:
            assert_identical(value, out.detach().numpy())
            for g, e in zip(grads, expected, strict=True):
                # + 0.0 maps -0.0 to +0.0: torch's masks give -0.0 where a negative upstream
                # entry is multiplied by 0, tropic writes +0.0 where nothing arrives.
                assert_identical(g + 0.0, e + 0.0)
        else:
            np.testing.assert_allclose(value, out.detach().numpy(), rtol=1e-12, atol=1e-12)
            for g, e in zip(grads, expected, strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_spaced_values_have_unique_winners():
    """The premise of the tropical cases: no two candidates of a max-plus product tie."""
    rng = np.random.default_rng(3)
    a, b = spaced(rng, (6, 8)), spaced(rng, (8, 7), 1)
    sums = np.sort(a[:, :, None] + b[None, :, :], axis=1)
    assert np.min(np.diff(sums, axis=1)) > 5 * STEP


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_array_api_strict_gives_numpys_results(case):
    """Every op runs on array-api-strict (the core's reference path for the tropical ops) and agrees
    with the NumPy run: bitwise for the tropical ops, to rounding for the others."""
    xp = strict()
    inputs, upstream = _setup(case)
    value, grads = _autodiff_grads(case, inputs, upstream)
    tensors = [Tensor(xp.asarray(x), requires_grad=True) for x in inputs]
    out = case.op(*tensors)
    out.backward(xp.asarray(upstream))
    assert isinstance(out.data, type(tensors[0].data))
    pairs = [(to_numpy(out.data), value)] + [
        (to_numpy(t.grad), g) for t, g in zip(tensors, grads, strict=True)
    ]
    for actual, expected in pairs:
        if case.exact:
            assert_identical(np.asarray(actual + 0.0), np.asarray(expected + 0.0))
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=1e-15)


# -- subgradient conventions at ties, zeros and infinities ------------------------------------


def _grad(op, *arrays):
    tensors = [Tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]
    out = op(*tensors)
    out.backward(np.ones(out.shape))
    return out.data, [t.grad for t in tensors]


def test_max_and_min_reductions_send_ties_to_the_lowest_index():
    x = [[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]
    _, (g,) = _grad(lambda t: t.max(axis=1), x)
    np.testing.assert_array_equal(g, [[0, 1, 0], [1, 0, 0]])
    _, (g,) = _grad(lambda t: t.min(axis=0), [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(g, [[1, 1], [0, 0]])
    _, (g,) = _grad(lambda t: t.max(), [[3.0, 1.0], [0.0, 3.0]])  # row-major order over all axes
    np.testing.assert_array_equal(g, [[1, 0], [0, 0]])
    _, (g,) = _grad(lambda t: ad.max(t, axis=(0, 1)), [[[0.0], [5.0]], [[5.0], [1.0]]])
    np.testing.assert_array_equal(g[..., 0], [[0, 1], [0, 0]])


def test_max_of_a_slice_of_tropical_zeros_sends_nothing():
    value, (g,) = _grad(lambda t: t.max(axis=1), [[-np.inf, -np.inf], [1.0, -np.inf]])
    np.testing.assert_array_equal(value, [-np.inf, 1.0])
    np.testing.assert_array_equal(g, [[0, 0], [1, 0]])
    value, (g,) = _grad(lambda t: t.min(), [np.inf, np.inf])
    assert value == np.inf and not g.any()


def test_elementwise_max_min_ties_go_to_the_first_operand():
    for op in (ad.maximum, ad.minimum):
        _, (ga, gb) = _grad(op, [1.0, 2.0, 3.0], [1.0, 0.0, 5.0])
        expected_a = [1, 1, 0] if op is ad.maximum else [1, 0, 1]
        np.testing.assert_array_equal(ga, expected_a)
        np.testing.assert_array_equal(gb, 1 - np.asarray(expected_a))


def test_derivatives_at_zero_and_at_the_bounds():
    _, (g,) = _grad(ad.relu, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [0, 0, 1])  # relu'(0) = 0
    _, (g,) = _grad(ad.abs, [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [-1, 0, 1])  # abs'(0) = 0
    _, (g,) = _grad(lambda t: t.clamp(-1.0, 1.0), [-1.5, -1.0, 0.0, 1.0, 1.5])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 0])  # the bounds pass the gradient
    with np.errstate(divide="ignore"):
        value, (g,) = _grad(ad.sqrt, [0.0, 4.0])
        np.testing.assert_array_equal(g, [np.inf, 0.25])
        value, (g,) = _grad(ad.log, [0.0, 2.0])
    np.testing.assert_array_equal(value, [-np.inf, np.log(2.0)])
    np.testing.assert_array_equal(g, [np.inf, 0.5])


def test_tropical_and_pooling_ties_go_to_the_lowest_index():
    _, (ga, gb) = _grad(ad.maxplus_matmul, [[0.0, 0.0, -1.0]], [[1.0], [1.0], [2.0]])
    np.testing.assert_array_equal(ga, [[1, 0, 0]])
    np.testing.assert_array_equal(gb, [[1], [0], [0]])
    _, (g,) = _grad(lambda t: ad.max_pool2d(t, 2), np.zeros((1, 1, 2, 4)))
    np.testing.assert_array_equal(g[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0]])
    _, (g,) = _grad(lambda t: ad.maxout(t, 2), [4.0, 4.0, 1.0, 2.0])
    np.testing.assert_array_equal(g, [1, 0, 0, 1])


def test_softplus_sigmoid_and_log_softmax_stay_finite_at_extremes():
    x = [-1000.0, -30.0, 0.0, 30.0, 1000.0]
    value, (g,) = _grad(ad.softplus, x)
    assert np.isfinite(value).all() and value[-1] == 1000.0 and value[0] == 0.0
    np.testing.assert_allclose(g, [0.0, np.exp(-30.0), 0.5, 1.0, 1.0], rtol=1e-12, atol=0)
    value, (g,) = _grad(ad.sigmoid, x)
    assert np.isfinite(value).all() and np.isfinite(g).all()
    t = Tensor(np.array([[0.0, -np.inf, 1000.0]]), requires_grad=True)
    y = ad.log_softmax(t)
    y.backward(np.array([[1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(y.data, [[-1000.0, -np.inf, 0.0]])
    np.testing.assert_array_equal(t.grad, [[1.0, 0.0, -1.0]])


def _closure_arrays(fn, seen=None):
    """The arrays a backward closure keeps alive (through nested closures)."""
    seen = set() if seen is None else seen
    found = []
    for cell in fn.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, np.ndarray):
            found.append(value)
        elif callable(value) and getattr(value, "__closure__", None) and id(value) not in seen:
            seen.add(id(value))
            found += _closure_arrays(value, seen)
    return found


@pytest.mark.parametrize(
    ("name", "op", "shapes"),
    [
        ("maxplus_matmul", ad.maxplus_matmul, [(3, 4), (4, 5)]),
        ("minplus_matmul", ad.minplus_matmul, [(3, 4), (4, 5)]),
        ("dilation", ad.dilation, [(2, 5, 5), (3, 3)]),
        ("erosion", ad.erosion, [(2, 5, 5), (3, 3)]),
        ("maxplus_conv2d", lambda x, w: ad.maxplus_conv2d(x, w, padding=1), [(2, 2, 5, 5), (3, 2, 3, 3)]),
        ("maxout", lambda x: ad.maxout(x, 2), [(3, 8)]),
        ("max", lambda x: x.max(axis=0), [(3, 8)]),
        ("max_pool2d", lambda x: ad.max_pool2d(x, 2), [(2, 2, 4, 4)]),
    ],
)
def test_tropical_backward_keeps_only_the_integer_winners(name, op, shapes):
    rng = np.random.default_rng(0)
    tensors = [Tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    out = op(*tensors)
    kept = _closure_arrays(out._vjp)
    assert kept, "the winners must be kept"
    assert all(a.dtype.kind == "i" and a.size == out.size for a in kept), [(a.dtype, a.shape) for a in kept]


@pytest.mark.parametrize("case", [c for c in CASES if c.exact], ids=[c.name for c in CASES if c.exact])
def test_float32_tropical_gradients_equal_the_float64_ones(case):
    """The spaced inputs and integer upstream gradients are exact in float32, and so are max, min,
    + and the sums of a tropical backward pass: float32 must reproduce float64 bit for bit."""
    inputs, upstream = _setup(case)
    value, grads = _autodiff_grads(case, inputs, upstream)
    value32, grads32 = _autodiff_grads(
        case, [x.astype(np.float32) for x in inputs], upstream.astype(np.float32)
    )
    for actual, expected in [(value32, value), *zip(grads32, grads, strict=True)]:
        assert_identical(np.asarray(actual + 0.0), np.asarray(expected + 0.0).astype(np.float32))


_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3)


@st.composite
def broadcastable_shapes(draw):
    """Two shapes that broadcast together: a shape, and a copy with leading axes dropped and some
    axes set to 1, in either order."""
    shape = tuple(draw(_shapes))
    other = tuple(n if draw(st.booleans()) else 1 for n in shape)[draw(st.integers(0, len(shape))) :]
    return (shape, other) if draw(st.booleans()) else (other, shape)


BINARY = {
    "add": ad.add,
    "sub": ad.sub,
    "mul": ad.mul,
    "div": ad.div,
    "maximum": ad.maximum,
    "minimum": ad.minimum,
    "where": lambda x, y: ad.where(x.data > 0.5, x, y),  # no entry of a near 0.5
}


@given(shapes=broadcastable_shapes(), op=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2**16))
@hsettings(60)
def test_broadcast_gradients_match_finite_differences(shapes, op, seed):
    fn = BINARY[op]
    rng = np.random.default_rng(seed)
    # b >= 0.25 (a safe divisor) and never within 0.19 of an entry of a: a's fractional parts are
    # below 27/512, b's within 2^-12 of 0.25 or 0.75.
    a, b = spaced(rng, shapes[0]), np.asarray(np.abs(spaced(rng, shapes[1], 1)) + 0.25)
    upstream = _upstream(rng, np.broadcast_shapes(*shapes))
    tensors = [Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)]
    fn(*tensors).backward(upstream)

    def loss(x, y):
        return float(np.sum(fn(Tensor(x), Tensor(y)).data * upstream))

    for i, x in enumerate((a, b)):
        assert tensors[i].grad.shape == x.shape
        numeric = np.empty_like(x)
        for j in range(x.size):
            args = [a.copy(), b.copy()]
            args[i].flat[j] += STEP
            up = loss(*args)
            args[i].flat[j] -= 2 * STEP
            numeric.flat[j] = (up - loss(*args)) / (2 * STEP)
        np.testing.assert_allclose(tensors[i].grad, numeric, rtol=1e-5, atol=1e-6)
