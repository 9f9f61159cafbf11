"""Tests of grey-level morphology: ``dilation``, ``erosion``, their compositions and their vjps.

References nobody here wrote: ``scipy.ndimage`` (``grey_dilation`` & co., applied image by image over
the batch axes), a naive formula built from the definition with ``np.pad`` for the borders (and its
torch autograd for the subgradients), central finite differences, and the lattice identities of
mathematical morphology. The NumPy backend is held bitwise to the core reference kernel, values and
winners, both through the public API (NumPy arrays vs array-api-strict arrays) and by running the
two kernels on the very arguments ``_morphology`` builds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tropic
import tropic.core.morphology as morphology_module

from .helpers import assert_identical, to_numpy

# Every test runs on the compiled kernels and on the NumPy path (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_path")

OPS = ["dilation", "erosion", "opening", "closing", "morphological_gradient", "white_tophat", "black_tophat"]
SCIPY_OPS = {
    "dilation": ndi.grey_dilation,
    "erosion": ndi.grey_erosion,
    "opening": ndi.grey_opening,
    "closing": ndi.grey_closing,
    "morphological_gradient": ndi.morphological_gradient,
    "white_tophat": ndi.white_tophat,
    "black_tophat": ndi.black_tophat,
}
SCIPY_MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
SCIPY_MODES += ["grid-mirror", "grid-constant", "grid-wrap"]  # SciPy's aliases
ALL_MODES = ["neutral", *SCIPY_MODES]
# SciPy's modes as np.pad modes: an extension of the image written independently of tropic.
NP_PAD = {
    "reflect": "symmetric",
    "grid-mirror": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "grid-wrap": "wrap",
}

# Hypothesis runs a fixture-parametrised test once per library; the fixture returns a module.
XP_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

INTS = st.integers(-8, 8).map(float)
SE_VALUES = st.one_of(st.integers(-4, 4).map(float), st.just(-math.inf))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def scipy_apply(name, image, **kwargs):
    """SciPy's operator applied to every 2-D image of a batch."""
    out = np.empty_like(image)
    for index in np.ndindex(*image.shape[:-2]):
        out[index] = SCIPY_OPS[name](image[index], **kwargs)
    return out


def random_footprint(rng, shape, density=0.6):
    """A random boolean mask with holes and at least one tap (SciPy refuses an all-zero footprint)."""
    mask = rng.random(shape) < density
    mask.flat[rng.integers(mask.size)] = True
    return mask


def element_kwargs(rng, kind, shape, dtype, integer=True):
    """Keyword arguments (structure= / footprint= / size=) of a random structuring element."""
    if integer:
        s = rng.integers(-4, 5, shape).astype(dtype)
    else:
        s = rng.normal(size=shape).astype(dtype)
    if kind == "structure":
        return {"structure": s}
    if kind == "footprint":
        return {"footprint": random_footprint(rng, shape)}
    if kind == "both":
        return {"structure": s, "footprint": random_footprint(rng, shape)}
    return {"size": tuple(int(n) for n in shape)}


def is_strict(xs, x):
    """Whether ``x`` is an array-api-strict array."""
    return type(x) is type(xs.asarray(0.0))


def with_xp(xp, kwargs):
    """The same keyword arguments with ``structure`` converted to library ``xp``."""
    out = dict(kwargs)
    if out.get("structure") is not None:
        out["structure"] = xp.asarray(out["structure"])
    return out


def padded_index(n, k, reflected, mode):
    """Source index of every position of an axis of length ``n`` padded for a window of ``k``.

    Dilation reads ``f(i - (u - k // 2))``, erosion ``f(i + (u - k // 2))``; ``-1`` is outside (the fill).
    """
    centre = k // 2
    before, after = (k - 1 - centre, centre) if reflected else (centre, k - 1 - centre)
    if mode in ("neutral", "constant", "grid-constant"):
        return np.pad(np.arange(n), (before, after), constant_values=-1)
    return np.pad(np.arange(n), (before, after), mode=NP_PAD[mode])


def naive_candidates(f, s, op, mode, cval=0.0, footprint=None):
    """Candidates ``(T, ..., H, W)`` of ``op`` in increasing flat tap order, straight from the definition.

    Works on NumPy arrays and on torch tensors (so that torch autograd differentiates it). Plain IEEE
    ``+``: no absorbing rule, so use it with finite structures. Returns the stack and the flat taps.
    """
    is_torch = not isinstance(f, np.ndarray)
    dilate = op == "dilation"
    kh, kw = s.shape
    H, W = f.shape[-2:]
    fill = (-math.inf if dilate else math.inf) if mode == "neutral" else cval
    if is_torch:
        import torch

        def full(shape):
            return torch.full(shape, fill, dtype=f.dtype)

        cat, stack = torch.cat, torch.stack

        def index(a):
            return torch.as_tensor(a)
    else:

        def full(shape):
            return np.full(shape, fill, f.dtype)

        cat, stack = np.concatenate, np.stack

        def index(a):
            return a

    # A trailing fill row and column: source index -1 reads the fill.
    ext = cat([f, full((*f.shape[:-1], 1))], -1)
    ext = cat([ext, full((*ext.shape[:-2], 1, W + 1))], -2)
    rows = index(padded_index(H, kh, dilate, mode))
    cols = index(padded_index(W, kw, dilate, mode))
    padded = ext[..., rows, :][..., :, cols]
    taps = [t for t in range(kh * kw) if footprint is None or footprint.flat[t]]
    candidates = []
    for t in taps:
        u, v = divmod(t, kw)
        r, c = (kh - 1 - u, kw - 1 - v) if dilate else (u, v)
        window = padded[..., r : r + H, c : c + W]
        candidates.append(window + s[u, v] if dilate else window - s[u, v])
    return stack(candidates), np.asarray(taps)


