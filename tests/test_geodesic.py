"""Geodesic morphology (tropic.core.geodesic): reconstruction, the operators built on it, winners.

References nobody here wrote: scikit-image's ``reconstruction`` / ``local_maxima`` / ``local_minima``
and SciPy's ``binary_fill_holes`` / ``grey_erosion`` / ``grey_dilation``. Every comparison is bitwise
(dtype included), on the compiled kernel and on the array-API reference path.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tropic.backends.numpy import compiled
from tropic.backends.numpy import geodesic as compiled_geodesic
from tropic.core import geodesic

from .helpers import assert_identical, hsettings, strict

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int16, np.uint8, np.bool_]
METHODS = ["dilation", "erosion"]


def skimage_morphology():
    return pytest.importorskip("skimage.morphology", reason="scikit-image is not installed")


def ndimage():
    return pytest.importorskip("scipy.ndimage", reason="SciPy is not installed")


@pytest.fixture(params=["compiled", "reference"])
def path(request, monkeypatch):
    """Each test once on the compiled kernel and once on the array-API reference (NumPy arrays)."""
    if request.param == "compiled" and not compiled_geodesic.available(np.float64):
        if os.environ.get("CI"):
            pytest.fail(f"the compiled kernels must be built on CI: {compiled.status()}")
        pytest.skip(f"compiled geodesic kernel not built (optional): {compiled.status()}")
    monkeypatch.setattr(compiled, "enabled", request.param == "compiled")
    return request.param


def ordered_pair(rng, shape, dtype, method, high=6):
    """A mask of small values (many ties) and a seed below it (dilation) or above it (erosion)."""
    mask = rng.integers(0, high, size=shape)
    gap = rng.integers(0, 3, size=shape) * (rng.random(shape) < 0.7)
    seed = np.clip(mask - gap, 0, None) if method == "dilation" else np.clip(mask + gap, None, high - 1)
    return seed.astype(dtype), mask.astype(dtype)


def random_footprint(rng, ndim, odd=True):
    shape = tuple(
        int(k) for k in (rng.choice([1, 3, 5], size=ndim) if odd else rng.integers(1, 5, size=ndim))
    )
    return rng.random(shape) < 0.5


def random_shape(rng, ndim, high=7):
    return tuple(int(n) for n in rng.integers(1, high, size=ndim))


# ------------------------------------------------------------------------ reconstruction vs skimage


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_reconstruction_equals_skimage(path, dtype, method, ndim):
    morphology = skimage_morphology()
    rng = np.random.default_rng([ndim, len(method), np.dtype(dtype).num])
    for _ in range(6):
        shape = random_shape(rng, ndim)
        seed, mask = ordered_pair(rng, shape, dtype, method, high=2 if dtype is np.bool_ else 6)
        footprint = None if rng.random() < 0.3 else random_footprint(rng, ndim)
        expected = morphology.reconstruction(seed, mask, method=method, footprint=footprint)
        assert_identical(geodesic.reconstruction(seed, mask, method, footprint), expected)


@pytest.mark.parametrize("method", METHODS)
def test_mixed_dtypes_follow_the_mask_like_skimage(path, method):
    morphology = skimage_morphology()
    rng = np.random.default_rng(7)
    pairs = [(np.float64, np.float32), (np.float32, np.int8), (np.uint8, np.float16), (np.int64, np.uint16)]
    for seed_dtype, mask_dtype in pairs:
        seed, mask = ordered_pair(rng, (5, 6), np.float64, method)
        seed, mask = (seed + 0.1).astype(seed_dtype), mask.astype(mask_dtype)
        if method == "dilation":
            seed = np.minimum(seed, mask.astype(seed_dtype))
        else:
            seed = np.maximum(seed, mask.astype(seed_dtype))
        expected = morphology.reconstruction(seed, mask, method=method)
        assert_identical(geodesic.reconstruction(seed, mask, method), expected)


def test_large_int64_values_are_cast_like_skimage(path):
    """Beyond 2**53 the cast to float64 rounds (scikit-image casts too): ties appear after the cast."""
    morphology = skimage_morphology()
    rng = np.random.default_rng(8)
    mask = 2**60 + rng.integers(0, 9, size=(6, 7), dtype=np.int64) * 100
    seed = mask - rng.integers(0, 2, size=mask.shape) * 300
    assert_identical(geodesic.reconstruction(seed, mask), morphology.reconstruction(seed, mask))


@pytest.mark.parametrize("method", METHODS)
def test_offsets_equal_skimage_on_the_equivalent_centred_footprint(path, method):
    """skimage takes offset= only for 1-D footprints (its ndim check compares the offset array's own
    ndim); in N-D the same neighbourhood is a centred odd footprint with the original placed so that
    its offset lands on the centre."""
    morphology = skimage_morphology()
    rng = np.random.default_rng(9)
    for ndim in (1, 2, 3):
        for _ in range(5):
            footprint = random_footprint(rng, ndim, odd=False)
            offset = np.array([rng.integers(0, k) for k in footprint.shape])
            radius = [max(o, k - 1 - o) for o, k in zip(offset, footprint.shape, strict=True)]
            centred = np.zeros([2 * r + 1 for r in radius], dtype=bool)
            centred[
                tuple(
                    slice(r - o, r - o + k) for r, o, k in zip(radius, offset, footprint.shape, strict=True)
                )
            ] = footprint
            seed, mask = ordered_pair(rng, random_shape(rng, ndim), np.float64, method)
            expected = morphology.reconstruction(seed, mask, method=method, footprint=centred)
            got = geodesic.reconstruction(seed, mask, method, footprint, offset)
            assert_identical(got, expected)
            if ndim == 1:
                direct = morphology.reconstruction(
                    seed, mask, method=method, footprint=footprint, offset=offset
                )
                assert_identical(got, direct)


@pytest.mark.parametrize("method", METHODS)
def test_signed_zeros_are_the_zero_skimage_returns(path, method):
    morphology = skimage_morphology()
    rng = np.random.default_rng(10)
    for dtype in (np.float64, np.float32):
        for _ in range(8):
            seed, mask = ordered_pair(rng, random_shape(rng, 2, 9), dtype, method, high=3)
            seed, mask = seed - 1, mask - 1  # -1, 0, 1 with many zeros
            seed[(seed == 0) & (rng.random(seed.shape) < 0.5)] = -0.0
            mask[(mask == 0) & (rng.random(mask.shape) < 0.5)] = -0.0
            expected = morphology.reconstruction(seed, mask, method=method)
            assert_identical(geodesic.reconstruction(seed, mask, method), expected)


@given(data=st.data())
@hsettings(40)
def test_reconstruction_equals_skimage_hypothesis(data):
    morphology = skimage_morphology()
    ndim = data.draw(st.integers(1, 3))
    shape = data.draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=6))
    values = hnp.arrays(np.float64, shape, elements=st.integers(-2, 2).map(float))
    a, b = data.draw(values), data.draw(values)
    method = data.draw(st.sampled_from(METHODS))
    seed, mask = (
        (np.minimum(a, b), np.maximum(a, b)) if method == "dilation" else (np.maximum(a, b), np.minimum(a, b))
    )
    footprint = data.draw(
        hnp.arrays(np.bool_, data.draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, max_side=3)))
    )
    footprint = footprint[tuple(slice(0, k - (k % 2 == 0)) for k in footprint.shape)]  # odd sides
    if footprint.size == 0:
        footprint = np.ones((1,) * ndim, dtype=bool)
    expected = morphology.reconstruction(seed, mask, method=method, footprint=footprint)
    assert_identical(geodesic.reconstruction(seed, mask, method, footprint), expected)


def test_skimage_docstring_example(path):
    """The h-dome of scikit-image's documentation, 2-D, by both methods."""
    morphology = skimage_morphology()
    y, x = np.mgrid[:20:0.5, :20:0.5]
    bumps = np.sin(x) + np.sin(y)
    assert_identical(
        geodesic.reconstruction(bumps - 0.3, bumps), morphology.reconstruction(bumps - 0.3, bumps)
    )
    assert_identical(
        geodesic.reconstruction(bumps + 0.3, bumps, "erosion"),
        morphology.reconstruction(bumps + 0.3, bumps, method="erosion"),
    )


