"""Morphology in any number of dimensions: ``axes=``, ``origin=``, per-axis ``mode``, ``output=``,
integer and boolean images, ``morphological_laplace`` and the SciPy drop-in ``tropic.ndimage``.

References nobody here wrote: ``scipy.ndimage`` itself, and a definition built from ``np.pad`` (one
axis at a time, each with its own mode) and a loop over the element's taps in row-major order with
the documented rules (the tropical zero absorbs in a sum, strictly better wins, the first NaN
stays), independent of tropic's window
code. Gradients are checked against the same definition's scatter, and the jvp against the vjp by
duality.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi

import tropic
import tropic.core.morphology as morphology_module
from tropic import ndimage as tnd

from .helpers import assert_identical, dyadic, expected_index_dtype
from .test_morphology import NP_PAD

SCIPY_MODES = [
    "reflect",
    "mirror",
    "nearest",
    "wrap",
    "constant",
    "grid-mirror",
    "grid-constant",
    "grid-wrap",
]
SCIPY_FUNCTIONS = [
    "grey_dilation",
    "grey_erosion",
    "grey_opening",
    "grey_closing",
    "white_tophat",
    "black_tophat",
    "morphological_gradient",
    "morphological_laplace",
]


def definition(image, weights, support, axes, centres, modes, cval, dilate):
    """Values and winners of the dilation / erosion by the definition (see the module docstring)."""
    n = len(axes)
    moved = np.moveaxis(image, axes, range(image.ndim - n, image.ndim))
    shape = support.shape
    zero = -np.inf if dilate else np.inf
    padded = moved
    for d in range(n):
        k, c = shape[d], centres[d]
        before, after = (k - 1 - c, c) if dilate else (c, k - 1 - c)
        widths = [(0, 0)] * moved.ndim
        widths[moved.ndim - n + d] = (before, after)
        mode = modes[d]
        if mode in ("neutral", "constant", "grid-constant"):
            fill = zero if mode == "neutral" else cval
            padded = np.pad(padded, widths, mode="constant", constant_values=fill)
        elif padded.shape[moved.ndim - n + d] == 0:
            padded = np.pad(padded, widths, mode="constant", constant_values=zero)
        else:
            padded = np.pad(padded, widths, mode=NP_PAD[mode])
    best = np.full(moved.shape, zero, dtype=moved.dtype)
    winner = np.full(moved.shape, -1, dtype=np.int64)
    seen_nan = np.zeros(moved.shape, bool)
    lengths = moved.shape[moved.ndim - n :]
    for t, u in enumerate(itertools.product(*(range(k) for k in shape))):
        if not support[u]:
            continue
        starts = [shape[d] - 1 - u[d] if dilate else u[d] for d in range(n)]
        window = padded[(..., *(slice(s, s + L) for s, L in zip(starts, lengths, strict=True)))]
        value = window
        if weights is not None:  # the tropical product: the zero absorbs (-inf + inf is the zero)
            w = weights[u] if dilate else -weights[u]
            with np.errstate(invalid="ignore"):
                value = window + w
            absorbed = ((window == zero) & ~np.isnan(w)) | ((w == zero) & ~np.isnan(window))
            value = np.where(absorbed, zero, value)
        is_nan = np.isnan(value)
        take = ~seen_nan & (is_nan | (value > best if dilate else value < best))
        best = np.where(take, value, best)
        winner = np.where(take, t, winner)
        seen_nan |= is_nan
    back = list(range(image.ndim - n, image.ndim))
    return np.moveaxis(best, back, axes), np.moveaxis(winner, back, axes)


def definition_vjp(g, image_shape, winner, support_shape, axes, centres, modes, dilate):
    """The gradient of the definition: each output's g to the pixel its winner read, and to its tap."""
    n = len(axes)
    grad_image = np.zeros(image_shape)
    grad_element = np.zeros(support_shape)
    moved_g = np.moveaxis(g, axes, range(g.ndim - n, g.ndim))
    moved_k = np.moveaxis(winner, axes, range(g.ndim - n, g.ndim))
    moved_grad = np.moveaxis(grad_image, axes, range(g.ndim - n, g.ndim))  # a view: writes land
    lengths = moved_g.shape[g.ndim - n :]
    for index in np.ndindex(*moved_g.shape):
        t = moved_k[index]
        if t < 0:
            continue
        u = np.unravel_index(t, support_shape)
        grad_element[u] += moved_g[index] if dilate else -moved_g[index]
        source = []
        for d in range(n):
            i = index[g.ndim - n + d]
            p = i - (u[d] - centres[d]) if dilate else i + (u[d] - centres[d])
            source.append(_border(p, lengths[d], modes[d]))
        if all(s >= 0 for s in source):
            moved_grad[(*index[: g.ndim - n], *source)] += moved_g[index]
    return grad_image, grad_element