def naive_winners(f, s, op, mode, cval=0.0, footprint=None):
    """Values and lowest winning flat tap of the naive formula (NumPy; NaN dominates, first NaN wins)."""
    cand, taps = naive_candidates(f, s, op, mode, cval, footprint)
    best = cand.max(axis=0) if op == "dilation" else cand.min(axis=0)
    first = np.argmax((cand == best) | np.isnan(cand), axis=0)  # first NaN if any (then best is NaN)
    nan = np.isnan(cand).any(axis=0)
    first = np.where(nan, np.argmax(np.isnan(cand), axis=0), first)
    zero = -math.inf if op == "dilation" else math.inf
    return best, np.where(best == zero, -1, taps[first])  # only zero candidates: no winner


@pytest.fixture
def kernel_pairs(monkeypatch):
    """Run the NumPy kernel and the core reference on exactly the arguments ``_morphology`` builds.

    Whatever the internal argument format, both kernels get the same call; the fixture records
    ``(kernel result, reference result)`` for the forward and the vjp.
    """
    pairs = []
    real = morphology_module.kernel_for
    references = {
        "morphology": morphology_module.morphology_reference,
        "morphology_vjp": morphology_module.morphology_vjp_reference,
    }

    def spy(operator, xp):
        kernel = real(operator, xp)
        if kernel is None or operator not in references:
            return kernel

        def both(*args):
            reference = references[operator](*args)
            result = kernel(*args)
            pairs.append((result, reference))
            return result

        return both

    monkeypatch.setattr(morphology_module, "kernel_for", spy)
    return pairs


def assert_pairs_identical(pairs):
    assert pairs, "the NumPy kernel was not called"
    for result, reference in pairs:
        assert len(result) == len(reference) == 2
        for got, expected in zip(result, reference, strict=True):
            assert_identical(got, expected)


# ----------------------------------------------------------------------------------------------
# 1. SciPy
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SCIPY_MODES)
@pytest.mark.parametrize("name", OPS)
def test_matches_scipy_random_shapes(name, mode):
    """Every operator equals scipy.ndimage bitwise, for every SciPy mode, element kind and float dtype.

    Random shapes, structuring elements up to 8x8 (often larger than the image), footprints with
    holes and even sizes; float64 with arbitrary normal data (f + s rounds the same in both), float32
    with dyadic data and an integer structure (SciPy adds in double precision internally).
    """
    rng = np.random.default_rng([OPS.index(name), SCIPY_MODES.index(mode)])
    for case in range(6):
        batch = [(), (2,), (2, 1)][case % 3]
        H, W = (int(n) for n in rng.integers(1, 8, 2))
        shape = tuple(int(n) for n in rng.integers(1, 9, 2))
        cval = float(rng.integers(-5, 6)) / 2
        for dtype in (np.float64, np.float32):
            integer = dtype == np.float32
            if integer:
                image = (rng.integers(-32, 33, (*batch, H, W)) / 4).astype(dtype)  # dyadic
            else:
                image = rng.normal(size=(*batch, H, W)) * 4
            for kind in ("structure", "footprint", "both", "size"):
                kwargs = element_kwargs(rng, kind, shape, dtype, integer)
                expected = scipy_apply(name, image, mode=mode, cval=cval, **kwargs)
                got = getattr(tropic, name)(image, mode=mode, cval=cval, **kwargs)
                assert_identical(got, expected)


FOOTPRINTS = {
    "2x4-holes": np.array([[1, 0, 1, 1], [0, 1, 1, 0]], bool),
    "3x3-ring": np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool),
    "1x4": np.ones((1, 4), bool),
    "4x1-holes": np.array([[1], [0], [0], [1]], bool),
    "5x5-cross": np.add.outer(np.arange(5) == 2, np.arange(5) == 2),
    "6x2-sparse": np.array([[0, 1], [0, 0], [0, 0], [1, 0], [0, 0], [0, 1]], bool),
}


@pytest.mark.parametrize("mode", SCIPY_MODES)
@pytest.mark.parametrize("footprint", list(FOOTPRINTS.values()), ids=list(FOOTPRINTS))
def test_matches_scipy_listed_footprints(footprint, mode):
    """Even-sized and holed footprints, flat and with a structure, on images smaller than the element."""
    rng = np.random.default_rng(sum(footprint.shape) + SCIPY_MODES.index(mode))
    s = rng.integers(-3, 4, footprint.shape).astype(float)
    for image in (rng.normal(size=(2, 6, 5)), rng.normal(size=(1, 2)), rng.normal(size=(3, 1))):
        for name in ("dilation", "erosion", "opening", "closing"):
            for kwargs in ({"footprint": footprint}, {"structure": s, "footprint": footprint}):
                expected = scipy_apply(name, image, mode=mode, cval=1.5, **kwargs)
                assert_identical(getattr(tropic, name)(image, mode=mode, cval=1.5, **kwargs), expected)