def test_long_geodesic_path_in_3d(path):
    """A random walk through a 3-D volume is the only way through the mask: the seed's value has to
    travel all of it, through every change of direction (6-connectivity)."""
    morphology = skimage_morphology()
    rng = np.random.default_rng(21)
    mask = np.zeros((8, 9, 10))
    p = np.zeros(3, dtype=int)
    for _ in range(400):
        mask[tuple(p)] = 5.0
        axis, step = rng.integers(0, 3), rng.choice([-1, 1])
        p[axis] = np.clip(p[axis] + step, 0, mask.shape[axis] - 1)
    seed = np.zeros_like(mask)
    seed[0, 0, 0] = 4.0
    footprint = np.zeros((3, 3, 3), dtype=bool)
    footprint[1, 1, :] = footprint[1, :, 1] = footprint[:, 1, 1] = True
    got = geodesic.reconstruction(seed, mask, footprint=footprint)
    assert_identical(got, morphology.reconstruction(seed, mask, footprint=footprint))
    assert_identical(got, np.where(mask == 5.0, 4.0, 0.0))  # the whole walk, and nothing else


# -------------------------------------------------------------------------------------- edge cases


def test_zero_dimensional_and_empty(path):
    assert_identical(geodesic.reconstruction(np.array(1.0), np.array(2.0)), np.array(1.0))
    assert_identical(geodesic.reconstruction(np.array(3), np.array(2), "erosion"), np.array(3.0))
    empty = np.zeros((0, 4), dtype=np.float32)
    assert_identical(geodesic.reconstruction(empty, empty), empty)
    assert_identical(geodesic.fill_holes(np.zeros((3, 0), dtype=bool)), np.zeros((3, 0), dtype=bool))
    assert_identical(geodesic.regional_maxima(np.zeros((0,))), np.zeros((0,), dtype=bool))