def _border(p, n, mode):
    """SciPy's extension of an axis of length ``n`` at position ``p`` (-1: outside, the fill)."""
    if 0 <= p < n:
        return p
    if mode in ("neutral", "constant", "grid-constant"):
        return -1
    if mode == "nearest":
        return min(max(p, 0), n - 1)
    if mode in ("wrap", "grid-wrap"):
        return p % n
    if mode in ("reflect", "grid-mirror"):
        q = p % (2 * n)
        return q if q < n else 2 * n - 1 - q
    if n == 1:
        return 0
    q = p % (2 * n - 2)
    return q if q < n else 2 * n - 2 - q


def random_case(seed, specials=True):
    """An image of 1 to 4 dimensions, 1 to 3 of its axes filtered in a random order, a random element
    (size, footprint, structure, structure with footprint), origin, per-axis modes and cval."""
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 5))
    shape = tuple(int(v) for v in rng.integers(1, 6, ndim))
    n = int(rng.integers(1, min(3, ndim) + 1))
    axes = tuple(int(a) for a in rng.permutation(ndim)[:n])
    axes = tuple(a - ndim if rng.random() < 0.5 else a for a in axes)
    image = rng.integers(-6, 7, shape).astype(float)
    if specials:
        image[rng.random(shape) < 0.08] = -np.inf
        image[rng.random(shape) < 0.08] = np.inf
        image[rng.random(shape) < 0.03] = np.nan
    element = tuple(int(v) for v in rng.integers(1, 5, n))
    kind = rng.choice(["size", "footprint", "structure", "both"])
    support = np.ones(element, bool) if kind in ("size", "structure") else rng.random(element) < 0.7
    structure = None
    if kind in ("structure", "both"):
        structure = rng.integers(-3, 4, element).astype(float)
        if specials:
            structure[rng.random(element) < 0.1] = -np.inf
    origin = tuple(int(rng.integers(-(k // 2), (k - 1) // 2 + 1)) for k in element)
    family = rng.choice(["neutral", "constant", "other"])
    others = ["reflect", "mirror", "nearest", "wrap", "grid-wrap", "grid-mirror"]
    modes = []
    for _ in range(n):
        if family == "neutral":
            modes.append(str(rng.choice(["neutral", *others])))
        elif family == "constant":
            modes.append(str(rng.choice(["constant", "grid-constant", *others])))
        else:
            modes.append(str(rng.choice(others)))
    kwargs = {"axes": axes, "origin": origin, "mode": modes, "cval": float(rng.integers(-3, 4))}
    if kind == "size":
        kwargs["size"] = element
    elif kind in ("footprint", "both"):
        kwargs["footprint"] = support
    return image, structure, support, kwargs


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize("seed", range(80))
def test_values_and_winners_are_the_definition_in_any_dimension(seed):
    image, structure, support, kwargs = random_case(seed)
    axes = kwargs["axes"]
    centres = [k // 2 + o for k, o in zip(support.shape, kwargs["origin"], strict=True)]
    for dilate, fn in ((True, tropic.dilation), (False, tropic.erosion)):
        values, winners = fn(image, structure, return_indices=True, **kwargs)
        want, want_winners = definition(
            image, structure, support, axes, centres, kwargs["mode"], kwargs["cval"], dilate
        )
        assert_identical(values, want)
        np.testing.assert_array_equal(winners, want_winners)
        assert winners.dtype == expected_index_dtype(support.size)
        # Without return_indices the kernels skip the winners: the same values, bit for bit.
        assert_identical(fn(image, structure, **kwargs), want)


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize("seed", range(16))
def test_long_signals_are_the_definition(seed):
    """Signals longer than the kernels' long-row threshold, where the compiled path reads the
    signal in place in column bands (the ends through a padded piece) or folds it into rows (flat
    elements of many taps, NaN): values with and without winners, every mode and origin, the rows
    of a batch, float32 and float64, against the definition."""
    from tropic.backends.numpy import kernels

    rng = np.random.default_rng(seed)
    length = kernels._LONG_ROW + int(rng.integers(0, 3000))
    dtype = np.float32 if seed % 2 else np.float64
    image = rng.integers(-50, 50, (2, length)).astype(dtype)
    if seed % 4 == 0:  # NaN and infinities somewhere (in one band, or at an end)
        image[0, int(rng.integers(0, length))] = np.nan
        image[1, :3] = np.inf
        image[1, -2:] = -np.inf
    k = int(rng.integers(1, 26))  # up to 16 flat taps read in place, more are folded
    support = rng.random(k) < 0.8 if seed % 3 == 0 else np.ones(k, bool)
    support[int(rng.integers(0, k))] = True
    structure = rng.integers(-3, 4, k).astype(dtype) if seed % 3 != 1 else None
    origin = int(rng.integers(-(k // 2), (k - 1) // 2 + 1))
    mode = str(rng.choice(["neutral", *SCIPY_MODES]))
    kwargs = {"axes": -1, "origin": origin, "mode": mode, "cval": float(rng.integers(-3, 4))}
    for dilate, fn in ((True, tropic.dilation), (False, tropic.erosion)):
        values, winners = fn(image, structure, footprint=support, return_indices=True, **kwargs)
        want, want_winners = definition(
            image, structure, support, (-1,), [k // 2 + origin], [mode], kwargs["cval"], dilate
        )
        assert_identical(values, want)
        np.testing.assert_array_equal(winners, want_winners)
        assert_identical(fn(image, structure, footprint=support, **kwargs), want)


def test_wide_images_under_a_one_row_element_are_the_definition():
    """A 2-D image wider than the long-row threshold, filtered by a 1 x k element (the column-band
    path with several rows), and by a k x 1 one (the ordinary path), against the definition."""
    from tropic.backends.numpy import kernels

    rng = np.random.default_rng(3)
    image = rng.integers(-9, 9, (3, kernels._LONG_ROW + 77)).astype(np.float32)
    for element in ((1, 5), (5, 1)):
        structure = rng.integers(-3, 4, element).astype(np.float32)
        for dilate, fn in ((True, tropic.dilation), (False, tropic.erosion)):
            values, winners = fn(image, structure, mode="wrap", origin=(0, -1 if element[1] > 1 else 0),
                                 return_indices=True)  # fmt: skip
            centres = [k // 2 + o for k, o in zip(element, (0, -1 if element[1] > 1 else 0), strict=True)]
            want, want_winners = definition(
                image, structure, np.ones(element, bool), (0, 1), centres, ["wrap"] * 2, 0.0, dilate
            )
            assert_identical(values, want)
            np.testing.assert_array_equal(winners, want_winners)


@pytest.mark.parametrize("seed", range(40))
def test_gradients_are_the_definitions_in_any_dimension(seed):
    image, structure, support, kwargs = random_case(seed + 1000, specials=False)
    if structure is None:
        structure = np.zeros(support.shape)
        kwargs.pop("size", None)
    kwargs.pop("cval")
    axes, origin, modes = kwargs["axes"], kwargs["origin"], kwargs["mode"]
    centres = [k // 2 + o for k, o in zip(support.shape, origin, strict=True)]
    rng = np.random.default_rng(seed)
    g = dyadic(rng, image.shape, np.float64)
    for dilate, fn, vjp in (
        (True, tropic.dilation, tropic.dilation_vjp),
        (False, tropic.erosion, tropic.erosion_vjp),
    ):
        _, winners = fn(image, structure, return_indices=True, **kwargs)
        want_image, want_element = definition_vjp(
            g, image.shape, winners, support.shape, axes, centres, modes, dilate
        )
        grad_image, grad_element = vjp(
            g, winners, image.shape, support.shape, mode=modes, origin=origin, axes=axes
        )
        np.testing.assert_array_equal(grad_image, want_image)
        np.testing.assert_array_equal(grad_element, want_element)
        # The jvp is the vjp's transpose: <g, J t> = <J^T g, t> for every tangent t.
        t_image, t_element = dyadic(rng, image.shape, np.float64), dyadic(rng, support.shape, np.float64)
        params = _params(fn, image, structure, kwargs)
        tangent = morphology_module._jvp(
            np, (t_image, t_element), winners, (image.shape, support.shape), **params
        )
        assert np.sum(g * tangent) == np.sum(want_image * t_image) + np.sum(want_element * t_element)


def _params(fn, image, structure, kwargs):
    semiring = tropic.MAX_PLUS if fn is tropic.dilation else tropic.MIN_PLUS
    checked = {k: v for k, v in kwargs.items() if k in ("mode", "origin", "axes")}
    _, params, _ = morphology_module.check(
        semiring,
        image,
        structure,
        kwargs.get("footprint"),
        None,
        checked["mode"],
        0.0,
        origin=checked["origin"],
        axes=checked["axes"],
    )
    return params


@pytest.mark.parametrize("seed", range(60))
def test_the_scipy_drop_in_is_scipy(seed):
    """tropic.ndimage's eight functions against scipy.ndimage's: same arguments (SciPy's defaults:
    every axis, mode="reflect"), same dtype, same bits, on float and integer images; per-axis modes
    where SciPy takes them (flat boxes); output= as an array, a dtype, and the input itself."""
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(v) for v in rng.integers(1, 7, ndim))
    dtype = [np.float64, np.float32, np.int32, np.uint8, np.int16][seed % 5]
    if np.dtype(dtype).kind == "f":
        image = rng.normal(size=shape).astype(dtype)
    else:  # values away from the dtype's ends: SciPy's C casts beyond them are undefined
        image = rng.integers(8, 60, shape).astype(dtype)
    axes = (
        None
        if rng.random() < 0.5
        else tuple(int(a) for a in rng.permutation(ndim)[: rng.integers(1, ndim + 1)])
    )
    n = ndim if axes is None else len(axes)
    element = tuple(int(v) for v in rng.integers(1, 4, n))
    kind = ["size", "footprint", "structure"][seed % 3]
    kwargs = {"origin": [int(rng.integers(-(k // 2), (k - 1) // 2 + 1)) for k in element], "cval": 4.75}
    kwargs["mode"] = str(rng.choice(SCIPY_MODES))
    if kind == "size":
        kwargs["size"] = element
        if rng.random() < 0.5:
            kwargs["mode"] = [str(m) for m in rng.choice(SCIPY_MODES, n)]
    elif kind == "footprint":
        footprint = rng.random(element) < 0.7
        footprint.flat[0] = True
        kwargs["footprint"] = footprint
    else:
        kwargs["structure"] = rng.integers(-2, 3, element).astype(float) / 2
    if axes is not None:
        kwargs["axes"] = axes
    for name in SCIPY_FUNCTIONS:
        want = getattr(ndi, name)(image, **kwargs)
        got = getattr(tnd, name)(image, **kwargs)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert_identical(got, want)
        out, scipy_out = np.empty(shape, np.float64), np.empty(shape, np.float64)
        assert getattr(tnd, name)(image, output=out, **kwargs) is out
        getattr(ndi, name)(image, output=scipy_out, **kwargs)
        assert_identical(out, scipy_out)
    for name in ("grey_dilation", "grey_erosion"):
        assert_identical(
            getattr(tnd, name)(image, output=np.float32, **kwargs),
            getattr(ndi, name)(image, output=np.float32, **kwargs),
        )
        in_place, scipy_in_place = image.copy(), image.copy()
        assert getattr(tnd, name)(in_place, output=in_place, **kwargs) is in_place
        getattr(ndi, name)(scipy_in_place, output=scipy_in_place, **kwargs)
        assert_identical(in_place, scipy_in_place)


@pytest.mark.parametrize("name", SCIPY_FUNCTIONS)
def test_boolean_images_as_scipy(name):
    """Boolean images keep their dtype; the top-hats are xor (SciPy's rule); the gradient and the
    Laplacian of booleans raise as NumPy's boolean subtraction does."""
    image = np.random.default_rng(3).random((7, 6)) < 0.4
    try:
        want = getattr(ndi, name)(image, size=(3, 2))
    except TypeError:
        with pytest.raises(TypeError):
            getattr(tnd, name)(image, size=(3, 2))
        return
    got = getattr(tnd, name)(image, size=(3, 2))
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, want)


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.bool_]
)
def test_integer_images_are_filtered_exactly(dtype):
    rng = np.random.default_rng(0)
    if dtype is np.bool_:
        image = rng.random((3, 9, 8)) < 0.3
    else:
        info = np.iinfo(dtype)  # int64: within ±2**53, the values float64 holds (beyond: an error)
        low, high = max(int(info.min), -(2**53)), min(int(info.max), 2**53)
        image = rng.integers(low, high, (3, 9, 8), dtype=dtype, endpoint=True)
    as_float = image.astype(np.float64)
    for fn in (tropic.dilation, tropic.erosion):
        flat = fn(image, size=(2, 3), mode="reflect")
        assert flat.dtype == image.dtype
        np.testing.assert_array_equal(flat, fn(as_float, size=(2, 3), mode="reflect").astype(dtype))
        s = rng.integers(-2, 3, (3, 3)).astype(np.float32)
        weighted = fn(image, s, mode="nearest")
        expected_dtype = np.float32 if image.dtype.itemsize <= 2 else np.float64
        assert weighted.dtype == expected_dtype
        np.testing.assert_array_equal(weighted, fn(as_float, s.astype(np.float64), mode="nearest"))
    # No candidate (a footprint off the image in "neutral" mode): the dtype's end, not a wrapped inf.
    lone = np.zeros((2, 2), bool)
    lone[1, 1] = True  # with the origin at tap (0, 0): reads f(i - 1, j - 1)
    shifted = tropic.dilation(image, footprint=lone, origin=(-1, -1))
    low = False if dtype is np.bool_ else np.iinfo(dtype).min
    assert shifted.dtype == image.dtype
    assert (shifted[..., 0, :] == low).all() and (shifted[..., :, 0] == low).all()
    np.testing.assert_array_equal(shifted[..., 1:, 1:], image[..., :-1, :-1])


def test_64_bit_integers_beyond_float64_raise():
    with pytest.raises(ValueError, match=r"image.*2\*\*53"):
        tropic.erosion(np.array([[2**53 + 1, 0]], np.int64), size=(1, 2))
    eroded = tropic.erosion(np.array([[2**53, 1]], np.int64), size=(1, 2))  # min(f(j - 1), f(j))
    np.testing.assert_array_equal(eroded, np.array([[2**53, 1]], np.int64))


def test_one_and_three_dimensional_layers_of_the_batch_convention():
    """axes picks the filtered axes; the others stay a batch (here: signals, then channel volumes)."""
    rng = np.random.default_rng(1)
    signals = rng.normal(size=(4, 50))
    s = rng.normal(size=7)
    for i in range(4):
        assert_identical(
            tropic.dilation(signals, s, axes=-1, mode="reflect")[i],
            ndi.grey_dilation(signals[i], structure=s, mode="reflect"),
        )
    volumes = rng.normal(size=(2, 3, 6, 5, 7))
    s3 = rng.normal(size=(3, 2, 3))
    got = tropic.erosion(volumes, s3, axes=(-3, -2, -1), mode="wrap")
    for b, c in np.ndindex(2, 3):
        assert_identical(got[b, c], ndi.grey_erosion(volumes[b, c], structure=s3, mode="wrap"))
    # One element per channel: the axis before the filtered ones.
    per_channel = rng.normal(size=(3, 3, 2, 3))
    got = tropic.dilation(volumes, per_channel, axes=(-3, -2, -1), mode="nearest")
    for b, c in np.ndindex(2, 3):
        assert_identical(
            got[b, c], ndi.grey_dilation(volumes[b, c], structure=per_channel[c], mode="nearest")
        )


def test_size_longer_than_the_image_with_an_origin_in_any_dimension():
    """A flat box far longer than the image is cut down to the taps that can win: the same values,
    winners and gradients as the whole footprint, with an origin, in 1-D and 3-D."""
    rng = np.random.default_rng(2)
    for shape, size, axes, origin in (
        ((3, 4), (40,), (-1,), (-15,)),
        ((3, 4, 2), (30, 2, 25), (0, 1, 2), (10, 0, -12)),
    ):
        image = rng.integers(-3, 4, shape).astype(float)
        for mode in ("reflect", "mirror", "wrap", "nearest", "constant", "neutral"):
            for fn, vjp in ((tropic.dilation, tropic.dilation_vjp), (tropic.erosion, tropic.erosion_vjp)):
                cut, cut_winners = fn(
                    image, size=size, axes=axes, origin=origin, mode=mode, return_indices=True
                )
                whole, winners = fn(
                    image,
                    footprint=np.ones(size, bool),
                    axes=axes,
                    origin=origin,
                    mode=mode,
                    return_indices=True,
                )
                assert_identical(cut, whole)
                np.testing.assert_array_equal(cut_winners, winners)
                g = dyadic(rng, image.shape, np.float64)
                grads = vjp(g, winners, image.shape, size, mode=mode, origin=origin, axes=axes)
                centres = [k // 2 + o for k, o in zip(size, origin, strict=True)]
                modes = [mode] * len(size)
                want = definition_vjp(
                    g, image.shape, winners, size, axes, centres, modes, fn is tropic.dilation
                )
                np.testing.assert_array_equal(grads[0], want[0])
                np.testing.assert_array_equal(grads[1], want[1])


def test_every_place_filters_any_axes(place):
    """NumPy (compiled and not), array-api-strict, tropic.autodiff and torch: the 1-D and 3-D
    morphology of the same arrays, bitwise, and differentiable where the place is."""
    rng = np.random.default_rng(4)
    image = rng.integers(-5, 6, (2, 5, 4, 6)).astype(float)
    structure = rng.integers(-2, 3, (3, 2, 3)).astype(float)
    for fn, kwargs in (
        (tropic.dilation, {"axes": (1, 2, 3), "mode": ["reflect", "wrap", "nearest"], "origin": (1, 0, -1)}),
        (tropic.erosion, {"axes": (-3, -1, -2), "mode": "constant", "cval": 2.0}),
    ):
        want = fn(image, structure, **kwargs)
        got = fn(place.array(image), place.array(structure), **kwargs)
        assert_identical(place.numpy(got), want)
    signal = rng.normal(size=(3, 40))
    want = tropic.erosion(signal, size=5, axes=-1, origin=2, mode="mirror")
    assert_identical(
        place.numpy(tropic.erosion(place.array(signal), size=5, axes=-1, origin=2, mode="mirror")), want
    )


def test_gradients_through_engines_in_3d(gradient_place):
    rng = np.random.default_rng(5)
    image = rng.integers(-5, 6, (2, 4, 3, 5)).astype(float)
    structure = rng.integers(-2, 3, (2, 3, 2)).astype(float)
    kwargs = {"axes": (1, 2, 3), "mode": ["reflect", "nearest", "wrap"], "origin": (0, -1, 0)}
    values, winners = tropic.dilation(image, structure, return_indices=True, **kwargs)
    g = dyadic(rng, values.shape, np.float64)
    want = tropic.dilation_vjp(g, winners, image.shape, structure.shape, **kwargs)
    leaves = [gradient_place.leaf(image), gradient_place.leaf(structure)]
    out = tropic.dilation(*leaves, **kwargs)
    for got, expected in zip(gradient_place.backward(out, g, leaves), want, strict=True):
        assert_identical(got, expected)


def test_morphological_laplace_is_the_difference_of_the_gradients():
    rng = np.random.default_rng(6)
    image = rng.normal(size=(9, 8))
    s = rng.normal(size=(3, 3))
    lap = tropic.morphological_laplace(image, s, mode="reflect")
    external = tropic.dilation(image, s, mode="reflect") - image
    internal = image - tropic.erosion(image, s, mode="reflect")
    np.testing.assert_allclose(lap, external - internal, rtol=0, atol=1e-12)
    assert_identical(lap, ndi.morphological_laplace(image, structure=s, mode="reflect"))


def test_output_argument_of_the_core_functions():
    image = np.arange(20.0).reshape(4, 5)
    out = np.empty_like(image)
    assert tropic.dilation(image, size=3, output=out) is out
    assert_identical(out, tropic.dilation(image, size=3))
    assert tropic.opening(image, size=3, output=image) is image  # in place
    assert tropic.closing(np.arange(4.0), size=3, axes=0, output=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="output"):
        tropic.erosion(image, size=3, output=np.empty((2, 2)))


BAD_CALLS = {
    "axis out of range": (lambda: tropic.dilation(np.zeros((3, 4)), size=3, axes=2), ValueError, "axes"),
    "repeated axis": (lambda: tropic.dilation(np.zeros((3, 4)), size=3, axes=(0, -2)), ValueError, "axes"),
    "float axis": (lambda: tropic.dilation(np.zeros((3, 4)), size=3, axes=1.0), TypeError, "axes"),
    "origin outside": (lambda: tropic.dilation(np.zeros((3, 4)), size=3, origin=2), ValueError, "origin"),
    "origin length": (
        lambda: tropic.erosion(np.zeros((3, 4)), size=3, origin=(0, 0, 0)),
        TypeError,
        "origin",
    ),
    "mode length": (lambda: tropic.erosion(np.zeros((3, 4)), size=3, mode=["reflect"]), ValueError, "mode"),
    "mode entry": (lambda: tropic.erosion(np.zeros((3, 4)), size=3, mode=["reflect", 3]), ValueError, "mode"),
    "neutral with constant": (
        lambda: tropic.erosion(np.zeros((3, 4)), size=3, mode=["neutral", "constant"]),
        ValueError,
        "mode",
    ),
    "structure rank": (
        lambda: tropic.dilation(np.zeros((3, 4, 5)), np.zeros((2, 2)), axes=(0, 1, 2)),
        ValueError,
        "structure",
    ),
    "footprint rank": (
        lambda: tropic.dilation(np.zeros((3, 4)), footprint=np.ones(3, bool), axes=(0, 1)),
        ValueError,
        "footprint",
    ),
    "size length": (lambda: tropic.dilation(np.zeros((3, 4)), size=(3, 3), axes=0), TypeError, "size"),
    "channels": (lambda: tropic.dilation(np.zeros((2, 4, 5)), np.zeros((3, 2, 2))), ValueError, "channel"),
    "1-D image, default axes": (lambda: tropic.dilation(np.zeros(5), size=3), ValueError, "axes=-1"),
    "scipy all-zero footprint": (
        lambda: tnd.grey_dilation(np.zeros(5), footprint=[0, 0]),
        ValueError,
        "footprint",
    ),
    "scipy nothing": (lambda: tnd.grey_erosion(np.zeros(5)), ValueError, "size, footprint, or structure"),
    "vjp axes": (
        lambda: tropic.dilation_vjp(np.zeros((4, 5)), np.zeros((4, 5), np.int8), (4, 5), (3,), axes=(0, 1)),
        ValueError,
        "se_shape",
    ),
}


@pytest.mark.parametrize(("call", "error", "name"), list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_arguments_name_themselves(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_scipy_size_with_footprint_warns_and_uses_the_footprint():
    image = np.arange(12.0).reshape(3, 4)
    with pytest.warns(UserWarning, match="ignoring size"):
        got = tnd.grey_opening(image, size=5, footprint=np.ones((1, 2), bool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_identical(got, ndi.grey_opening(image, size=5, footprint=np.ones((1, 2), bool)))
    assert math.isclose(
        float(got.sum()), float(ndi.grey_opening(image, footprint=np.ones((1, 2), bool)).sum())
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.bool_])
@pytest.mark.parametrize("name", SCIPY_FUNCTIONS)
def test_the_scipy_drop_in_wraps_integer_sums_as_scipy(dtype, name):
    """Candidates ``f + s`` beyond an integer dtype's range: SciPy's C loop sums the first candidate
    in double precision and the others in the image's dtype (wrapping), and stores the result with a
    C cast (a boolean image is summed as bytes and keeps the byte). Same bytes here."""
    rng = np.random.default_rng(7)
    if dtype is np.bool_:
        image = rng.random((6, 7)) < 0.5
    else:
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, (6, 7), endpoint=True).astype(dtype)
    structure = rng.integers(-3, 4, (3, 2)).astype(float)
    for mode in ("reflect", "constant"):
        try:
            want = getattr(ndi, name)(image, structure=structure, mode=mode, cval=2.0)
        except TypeError:  # NumPy has no boolean subtraction (the gradient and the Laplacian)
            with pytest.raises(TypeError):
                getattr(tnd, name)(image, structure=structure, mode=mode, cval=2.0)
            continue
        got = getattr(tnd, name)(image, structure=structure, mode=mode, cval=2.0)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(np.uint8) if dtype is np.bool_ else got,
                                      want.view(np.uint8) if dtype is np.bool_ else want)  # fmt: skip