@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_neutral_mode_is_scipy_constant_with_infinite_cval(op):
    """The default border ("neutral") is SciPy's constant mode, cval -inf (dilation) / +inf (erosion)."""
    rng = np.random.default_rng(7)
    cval = -math.inf if op == "dilation" else math.inf
    for shape in ((3, 3), (2, 4), (7, 6), (1, 5)):
        image = rng.normal(size=(2, 5, 4))
        s = rng.normal(size=shape)
        for kwargs in ({"structure": s}, {"footprint": random_footprint(rng, shape)}, {"size": shape}):
            expected = scipy_apply(op, image, mode="constant", cval=cval, **kwargs)
            assert_identical(getattr(tropic, op)(image, **kwargs), expected)


@pytest.mark.parametrize("name", ["dilation", "erosion", "opening", "white_tophat"])
def test_matches_scipy_on_array_api_strict(name):
    """The reference path (array-api-strict arrays) gives SciPy's results too, as array-api-strict arrays."""
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    rng = np.random.default_rng(11)
    for mode, kind, shape in (
        ("reflect", "structure", (3, 2)),
        ("wrap", "footprint", (4, 3)),
        ("constant", "both", (2, 5)),
        ("mirror", "size", (3, 3)),
    ):
        image = rng.normal(size=(2, 4, 5))
        kwargs = element_kwargs(rng, kind, shape, np.float64, integer=False)
        got = getattr(tropic, name)(xs.asarray(image), mode=mode, cval=-0.5, **with_xp(xs, kwargs))
        assert is_strict(xs, got)
        assert_identical(got, scipy_apply(name, image, mode=mode, cval=-0.5, **kwargs))