def test_no_neighbours_returns_the_seed(path):
    seed, mask = np.array([[1.0, 0.0], [2.0, 1.0]]), np.full((2, 2), 3.0)
    assert_identical(geodesic.reconstruction(seed, mask, footprint=np.ones((1, 1))), seed)
    assert_identical(geodesic.reconstruction(seed, mask, footprint=np.zeros((3, 3))), seed)


def test_inputs_are_not_modified(path):
    rng = np.random.default_rng(11)
    seed, mask = ordered_pair(rng, (6, 7), np.float64, "dilation")
    seed[0, 0], mask[0, 0] = -0.0, 0.0  # the signed-zero repair writes into the result, never the input
    seed_copy, mask_copy = seed.copy(), mask.copy()
    geodesic.reconstruction(seed, mask)
    geodesic.reconstruction(seed[:, ::2], mask[:, ::2])  # non-contiguous views
    assert_identical(seed, seed_copy)
    assert_identical(mask, mask_copy)


@pytest.mark.parametrize("method", METHODS)
def test_nan_reaches_along_the_footprint(path, method):
    """The documented NaN rule: every output that a NaN reaches (steps p -> p + s) is NaN, the rest is
    the reconstruction of what no NaN reaches, here a separate component of the same image."""
    seed = np.array([0.0, np.nan, 0.0, 0.0, 5.0, 0.0, 0.0])
    mask = np.array([9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0])
    if method == "erosion":
        seed, mask = -seed, -mask
    sign = 1.0 if method == "dilation" else -1.0
    leftwards = np.array([True, True, False])  # steps k - offset: -1 (and 0): the value at p reaches p - 1
    got = geodesic.reconstruction(seed, mask, method, leftwards, offset=[1])
    assert_identical(got, sign * np.array([np.nan, np.nan, 5.0, 5.0, 5.0, 0.0, 0.0]))
    rightwards = np.array([False, True, True])  # step +1
    got = geodesic.reconstruction(seed, mask, method, rightwards, offset=[1])
    assert_identical(got, sign * np.array([0.0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan]))


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda: geodesic.reconstruction(np.ones(3), np.zeros(3)),
            ValueError,
            r"seed must be <= mask.*index \(0,\)",
        ),
        (
            lambda: geodesic.reconstruction(np.zeros(3), np.ones(3), "erosion"),
            ValueError,
            r"seed must be >= mask.*reconstruction by erosion",
        ),
        (
            lambda: geodesic.reconstruction(np.zeros(3), np.zeros(4)),
            ValueError,
            r"seed and mask must have the same shape",
        ),
        (lambda: geodesic.reconstruction(np.zeros(3), np.zeros(3), "opening"), ValueError, r"method must be"),
        (
            lambda: geodesic.reconstruction(np.zeros((3, 3)), np.zeros((3, 3)), footprint=np.ones(3)),
            ValueError,
            r"footprint must have 2 dimensions",
        ),
        (
            lambda: geodesic.reconstruction(np.zeros(3), np.zeros(3), footprint=np.ones(2)),
            ValueError,
            r"footprint's dimensions must all be odd",
        ),
        (
            lambda: geodesic.reconstruction(np.zeros(3), np.zeros(3), footprint=np.ones(2), offset=[2]),
            ValueError,
            r"offset must lie inside footprint",
        ),
        (
            lambda: geodesic.reconstruction(np.zeros((3, 3)), np.zeros((3, 3)), offset=[1]),
            ValueError,
            r"offset must be a sequence of 2 ints",
        ),
        (lambda: geodesic.reconstruction(np.zeros(3), np.zeros(3, complex)), TypeError, r"^mask must be"),
        (lambda: geodesic.reconstruction([0.0, 1.0], np.zeros(2)), TypeError, r"^seed must be an array"),
        (
            lambda: geodesic.opening_by_reconstruction(np.zeros(3), np.ones(3), size=3),
            ValueError,
            "footprint or size",
        ),
        (lambda: geodesic.opening_by_reconstruction(np.zeros(3), size=0), ValueError, r"^size must be"),
        (
            lambda: geodesic.closing_by_reconstruction(np.zeros(3), reconstruction_footprint=np.ones(2)),
            ValueError,
            r"^reconstruction_footprint's dimensions",
        ),
        (
            lambda: geodesic.regional_maxima(np.array([1.0, np.nan])),
            ValueError,
            r"^image must not contain NaN",
        ),
        (lambda: geodesic.fill_holes(np.zeros((2, 2)), np.ones(3)), ValueError, r"^footprint must have 2"),
    ],
)
def test_errors_name_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_skimage_raises_where_tropic_raises():
    """The refusals that scikit-image shares (its messages do not name the argument; tropic's do)."""
    morphology = skimage_morphology()
    for seed, mask, method in [(np.ones(3), np.zeros(3), "dilation"), (np.zeros(3), np.ones(3), "erosion")]:
        with pytest.raises(ValueError):
            morphology.reconstruction(seed, mask, method=method)
        with pytest.raises(ValueError, match="seed must be"):
            geodesic.reconstruction(seed, mask, method)
    with pytest.raises(ValueError):
        morphology.reconstruction(np.zeros(3), np.zeros(3), footprint=np.ones(2))
    with pytest.raises(ValueError):
        morphology.reconstruction(np.zeros(3), np.zeros(3), footprint=np.ones(2), offset=np.array([2]))


# ------------------------------------------------------------------ compiled kernel vs reference path


def tie_heavy(rng, shape, dtype, specials=True):
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    if specials and np.dtype(dtype).kind == "f":
        x[rng.random(shape) < 0.05] = np.inf
        x[rng.random(shape) < 0.05] = -np.inf
        x[(x == 0) & (rng.random(shape) < 0.5)] = -0.0
    return x


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float32, np.int64, np.uint64], ids=lambda d: np.dtype(d).name
)
@pytest.mark.parametrize("maximise", [True, False], ids=["dilation", "erosion"])
def test_compiled_kernel_equals_reference_with_winners(dtype, maximise):
    """The kernels' own contract, NaN and the infinities included, up to 4-D, values and winners."""
    if not compiled_geodesic.available(dtype):
        pytest.skip("compiled geodesic kernel not built (optional)")
    rng = np.random.default_rng([np.dtype(dtype).num, maximise])
    for ndim in (1, 2, 3, 4):
        for _ in range(3):
            shape = random_shape(rng, ndim, 6 if ndim < 4 else 4)
            a, b = tie_heavy(rng, shape, dtype), tie_heavy(rng, shape, dtype)
            if np.dtype(dtype).kind == "u":
                a, b = a + np.uint64(2**63), b  # beyond int64 and float64
            if np.dtype(dtype).kind == "f" and rng.random() < 0.5:
                a[rng.random(shape) < 0.05] = np.nan
            seed, mask = (
                (np.minimum(a, b), np.maximum(a, b)) if maximise else (np.maximum(a, b), np.minimum(a, b))
            )
            if np.dtype(dtype).kind == "f":
                seed[np.isnan(a)] = np.nan  # NaN in the seed; the mask keeps numbers
            _, _, steps = geodesic._footprint_steps(
                random_footprint(rng, ndim), None, ndim, geodesic._ones_footprint
            )
            got = compiled_geodesic.reconstruct(seed, mask, steps, maximise, winners=True)
            values, winners = geodesic.reconstruction_reference(np, seed, mask, steps, maximise, winners=True)
            assert_identical(got[0], values)
            assert_identical(got[1], winners)
            plain = compiled_geodesic.reconstruct(seed, mask, steps, maximise)[0]
            np.testing.assert_array_equal(plain, values)  # equal values (the sign of a zero may differ)


def test_kernel_reports_what_the_inputs_hold():
    if not compiled_geodesic.available(np.float64):
        pytest.skip("compiled geodesic kernel not built (optional)")
    steps = np.array([[1], [-1]])
    for seed, found in [
        ([0.0, 1.0], compiled_geodesic.FOUND_POSITIVE_ZERO),
        ([-0.0, 1.0], compiled_geodesic.FOUND_NEGATIVE_ZERO),
        ([np.nan, 1.0], compiled_geodesic.FOUND_NAN),
        ([2.0, 1.0], 0),
    ]:
        result = compiled_geodesic.reconstruct(np.array(seed), np.full(2, 5.0), steps, True)
        assert result[2] == found