def test_signed_zero_ties_agree_with_scipy_in_value():
    """With ±0 ties the sign of zero follows tropic's tie order, not SciPy's, but the values are equal."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        image = rng.choice([0.0, -0.0, 1.0], (4, 5))
        footprint = random_footprint(rng, (3, 2))
        for op in ("dilation", "erosion"):
            for mode in ("reflect", "constant"):
                expected = SCIPY_OPS[op](image, footprint=footprint, mode=mode)
                got = getattr(tropic, op)(image, footprint=footprint, mode=mode)
                np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------------------------
# 2. Lattice identities (hypothesis, NumPy backend and the reference path)
# ----------------------------------------------------------------------------------------------


@st.composite
def images(draw, elements=INTS, batch=True):
    shape = draw(st.sampled_from([(), (2,)])) if batch else ()
    shape += (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return draw(hnp.arrays(np.float64, shape, elements=elements))


@st.composite
def structuring_elements(draw, odd=False, values=SE_VALUES):
    """Keyword arguments of a structuring element (NumPy structure; see with_xp), up to 5x5."""
    side = st.sampled_from([1, 3, 5]) if odd else st.integers(1, 5)
    shape = (draw(side), draw(side))
    kind = draw(st.sampled_from(["structure", "footprint", "both", "size"]))
    if kind == "size":
        return {"size": shape}
    footprint = draw(hnp.arrays(np.bool_, shape))
    structure = draw(hnp.arrays(np.float64, shape, elements=values))
    if kind == "footprint":
        return {"footprint": footprint}
    if kind == "structure":
        return {"structure": structure}
    return {"structure": structure, "footprint": footprint}


def call(xp, name, image, se, **kwargs):
    """Run ``tropic.<name>`` on library ``xp`` and return NumPy."""
    out = getattr(tropic, name)(xp.asarray(image), **with_xp(xp, se), **kwargs)
    return to_numpy(out)


@XP_SETTINGS
@given(f=images(), se=structuring_elements(), perturbation=st.data())
def test_adjunction(xp, f, se, perturbation):
    """dilation(f, s) <= g  <=>  f <= erosion(g, s), for g near dilation(f) (both answers occur)
    and for a random g."""
    d = call(xp, "dilation", f, se)
    steps = st.sampled_from([-1.0, 0.0, 0.0, 2.0])
    noise = perturbation.draw(hnp.arrays(np.float64, f.shape, elements=steps))
    near = np.where(np.isfinite(d), d + noise, noise)
    far = perturbation.draw(hnp.arrays(np.float64, f.shape, elements=INTS))
    for g in (near, far):
        assert np.all(d <= g) == np.all(f <= call(xp, "erosion", g, se))


@XP_SETTINGS
@given(f=images(), g=st.data(), se=structuring_elements())
def test_distributivity(xp, f, g, se):
    """Dilation distributes over pointwise max, erosion over pointwise min."""
    g = g.draw(hnp.arrays(np.float64, f.shape, elements=INTS))
    np.testing.assert_array_equal(
        call(xp, "dilation", np.maximum(f, g), se),
        np.maximum(call(xp, "dilation", f, se), call(xp, "dilation", g, se)),
    )
    np.testing.assert_array_equal(
        call(xp, "erosion", np.minimum(f, g), se),
        np.minimum(call(xp, "erosion", f, se), call(xp, "erosion", g, se)),
    )


@XP_SETTINGS
@given(f=images(), se=structuring_elements(), c=st.integers(-16, 16).map(float))
def test_translation_invariance_exact(xp, f, se, c):
    """op(f + c) == op(f) + c exactly for integer data, for dilation, erosion, opening and closing."""
    for name in ("dilation", "erosion", "opening", "closing"):
        np.testing.assert_array_equal(call(xp, name, f + c, se), call(xp, name, f, se) + c)


FLOATS = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@XP_SETTINGS
@given(
    f=images(elements=FLOATS),
    se=structuring_elements(values=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)),
    c=FLOATS,
)
def test_translation_invariance_floats(xp, f, se, c):
    """op(f + c) ≈ op(f) + c for arbitrary floats (|x| <= 1e3).

    Each side rounds at most twice at a magnitude below M = max|f| + |c| + max|s| <= 3e3, and
    max/min are 1-Lipschitz, so the sides differ by a few ulps of M: rtol 1e-12 and atol 1e-12 * M
    in float64 (about 4500 ulps of slack).
    """
    structure = se.get("structure")
    scale = np.max(np.abs(f)) + abs(c) + (0.0 if structure is None else np.max(np.abs(structure)))
    for name in ("dilation", "erosion"):
        np.testing.assert_allclose(
            call(xp, name, f + c, se), call(xp, name, f, se) + c, rtol=1e-12, atol=1e-12 * scale
        )


@XP_SETTINGS
@given(f=images(), se=structuring_elements())
def test_opening_anti_extensive_closing_extensive_idempotent(xp, f, se):
    """opening(f) <= f <= closing(f), and opening and closing are idempotent."""
    opened, closed = call(xp, "opening", f, se), call(xp, "closing", f, se)
    assert np.all(opened <= f)
    assert np.all(f <= closed)
    np.testing.assert_array_equal(call(xp, "opening", opened, se), opened)
    np.testing.assert_array_equal(call(xp, "closing", closed, se), closed)


@XP_SETTINGS
@given(f=images(), data=st.data(), se=structuring_elements())
def test_monotonicity(xp, f, data, se):
    """f <= g implies op(f) <= op(g) for dilation, erosion, opening and closing."""
    g = f + data.draw(hnp.arrays(np.float64, f.shape, elements=st.integers(0, 3).map(float)))
    for name in ("dilation", "erosion", "opening", "closing"):
        assert np.all(call(xp, name, f, se) <= call(xp, name, g, se))


def reflected(se):
    """The element reflected through its centre (odd sizes): s[::-1, ::-1], footprint likewise."""
    return {k: (v[::-1, ::-1].copy() if k in ("structure", "footprint") else v) for k, v in se.items()}


@XP_SETTINGS
@given(f=images(), se=structuring_elements(odd=True), mode=st.sampled_from(ALL_MODES))
def test_duality(xp, f, se, mode):
    """erosion(f, s) == -dilation(-f, s[::-1, ::-1]) (odd sizes), flat and non-flat, in every mode.

    The border value is negated too: cval -> -cval; "neutral" pads with +inf and -(-inf) alike.
    """
    got = call(xp, "erosion", f, se, mode=mode, cval=1.0)
    np.testing.assert_array_equal(got, -call(xp, "dilation", -f, reflected(se), mode=mode, cval=-1.0))


@XP_SETTINGS
@given(f=images(), se=structuring_elements(), mode=st.sampled_from(ALL_MODES))
def test_duality_even_sizes_by_odd_embedding(xp, f, se, mode):
    """Even sizes: with centre k // 2 the offsets are -k/2 .. k/2 - 1, so appending a -inf row/column
    gives an odd element with the same result; duality then holds with its reflection."""
    if "size" in se:
        se = {"footprint": np.ones(se["size"], bool)}
    some = se.get("structure", se.get("footprint"))
    kh, kw = some.shape
    odd = {}
    if "structure" in se:
        odd["structure"] = np.full((kh | 1, kw | 1), -math.inf)
        odd["structure"][:kh, :kw] = se["structure"]
    if "footprint" in se:
        odd["footprint"] = np.zeros((kh | 1, kw | 1), bool)
        odd["footprint"][:kh, :kw] = se["footprint"]
    for name in ("dilation", "erosion"):
        np.testing.assert_array_equal(
            call(xp, name, f, odd, mode=mode, cval=2.0), call(xp, name, f, se, mode=mode, cval=2.0)
        )
    got = call(xp, "erosion", f, se, mode=mode, cval=2.0)
    np.testing.assert_array_equal(got, -call(xp, "dilation", -f, reflected(odd), mode=mode, cval=-2.0))


# ----------------------------------------------------------------------------------------------
# 3. NumPy backend vs the core reference, values and winners
# ----------------------------------------------------------------------------------------------

# Few distinct values make ties common; infinities exercise absorption, NaN the NaN rule.
TIE_VALUES = st.sampled_from([0.0, 1.0, 2.0, -math.inf, math.inf])
SPECIAL_VALUES = st.sampled_from([0.0, 1.0, 2.0, -math.inf, math.inf, math.nan])


def check_numpy_vs_reference(xs, kernel_pairs, image, se, mode, op):
    got = getattr(tropic, op)(image, **se, mode=mode, cval=1.0, return_indices=True)
    strict_se = with_xp(xs, se)
    expected = getattr(tropic, op)(xs.asarray(image), **strict_se, mode=mode, cval=1.0, return_indices=True)
    assert isinstance(got[0], np.ndarray)
    assert is_strict(xs, expected[0])
    for a, b in zip(got, expected, strict=True):
        assert_identical(a, b)
    assert_pairs_identical(kernel_pairs)
    kernel_pairs.clear()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    image=images(elements=TIE_VALUES),
    se=structuring_elements(values=TIE_VALUES),
    mode=st.sampled_from(ALL_MODES),
    op=st.sampled_from(["dilation", "erosion"]),
)
def test_numpy_matches_reference_ties_and_infinities(kernel_pairs, image, se, mode, op):
    """Values and winners bitwise: many ties, ±inf in image and structure (absorption), all-zero windows."""
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    check_numpy_vs_reference(xs, kernel_pairs, image, se, mode, op)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    image=images(elements=SPECIAL_VALUES),
    se=structuring_elements(values=SPECIAL_VALUES),
    mode=st.sampled_from(ALL_MODES),
    op=st.sampled_from(["dilation", "erosion"]),
)
def test_numpy_matches_reference_nan(kernel_pairs, image, se, mode, op):
    """Values and winners bitwise with NaN in the image and the structure (first NaN candidate wins)."""
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    check_numpy_vs_reference(xs, kernel_pairs, image, se, mode, op)


@pytest.mark.parametrize("mode", ["neutral", "reflect", "constant"])
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_numpy_matches_reference_signed_zero_ties(kernel_pairs, op, mode):
    """On a tie between 0.0 and -0.0 the output is the winner's value (its sign too), on every backend."""
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    rng = np.random.default_rng(len(mode))
    for case in range(30):
        image = rng.choice([0.0, -0.0, 1.0], (int(rng.integers(1, 4)), int(rng.integers(1, 12))))
        shape = tuple(int(n) for n in rng.integers(1, 4, 2))
        se = [
            {"size": shape},
            {"footprint": random_footprint(rng, shape)},
            {"structure": rng.choice([0.0, -0.0], shape)},
        ][case % 3]
        check_numpy_vs_reference(xs, kernel_pairs, image, se, mode, op)