def test_array_api_strict_equals_numpy():
    xp = strict()
    rng = np.random.default_rng(12)
    for method in METHODS:
        seed, mask = ordered_pair(rng, (5, 6, 4), np.float32, method)
        footprint = random_footprint(rng, 3)
        expected = geodesic.reconstruction(seed, mask, method, footprint, return_indices=True)
        got = geodesic.reconstruction(
            xp.asarray(seed), xp.asarray(mask), method, footprint, return_indices=True
        )
        for a, b in zip(got, expected, strict=True):
            assert type(a).__module__.startswith("array_api_strict")
            assert_identical(np.from_dlpack(a), b)
    image = tie_heavy(rng, (6, 7), np.float64, specials=False)
    for fn in (geodesic.fill_holes, geodesic.opening_by_reconstruction, geodesic.regional_minima):
        assert_identical(np.from_dlpack(fn(xp.asarray(image))), fn(image))


def test_torch_tensors_equal_numpy():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    rng = np.random.default_rng(13)
    seed, mask = ordered_pair(rng, (7, 5), np.float64, "dilation")
    got = geodesic.reconstruction(torch.from_numpy(seed), torch.from_numpy(mask))
    assert isinstance(got, torch.Tensor)
    assert_identical(got.numpy(), geodesic.reconstruction(seed, mask))
    image = rng.integers(0, 5, size=(6, 6))
    assert_identical(
        geodesic.regional_maxima(torch.from_numpy(image)).numpy(), geodesic.regional_maxima(image)
    )


def test_compiled_off_by_environment_uses_the_reference():
    """TROPIC_DISABLE_COMPILED=1: nothing compiled loads, the results stay the same."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from tropic.core import geodesic;"
        "from tropic.backends.numpy import geodesic as g;"
        "assert not g.available(np.float64);"
        "m = np.array([0., 3., 1., 4., 2., 0.]); s = np.array([0., 2., 0., 0., 0., 0.]);"
        "print(geodesic.reconstruction(s, m).tolist())"
    )
    env = {**os.environ, "TROPIC_DISABLE_COMPILED": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0.0, 2.0, 1.0, 1.0, 1.0, 0.0]"


# ------------------------------------------------------------------------------- winners, gradients


def reaches(mask: np.ndarray, start: tuple, goal: tuple, level: float, steps: np.ndarray) -> bool:
    """Breadth-first search: a path of steps from start to goal through pixels whose mask >= level."""
    if mask[start] < level:
        return False
    seen, frontier = {start}, [start]
    while frontier:
        p = frontier.pop()
        if p == goal:
            return True
        for s in steps:
            q = tuple(int(v) for v in np.add(p, s))
            if (
                all(0 <= v < n for v, n in zip(q, mask.shape, strict=True))
                and q not in seen
                and mask[q] >= level
            ):
                seen.add(q)
                frontier.append(q)
    return False


def test_winners_are_candidates_that_reach_the_output(path):
    """Each winner is an input equal to the output: a seed pixel joined to the output by a path above
    the output's value, or a mask pixel on such a path (checked by a search, not by the kernel)."""
    rng = np.random.default_rng(14)
    for _ in range(6):
        seed, mask = ordered_pair(rng, (5, 6), np.float64, "dilation", high=4)
        footprint = random_footprint(rng, 2)
        values, winners = geodesic.reconstruction(seed, mask, footprint=footprint, return_indices=True)
        _, _, steps = geodesic._footprint_steps(footprint, None, 2, geodesic._ones_footprint)
        n = seed.size
        candidates = np.concatenate([seed.ravel(), mask.ravel()])
        assert_identical(candidates[winners], values)
        for x in np.ndindex(seed.shape):
            w = int(winners[x])
            source = np.unravel_index(w % n, seed.shape)
            assert reaches(mask, source, x, values[x], steps)