@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_numpy_matches_reference_large_batch_and_element(kernel_pairs, op):
    """A larger case (blocks, batch folding): 3x2 images of 17x23 with a 7x6 element, every mode."""
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    rng = np.random.default_rng(3)
    image = rng.integers(-3, 4, (3, 2, 17, 23)).astype(np.float32)
    structure = rng.integers(-1, 2, (7, 6)).astype(np.float32)
    se = {"structure": structure, "footprint": random_footprint(rng, (7, 6))}
    for mode in ALL_MODES:
        check_numpy_vs_reference(xs, kernel_pairs, image, se, mode, op)


@pytest.mark.parametrize("mode", ["neutral", "reflect", "mirror", "nearest", "wrap", "constant"])
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_ties_lowest_flat_index_wins(op, mode):
    """The winner is the lowest flat tap index among the candidates attaining the result (naive check)."""
    rng = np.random.default_rng(len(mode))
    for shape in ((3, 3), (2, 4), (5, 2)):
        image = rng.integers(0, 2, (2, 5, 6)).astype(float)
        footprint = random_footprint(rng, shape)
        s = rng.integers(0, 2, shape).astype(float)
        for kwargs in ({"footprint": footprint}, {"structure": s}, {"structure": s, "footprint": footprint}):
            values, winners = getattr(tropic, op)(image, **kwargs, mode=mode, cval=1.0, return_indices=True)
            structure = kwargs.get("structure", np.zeros(shape))
            best, first = naive_winners(image, structure, op, mode, 1.0, kwargs.get("footprint"))
            np.testing.assert_array_equal(values, best)
            np.testing.assert_array_equal(winners, first)


@pytest.mark.parametrize("mode", ["reflect", "nearest", "wrap", "constant"])
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_constant_image_winner_is_first_tap(op, mode):
    """A constant image (and cval equal to it) ties everywhere: every winner is the first footprint tap."""
    footprint = np.array([[0, 0, 1], [1, 0, 1]], bool)
    image = np.full((2, 4, 5), 3.0)
    out, idx = getattr(tropic, op)(image, footprint=footprint, mode=mode, cval=3.0, return_indices=True)
    assert_identical(out, image)
    assert_identical(idx, np.full(image.shape, 2, np.int8))
    zeros = np.zeros(footprint.shape)
    _, idx = getattr(tropic, op)(image, zeros, footprint=footprint, mode=mode, cval=3.0, return_indices=True)
    assert_identical(idx, np.full(image.shape, 2, np.int8))


def test_ties_neutral_border_skips_outside_taps():
    """In "neutral" mode taps reading outside the image are the zero: the first tap inside wins."""
    image = np.zeros((1, 3))
    _, idx = tropic.dilation(image, size=(1, 3), return_indices=True)
    # dilation reads f(j - (v - 1)): tap 0 reads j + 1 (outside at the right edge), tap 1 reads j.
    assert_identical(idx, np.array([[0, 0, 1]], np.int8))
    _, idx = tropic.erosion(image, size=(1, 3), return_indices=True)
    # erosion reads f(j + v - 1): tap 0 reads j - 1 (outside at the left edge).
    assert_identical(idx, np.array([[1, 0, 0]], np.int8))


@pytest.mark.parametrize("op, zero", [("dilation", -math.inf), ("erosion", math.inf)])
def test_all_zero_outputs_have_no_winner(xp, op, zero):
    """Windows holding only the tropical zero give the zero and winner -1 (image, structure, cval)."""
    fn = getattr(tropic, op)
    image = xp.full((2, 3, 4), zero, dtype=xp.float64)
    for kwargs in ({"size": 3}, {"structure": xp.zeros((2, 3), dtype=xp.float64)}):
        out, idx = fn(image, **kwargs, return_indices=True)
        assert_identical(out, np.full((2, 3, 4), zero))
        assert_identical(idx, np.full((2, 3, 4), -1, np.int8))
        out, idx = fn(image, **kwargs, mode="constant", cval=zero, return_indices=True)
        assert_identical(idx, np.full((2, 3, 4), -1, np.int8))
    # A structure that is the max-plus zero everywhere: no candidate at all, whatever the image.
    finite = xp.asarray(np.arange(12.0).reshape(3, 4))
    out, idx = fn(finite, xp.full((3, 3), -math.inf, dtype=xp.float64), return_indices=True)
    assert_identical(out, np.full((3, 4), zero))
    assert_identical(idx, np.full((3, 4), -1, np.int8))


@given(
    image=images(elements=st.sampled_from([0.0, 1.0, -2.0, -math.inf, math.inf])),
    data=st.data(),
    mode=st.sampled_from(ALL_MODES),
    op=st.sampled_from(["dilation", "erosion"]),
)
def test_minus_inf_structure_entries_never_take_part(image, data, mode, op):
    """A -inf structure entry is the tropical zero: same values and winners as leaving it off the footprint,
    even against +inf image values (-inf + inf absorbs to the zero)."""
    shape = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    s = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 3.0, -math.inf, -math.inf])))
    footprint = data.draw(st.one_of(st.none(), hnp.arrays(np.bool_, shape)))
    finite = (s > -math.inf) if footprint is None else footprint & (s > -math.inf)
    fn = getattr(tropic, op)
    a = fn(image, s, footprint=footprint, mode=mode, cval=1.0, return_indices=True)
    b = fn(image, s, footprint=finite, mode=mode, cval=1.0, return_indices=True)
    for x, y in zip(a, b, strict=True):
        assert_identical(x, y)


@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_nan_propagates(op):
    """An output whose window holds a NaN (image or structure) is NaN, won by the first NaN tap
    (checked against the naive formula)."""
    rng = np.random.default_rng(4)
    image = rng.integers(-3, 4, (2, 6, 7)).astype(float)
    image[0, 2, 3] = image[1, 5, 0] = np.nan
    s = rng.integers(-2, 3, (3, 2)).astype(float)
    for mode in ("neutral", "reflect", "wrap"):
        out, idx = getattr(tropic, op)(image, s, mode=mode, return_indices=True)
        best, first = naive_winners(image, s, op, mode)
        assert np.isnan(out).sum() > 0
        np.testing.assert_array_equal(np.isnan(out), np.isnan(best))
        np.testing.assert_array_equal(out, best)  # NaN matches NaN in assert_array_equal
        np.testing.assert_array_equal(idx, first)
    s[1, 1] = np.nan
    out, idx = getattr(tropic, op)(np.zeros((3, 4)), s, return_indices=True)
    assert np.isnan(out).all()
    assert_identical(idx, np.full((3, 4), 3, np.int8))


def test_index_dtype_is_smallest_signed_int():
    """Winner dtype: int8 up to 128 taps, int16 above (indices run -1 .. taps - 1)."""
    image = np.zeros((2, 2))
    for shape, dtype in (((8, 16), np.int8), ((1, 129), np.int16), ((3, 3), np.int8)):
        _, idx = tropic.dilation(image, size=shape, return_indices=True)
        assert idx.dtype == dtype


def test_inputs_not_modified():
    """Nothing the caller owns is written to."""
    rng = np.random.default_rng(0)
    image, s = rng.normal(size=(2, 5, 5)), rng.normal(size=(3, 3))
    s[0, 0] = -math.inf
    footprint = random_footprint(rng, (3, 3))
    copies = image.copy(), s.copy(), footprint.copy()
    for name in OPS:
        getattr(tropic, name)(image, s, footprint=footprint, mode="reflect")
    for a, b in zip((image, s, footprint), copies, strict=True):
        assert_identical(a, b)


# ----------------------------------------------------------------------------------------------
# 4. Subgradients
# ----------------------------------------------------------------------------------------------

VJP_CASES = [
    ("neutral", (3, 3)),
    ("reflect", (2, 4)),
    ("constant", (3, 2)),
    ("wrap", (7, 3)),  # taller than the image: windows wrap around more than once
    ("nearest", (1, 5)),
]
VJPS = {"dilation": tropic.dilation_vjp, "erosion": tropic.erosion_vjp}


def unique_winner_point(rng, op, mode, se_shape, image_shape=(2, 5, 6)):
    """Random continuous data, and the smallest gap between the best and the second-best candidate."""
    f = rng.normal(size=image_shape)
    s = rng.normal(size=se_shape)
    cand, _ = naive_candidates(f, s, op, mode, cval=0.3)
    ordered = np.sort(cand, axis=0)
    gap = ordered[-1] - ordered[-2] if op == "dilation" else ordered[1] - ordered[0]
    gap = np.min(np.where(np.isnan(gap), np.inf, gap)) if len(cand) > 1 else np.inf
    assert gap > 0, "the test point has ties"
    return f, s, gap