def test_tie_rule_example():
    """Written out by hand: a plateau of equal seeds; the mask caps at one pixel with the same value."""
    seed = np.array([2.0, 2.0, 0.0, 0.0])
    mask = np.array([3.0, 2.0, 3.0, 3.0])
    values, winners = geodesic.reconstruction(seed, mask, return_indices=True)
    assert_identical(values, np.array([2.0, 2.0, 2.0, 2.0]))
    # pixel 0: its own seed (in the maximum, the lower of the tied seeds 0 and 1); pixel 1: seed 1 equals
    # mask 1, and the minimum with the mask keeps the mask's candidate (4 + 1); pixels 2 and 3: every path
    # from a seed crosses pixel 1, whose mask (2, candidate 5) is the minimum along it
    assert winners.tolist() == [0, 5, 5, 5]
    values, winners = geodesic.reconstruction(seed, mask + 1, return_indices=True)  # no mask at 2 now
    assert winners.tolist() == [0, 0, 0, 0]  # seeds 0 and 1 tie at pixel 1 too: the lower index wins


@pytest.mark.parametrize("method", METHODS)
def test_vjp_matches_finite_differences(path, method):
    """At inputs without ties the reconstruction is locally linear in its winners: central finite
    differences of sum(g * R(seed, mask)) equal the vjp exactly up to rounding."""
    rng = np.random.default_rng(15)
    shape = (4, 5)
    mask = rng.standard_normal(shape)
    seed = mask - np.abs(rng.standard_normal(shape)) - 0.05
    if method == "erosion":
        seed, mask = -seed, -mask
    g = rng.standard_normal(shape)
    values, winners = geodesic.reconstruction(seed, mask, method, return_indices=True)
    d_seed, d_mask = geodesic.reconstruction_vjp(g, winners, shape)

    def loss(s, m):
        return float(np.sum(g * geodesic.reconstruction(s, m, method)))

    eps = 1e-6
    for which, grad in (("seed", d_seed), ("mask", d_mask)):
        numeric = np.zeros(shape)
        for i in np.ndindex(shape):
            plus, minus = [seed.copy(), mask.copy()], [seed.copy(), mask.copy()]
            k = 0 if which == "seed" else 1
            plus[k][i] += eps
            minus[k][i] -= eps
            numeric[i] = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, atol=1e-6)
    assert np.abs(d_mask).sum() > 0 and np.abs(d_seed).sum() > 0  # both kinds of winner occur


def test_vjp_checks_its_arguments():
    with pytest.raises(ValueError, match="indices must lie in"):
        geodesic.reconstruction_vjp(np.ones(2), np.array([0, 4]), (2,))
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        geodesic.reconstruction_vjp(np.ones(2), np.array([0.0, 1.0]), (2,))
    with pytest.raises(ValueError, match="grad and indices must have"):
        geodesic.reconstruction_vjp(np.ones(3), np.array([0, 1]), (2,))
    d_seed, d_mask = geodesic.reconstruction_vjp(np.array([1.0, 2.0]), np.array([-1, 3]), (2,))
    assert_identical(d_seed, np.zeros(2))
    assert_identical(d_mask, np.array([0.0, 2.0]))


# -------------------------------------------------------------------------------- derived operators


def symmetric_footprint(rng, ndim):
    footprint = rng.random((3,) * ndim) < 0.5
    footprint |= footprint[(slice(None, None, -1),) * ndim]
    footprint[(1,) * ndim] = True
    return footprint


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_regional_extrema_equal_skimage(path, dtype):
    morphology = skimage_morphology()
    if dtype is np.float16:
        dtype = np.float32  # scikit-image refuses float16
    rng = np.random.default_rng([16, np.dtype(dtype).num])
    for ndim in (1, 2, 3):
        for _ in range(4):
            image = rng.integers(0, 2 if dtype is np.bool_ else 4, size=random_shape(rng, ndim)).astype(dtype)
            if np.dtype(dtype).kind == "f":
                image[rng.random(image.shape) < 0.1] = rng.choice([np.inf, -np.inf])
            footprint = None if rng.random() < 0.3 else symmetric_footprint(rng, ndim)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                maxima = morphology.local_maxima(image, footprint, allow_borders=True)
                minima = morphology.local_minima(image, footprint, allow_borders=True)
            assert_identical(geodesic.regional_maxima(image, footprint), maxima.astype(bool))
            assert_identical(geodesic.regional_minima(image, footprint), minima.astype(bool))