@pytest.mark.parametrize("mode, se_shape", VJP_CASES)
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_vjp_matches_finite_differences(op, mode, se_shape):
    """vjp w.r.t. image and structure == central differences of sum(g * op(f, s)) at a unique-winner point.

    The step is below half the smallest winner gap, so no winner changes and the difference quotient is
    exact up to rounding (atol 1e-7).
    """
    rng = np.random.default_rng(len(mode) + 10 * se_shape[0] + se_shape[1])
    f, s, gap = unique_winner_point(rng, op, mode, se_shape)
    eps = min(1e-3, gap / 4)
    g = rng.normal(size=f.shape)
    fn = getattr(tropic, op)

    def loss(f, s):
        return np.sum(g * fn(f, s, mode=mode, cval=0.3))

    def central(x, perturb):
        out = np.zeros_like(x)
        for i in np.ndindex(*x.shape):
            step = np.zeros_like(x)
            step[i] = eps
            out[i] = (perturb(step) - perturb(-step)) / (2 * eps)
        return out

    _, idx = fn(f, s, mode=mode, cval=0.3, return_indices=True)
    grad_f, grad_s = VJPS[op](g, idx, f.shape, s.shape, mode=mode)
    np.testing.assert_allclose(grad_f, central(f, lambda d: loss(f + d, s)), rtol=0, atol=1e-7)
    np.testing.assert_allclose(grad_s, central(s, lambda d: loss(f, s + d)), rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode, se_shape", [*VJP_CASES, ("mirror", (4, 4)), ("grid-wrap", (2, 2))])
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_vjp_matches_torch_autograd_of_naive_formula(op, mode, se_shape):
    """vjp == torch autograd of the naive formula (np.pad indices, stack, max(dim)) at a tie-free point.

    Integer-valued output gradients make every sum exact, so the comparison is bitwise; the forward
    values agree bitwise too.
    """
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(len(mode) + se_shape[0])
    f, s, _ = unique_winner_point(rng, op, mode, se_shape)
    g = rng.integers(-3, 4, f.shape).astype(float)
    ft = torch.tensor(f, requires_grad=True)
    st_ = torch.tensor(s, requires_grad=True)
    cand, _ = naive_candidates(ft, st_, op, mode, cval=0.3)
    out = cand.max(dim=0).values if op == "dilation" else cand.min(dim=0).values
    (out * torch.as_tensor(g)).sum().backward()
    values, idx = getattr(tropic, op)(f, s, mode=mode, cval=0.3, return_indices=True)
    assert_identical(values, out.detach().numpy())
    grad_f, grad_s = VJPS[op](g, idx, f.shape, s.shape, mode=mode)
    assert_identical(grad_f, ft.grad.numpy())
    # Values, not bits, for the structure: erosion_vjp negates, so taps that never win get -0.0.
    np.testing.assert_array_equal(grad_s, st_.grad.numpy(), strict=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    image=images(elements=TIE_VALUES),
    se=structuring_elements(values=TIE_VALUES),
    mode=st.sampled_from(ALL_MODES),
    op=st.sampled_from(["dilation", "erosion"]),
    data=st.data(),
)
def test_vjp_numpy_matches_reference(kernel_pairs, image, se, mode, op, data):
    """NumPy vjp == reference vjp bitwise (integer gradients; ties and winners -1 included), and the
    reference path returns array-api-strict arrays."""
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    _, idx = getattr(tropic, op)(image, **se, mode=mode, cval=1.0, return_indices=True)
    kernel_pairs.clear()
    g = data.draw(hnp.arrays(np.float64, image.shape, elements=st.integers(-4, 4).map(float)))
    shape = se["size"] if "size" in se else next(v.shape for k, v in se.items() if k != "size")
    got = VJPS[op](g, idx, image.shape, shape, mode=mode)
    expected = VJPS[op](xs.asarray(g), xs.asarray(idx), image.shape, shape, mode=mode)
    assert all(is_strict(xs, e) for e in expected)
    for a, b in zip(got, expected, strict=True):
        assert_identical(a, b)
    assert_pairs_identical(kernel_pairs)


def test_vjp_no_winner_sends_nothing():
    """Outputs without a winner (all candidates the zero) send no gradient to image or structure."""
    image = np.full((2, 3, 4), -math.inf)
    image[0, 1, 1] = 5.0
    out, idx = tropic.dilation(image, np.zeros((1, 1)), return_indices=True)
    grad_f, grad_s = tropic.dilation_vjp(np.ones(image.shape), idx, image.shape, (1, 1))
    expected = np.zeros(image.shape)
    expected[0, 1, 1] = 1.0
    assert_identical(grad_f, expected)
    assert_identical(grad_s, np.ones((1, 1)))


@pytest.mark.parametrize("bad", [9, -2], ids=["taps", "minus-two"])
@pytest.mark.parametrize("position", [(0, 0), (3, 4), (6, 8)], ids=["border", "inside", "last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vjp_rejects_a_winner_just_outside_the_taps(bad, position, dtype):
    """A winner one past the last tap (9 for a 3x3 element) or below -1, at the border, inside
    the image or at its last pixel, raises for every gradient asked for (the compiled scatter
    checks each index as it reads it) rather than reading or writing outside its tables."""
    grad = np.ones((2, 7, 9), dtype)
    winners = np.zeros(grad.shape, np.int8)
    winners[(1, *position)] = bad
    for needs in ((True, True), (True, False), (False, True)):
        with pytest.raises(ValueError, match=r"indices must hold winners in \[0, 9\)"):
            _morphology_vjp_needs(grad, winners, needs)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [3, 13], ids=["int8 winners", "int16 winners"])
def test_vjp_of_narrow_winners_matches_the_numpy_path(monkeypatch, threads, size):
    """The compiled backward takes int8 and int16 winners as they are (its tasks widen them image
    by image): each gradient asked for, alone or both, is the NumPy path's bit for bit, and the
    same as from the winners given as int32 or int64, on one thread and on the pool."""
    from tropic.backends.numpy import compiled, kernels

    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    rng = np.random.default_rng(size)
    image = rng.integers(-3, 4, (5, 30, 33)).astype(np.float32)  # ties: the lowest tap wins
    structure = rng.integers(-2, 3, (size, size)).astype(np.float32)
    out, winners = tropic.dilation(image, structure, mode="reflect", return_indices=True)
    assert winners.dtype == (np.int8 if size == 3 else np.int16)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    tropic.set_num_threads(threads)
    try:
        for needs in ((True, True), (True, False), (False, True)):
            got = _morphology_vjp_needs(grad, winners, needs, size, "reflect")
            for wide in (np.int32, np.int64):
                again = _morphology_vjp_needs(grad, winners.astype(wide), needs, size, "reflect")
                for g, a in zip(got, again, strict=True):
                    assert (g is None and a is None) or g.tobytes() == a.tobytes()
            with monkeypatch.context() as m:
                m.setattr(compiled, "enabled", False)
                want = _morphology_vjp_needs(grad, winners, needs, size, "reflect")
            for g, w in zip(got, want, strict=True):
                assert (g is None) == (w is None)
                if g is not None:
                    assert_identical(g, w)
    finally:
        tropic.set_num_threads(None)


def _morphology_vjp_needs(grad, winners, needs, size=3, mode="reflect"):
    """The NumPy backend's morphology vjp of a ``size`` x ``size`` dilation asking for ``needs``."""
    from tropic.backends.numpy import kernels
    from tropic.core.morphology import axis_window

    rows, cols = (axis_window(n, size, True, mode) for n in grad.shape[-2:])
    return kernels.morphology_vjp(np, grad, winners, grad.shape, rows, cols, needs)


# ----------------------------------------------------------------------------------------------
# 5. Errors
# ----------------------------------------------------------------------------------------------


def _strict_structure():
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    return xs.asarray(np.zeros((3, 3)))


IMAGE = np.zeros((4, 5))
BAD_CALLS = {
    "complex image": (lambda: tropic.dilation(np.zeros((4, 5), complex), size=3), TypeError, "image"),
    "huge int64 image": (
        lambda: tropic.dilation(np.full((4, 5), 2**60, np.int64), size=3),
        ValueError,
        "image.*2\\*\\*53",
    ),
    "1-D image": (lambda: tropic.erosion(np.zeros(5), size=3), ValueError, "image"),
    "integer structure": (lambda: tropic.dilation(IMAGE, np.zeros((3, 3), int)), TypeError, "structure"),
    "1-D structure": (lambda: tropic.dilation(IMAGE, np.zeros(3)), ValueError, "structure"),
    "structure/footprint shapes": (
        lambda: tropic.dilation(IMAGE, np.zeros((3, 3)), footprint=np.ones((2, 3), bool)),
        ValueError,
        "structure and footprint",
    ),
    "size with footprint": (
        lambda: tropic.erosion(IMAGE, footprint=np.ones((3, 3), bool), size=3),
        ValueError,
        "size",
    ),
    "size with structure": (lambda: tropic.opening(IMAGE, np.zeros((3, 3)), size=3), ValueError, "size"),
    "no element": (lambda: tropic.dilation(IMAGE), ValueError, "structure, footprint or size"),
    "bad mode": (lambda: tropic.dilation(IMAGE, size=3, mode="periodic"), ValueError, "mode"),
    "float footprint": (lambda: tropic.erosion(IMAGE, footprint=np.ones((3, 3))), TypeError, "footprint"),
    "1-D footprint": (lambda: tropic.erosion(IMAGE, footprint=np.ones(3, bool)), ValueError, "footprint"),
    "size zero": (lambda: tropic.dilation(IMAGE, size=0), ValueError, "size"),
    "size triple": (lambda: tropic.dilation(IMAGE, size=(1, 2, 3)), TypeError, "size"),
    "numpy image, strict structure": (
        lambda: tropic.dilation(IMAGE, _strict_structure()),
        TypeError,
        "image.*structure|structure.*image",
    ),
    "vjp grad shape": (
        lambda: tropic.dilation_vjp(np.zeros((4, 4)), np.zeros((4, 5), np.int8), (4, 5), (3, 3)),
        ValueError,
        "grad",
    ),
    "vjp indices shape": (
        lambda: tropic.erosion_vjp(np.zeros((4, 5)), np.zeros((5, 4), np.int8), (4, 5), (3, 3)),
        ValueError,
        "indices",
    ),
    "vjp mode": (
        lambda: tropic.dilation_vjp(np.zeros((4, 5)), np.zeros((4, 5), np.int8), (4, 5), (3, 3), mode="x"),
        ValueError,
        "mode",
    ),
}


@pytest.mark.parametrize("bad_call, error, name", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_input_errors_name_the_argument(bad_call, error, name):
    """Each bad input raises ValueError/TypeError whose message names the offending argument."""
    with pytest.raises(error, match=name):
        bad_call()


@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (2, 4, 0), (0, 2, 3, 4)], ids=str)
@pytest.mark.parametrize("name", OPS)
def test_empty_images(name, shape):
    """Empty batches and empty images give empty results of the input's shape and dtype, flat and
    non-flat, with and without the winners and the vjp, on the NumPy backend and the core reference."""
    import array_api_strict as xps

    op = getattr(tropic, name)
    for dtype in (np.float32, np.float64):
        image = np.zeros(shape, dtype)
        elements = [{"size": 3}, {"structure": np.ones((2, 3), dtype)}, {"footprint": np.eye(3, dtype=bool)}]
        for kwargs in elements:
            out = op(image, **kwargs)
            assert out.shape == shape and out.dtype == dtype
            on_strict = {k: v if k == "size" else xps.asarray(v) for k, v in kwargs.items()}
            assert op(xps.asarray(image), **on_strict).shape == shape
    structure = np.ones((2, 3))
    out, winners = tropic.dilation(np.zeros(shape), structure, return_indices=True)
    grad_image, grad_structure = tropic.dilation_vjp(out, winners, shape, structure.shape)
    assert grad_image.shape == shape and not grad_structure.any() and grad_structure.shape == (2, 3)