def test_regional_extrema_at_the_ends_of_the_integer_range(path):
    morphology = skimage_morphology()
    for dtype in (np.int64, np.uint64, np.uint8, np.int8):
        info = np.iinfo(dtype)
        image = np.array([[info.min, info.max, info.min], [info.max, info.min, info.max - 1]], dtype=dtype)
        assert_identical(geodesic.regional_maxima(image), morphology.local_maxima(image).astype(bool))
        assert_identical(geodesic.regional_minima(image), morphology.local_minima(image).astype(bool))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_fill_holes_equals_scipy_on_booleans(path, ndim):
    ndi = ndimage()
    rng = np.random.default_rng([17, ndim])
    for _ in range(6):
        image = rng.random(random_shape(rng, ndim, 9)) < 0.6
        assert_identical(geodesic.fill_holes(image), ndi.binary_fill_holes(image))
        structure = rng.random(tuple(int(k) for k in rng.integers(1, 4, size=ndim))) < 0.6  # asymmetric too
        assert_identical(
            geodesic.fill_holes(image, structure), ndi.binary_fill_holes(image, structure=structure)
        )


def test_grey_fill_holes_equals_the_skimage_recipe(path):
    """scikit-image's gallery recipe (seed = max inside, image on the border, reconstruction by erosion)
    with its default full footprint."""
    morphology = skimage_morphology()
    rng = np.random.default_rng(18)
    for dtype in (np.float64, np.float32, np.int16, np.uint8):
        image = rng.integers(0, 6, size=(9, 10)).astype(dtype)
        seed = image.copy()
        seed[1:-1, 1:-1] = image.max()
        expected = morphology.reconstruction(seed, image, method="erosion")
        got = geodesic.fill_holes(image, np.ones((3, 3)))
        assert got.dtype == image.dtype
        assert_identical(got.astype(expected.dtype), expected)


def neutral(image, maximum):
    if image.dtype.kind == "f":
        return np.inf if maximum else -np.inf
    return int(image.max()) + 1 if maximum else int(image.min()) - 1 if image.dtype.kind == "i" else 0


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float32, np.int16, np.uint8], ids=lambda d: np.dtype(d).name
)
def test_by_reconstruction_equal_scipy_then_skimage(path, dtype):
    """Opening: SciPy's grey_erosion (constant border = the neutral value) then scikit-image's
    reconstruction by dilation under the image; closing: the duals."""
    ndi, morphology = ndimage(), skimage_morphology()
    rng = np.random.default_rng([19, np.dtype(dtype).num])
    for ndim in (1, 2, 3):
        for _ in range(4):
            image = rng.integers(0, 6, size=random_shape(rng, ndim, 8)).astype(dtype)
            element = rng.random(tuple(int(k) for k in rng.integers(1, 5, size=ndim))) < 0.6
            element[tuple(k // 2 for k in element.shape)] = True
            connectivity = symmetric_footprint(rng, ndim)
            eroded = ndi.grey_erosion(image, footprint=element, mode="constant", cval=neutral(image, True))
            expected = morphology.reconstruction(eroded, image, "dilation", connectivity)
            got = geodesic.opening_by_reconstruction(image, element, reconstruction_footprint=connectivity)
            assert got.dtype == image.dtype
            assert_identical(got.astype(expected.dtype), expected)
            dilated = ndi.grey_dilation(image, footprint=element, mode="constant", cval=neutral(image, False))
            expected = morphology.reconstruction(dilated, image, "erosion", connectivity)
            got = geodesic.closing_by_reconstruction(image, element, reconstruction_footprint=connectivity)
            assert_identical(got.astype(expected.dtype), expected)


def test_by_reconstruction_defaults_and_size(path):
    """Default element: the cross (scikit-image's default footprint); size=k: a k x k box."""
    ndi, morphology = ndimage(), skimage_morphology()
    rng = np.random.default_rng(20)
    image = rng.integers(0, 9, size=(12, 13)).astype(np.float64)
    cross = ndi.generate_binary_structure(2, 1)
    expected = morphology.reconstruction(
        morphology.erosion(image, cross), image
    )  # symmetric: reflect = neutral
    assert_identical(geodesic.opening_by_reconstruction(image), expected)
    box = ndi.grey_erosion(image, size=(3, 5), mode="constant", cval=np.inf)
    assert_identical(
        geodesic.opening_by_reconstruction(image, size=(3, 5)), morphology.reconstruction(box, image)
    )


def test_reconstruction_is_differentiable_on_every_engine(gradient_place):
    """tropic.autodiff and torch tensors: the values of the arrays, and the gradients of
    reconstruction_vjp (to the seed and the mask) through the engine's own autodiff, bitwise."""
    rng = np.random.default_rng(21)
    for method in ("dilation", "erosion"):
        seed, mask = ordered_pair(rng, (2, 6, 5), np.float64, method)
        values, winners = geodesic.reconstruction(seed, mask, method=method, return_indices=True)
        g = rng.integers(-8, 9, values.shape) / 4.0  # dyadic: the sums are exact in any order
        want = geodesic.reconstruction_vjp(g, winners, values.shape)
        leaves = [gradient_place.leaf(seed), gradient_place.leaf(mask)]
        out = geodesic.reconstruction(*leaves, method=method)
        assert_identical(gradient_place.numpy(out), values)
        for got, expected in zip(gradient_place.backward(out, g, leaves), want, strict=True):
            assert_identical(got, expected)


def test_reconstruction_under_torch_compile_and_forward_mode():
    """torch.compile (one graph) gives the eager values; the forward-mode tangent is the transpose
    of the vjp (<g, J t> = <J^T g, t>, exact with dyadic values)."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from torch import func

    rng = np.random.default_rng(22)
    seed, mask = ordered_pair(rng, (5, 6), np.float64, "dilation")
    s, m = torch.from_numpy(seed), torch.from_numpy(mask)
    compiled_fn = torch.compile(lambda a, b: geodesic.reconstruction(a, b) * 2.0, fullgraph=True)
    assert_identical(compiled_fn(s, m).numpy(), geodesic.reconstruction(seed, mask) * 2.0)
    _, winners = geodesic.reconstruction(seed, mask, return_indices=True)
    g = rng.integers(-8, 9, seed.shape) / 4.0
    d_seed, d_mask = geodesic.reconstruction_vjp(g, winners, seed.shape)
    t_seed, t_mask = rng.integers(-8, 9, seed.shape) / 4.0, rng.integers(-8, 9, seed.shape) / 4.0
    _, tangent = func.jvp(
        geodesic.reconstruction, (s, m), (torch.from_numpy(t_seed), torch.from_numpy(t_mask))
    )
    assert float((tangent.numpy() * g).sum()) == float((d_seed * t_seed).sum() + (d_mask * t_mask).sum())
    with pytest.raises(ValueError, match="seed must be <= mask"):
        geodesic.reconstruction(m, s)


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_reconstruction_layer_filters_each_image_on_both_engines(spatial):
    """tropic.nn.Reconstruction and tropic.torch.nn.Reconstruction: each (batch, channel) image
    reconstructed alone (the batch and channel axes never connect), bitwise the array function on it,
    and the gradients of a learnable per-channel height h in the seed x - h agree across engines."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    import tropic.autodiff as ad
    import tropic.nn as nn
    import tropic.torch.nn as tnn

    rng = np.random.default_rng(30 + spatial)
    x = rng.integers(0, 6, (2, 3, *(5,) * spatial)).astype(np.float64)
    h = np.array([0.5, 1.0, 2.0]).reshape(1, 3, *(1,) * spatial)
    expected = np.empty_like(x)
    for b, c in np.ndindex(2, 3):
        expected[b, c] = geodesic.reconstruction(x[b, c] - h[0, c], x[b, c])
    height = ad.Tensor(h, requires_grad=True)
    out = nn.Reconstruction(spatial=spatial)(ad.Tensor(x) - height, ad.Tensor(x))
    assert_identical(out.numpy(), expected)
    g = rng.integers(-4, 5, x.shape) / 2.0
    (out * ad.Tensor(g)).sum().backward()
    torch_height = torch.tensor(h, requires_grad=True)
    layer = tnn.Reconstruction(spatial=spatial)
    torch_out = layer(torch.from_numpy(x) - torch_height, torch.from_numpy(x))
    assert_identical(torch_out.detach().numpy(), expected)
    (torch_out * torch.from_numpy(g)).sum().backward()
    assert_identical(torch_height.grad.numpy(), height.grad)
    assert np.any(height.grad != 0)
    compiled = torch.compile(lambda a, b: layer(a, b), fullgraph=True)
    assert_identical(
        compiled(torch.from_numpy(x) - torch.from_numpy(h), torch.from_numpy(x)).numpy(), expected
    )


def test_reconstruction_layer_arguments():
    import tropic.nn as nn

    with pytest.raises(ValueError, match="method"):
        nn.Reconstruction(method="opening")
    with pytest.raises(ValueError, match="footprint"):
        nn.Reconstruction(spatial=2, footprint=np.ones((2, 3)))
    with pytest.raises(ValueError, match="spatial"):
        nn.Reconstruction(spatial=3)(np.zeros((4, 4)), np.zeros((4, 4)))
    cross = nn.Reconstruction(method="erosion", spatial=2, footprint=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    image = np.random.default_rng(3).random((1, 6, 6))
    assert_identical(
        cross(image + 0.5, image),
        geodesic.reconstruction(image[0] + 0.5, image[0], method="erosion", footprint=cross.footprint)[None],
    )
