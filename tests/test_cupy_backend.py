"""The CuPy backend (``tropic.backends.cupy``) against the NumPy backend, bitwise.

GPU tests (marked ``gpu``): every operator and its vjp, float32 / float64 / float16 (bfloat16 where
CuPy has the dtype), ties, ±inf, NaN, shapes that are not multiples of the product's 64 x 64 tile,
batched and broadcast products, every border mode, stride / padding / groups; values, winners and
gradients must equal the NumPy backend's bit for bit (``-0.0 != 0.0``, NaN matches NaN), and the
tiled product kernel must equal the simple one. They skip without CuPy or a CUDA device, and fail
instead when ``TROPIC_REQUIRE_GPU=1`` (a GPU machine, where a skip would hide a broken setup).

CPU tests (no GPU, no CuPy): the source list, the name expressions and the host-side launch
arithmetic. (tests/test_cupy_emulated.py runs the kernels themselves on the CPU, and
tests/test_cupy_compile.py compiles them with nvcc.)
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tropic
from tropic.core.morphology import _MODES, axis_window
from tropic.core.semiring import MAX_PLUS

from .helpers import SEMIRINGS, assert_identical, dyadic, gpu_unavailable, require_gpu, sample

CUPY_DIR = Path(__file__).resolve().parents[1] / "tropic" / "backends" / "cupy"
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
MODES = sorted(set(_MODES.values()))


# ---------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def cp():
    return require_gpu()


def glue(name: str):
    """A module of tropic/backends/cupy that needs no CuPy (``module``, ``layout``), loaded without
    the package's ``__init__`` (which imports CuPy)."""
    if "tropic_cupy_glue" not in sys.modules:
        package = types.ModuleType("tropic_cupy_glue")
        package.__path__ = [str(CUPY_DIR)]
        sys.modules["tropic_cupy_glue"] = package
    return importlib.import_module(f"tropic_cupy_glue.{name}")


def on_gpu(cp, results):
    """Check that every result is a CuPy array and bring it to the host."""
    results = results if isinstance(results, tuple) else (results,)
    for r in results:
        assert isinstance(r, cp.ndarray), type(r)
    return tuple(cp.asnumpy(r) for r in results)


def assert_all_identical(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        assert_identical(a, e)


# ---------------------------------------------------------------------------------------- products

MATMUL_SHAPES = [
    ((5, 7), (7, 3)),
    ((1, 1), (1, 1)),
    ((130, 33), (33, 65)),  # not multiples of the 64 x 64 tile
    ((64, 17), (17, 64)),
    ((3, 0), (0, 4)),  # K = 0
    ((7,), (7, 5)),  # vectors
    ((6, 7), (7,)),
    ((2, 40, 50), (50, 70)),  # the layer case
    ((2, 1, 4, 5), (3, 5, 6)),  # broadcast batches
    ((3, 70, 9), (3, 9, 66)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "simple"])
@pytest.mark.parametrize(("a_shape", "b_shape"), MATMUL_SHAPES, ids=str)
@DTYPES
@SEMIRINGS
def test_matmul(cp, monkeypatch, semiring, dtype, a_shape, b_shape, tiled):
    from tropic.backends.cupy import kernels

    monkeypatch.setattr(kernels, "TILED", tiled)
    rng = np.random.default_rng(0)
    a, b = sample(rng, a_shape, dtype), sample(rng, b_shape, dtype)
    op = tropic.maxplus_matmul if semiring.maximises else tropic.minplus_matmul
    a_gpu, b_gpu = cp.asarray(a), cp.asarray(b)
    got = on_gpu(cp, op(a_gpu, b_gpu, return_indices=True))
    assert_all_identical(got, op(a, b, return_indices=True))
    assert_identical(cp.asnumpy(a_gpu), a)  # inputs untouched
    assert_identical(cp.asnumpy(b_gpu), b)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(257, 300, 130), (64, 64, 64), (1000, 1, 3), (5, 700, 2)])
@pytest.mark.parametrize("specials", [False, True])
@DTYPES
@SEMIRINGS
def test_tiled_product_equals_simple(cp, monkeypatch, semiring, dtype, shape, specials):
    """The shared-memory tiled kernel and the one-thread-per-output kernel agree bitwise."""
    import array_api_compat.cupy as xp

    from tropic.backends.cupy import kernels

    M, K, N = shape
    rng = np.random.default_rng(1)
    a = cp.asarray(sample(rng, (M, K), dtype, specials) + rng.standard_normal((M, K)).astype(dtype))
    b = cp.asarray(sample(rng, (K, N), dtype, specials))
    results = []
    for tiled in (True, False):
        monkeypatch.setattr(kernels, "TILED", tiled)
        results.append(on_gpu(cp, kernels.matmul(xp, semiring, a, b)))
    assert_all_identical(results[0], results[1])


@pytest.mark.gpu
@pytest.mark.parametrize(("a_shape", "b_shape"), MATMUL_SHAPES, ids=str)
@DTYPES
def test_matmul_vjp(cp, dtype, a_shape, b_shape):
    rng = np.random.default_rng(2)
    a, b = sample(rng, a_shape, dtype), sample(rng, b_shape, dtype)
    c, k = tropic.maxplus_matmul(a, b, return_indices=True)
    g = dyadic(rng, c.shape, dtype)
    expected = tropic.matmul_vjp(g, k, a.shape, b.shape)
    got = on_gpu(cp, tropic.matmul_vjp(cp.asarray(g), cp.asarray(k), a.shape, b.shape))
    assert_all_identical(got, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_vjp_normal_gradients(cp, dtype):
    """Sums that round: float32 gradients' float64 sums are exact here (about 90 terms of similar
    magnitude), so they equal NumPy's bitwise; float64 ones are chunked sums (layout.vjp_chunking), equal
    to NumPy's flat-order sums within float64 rounding. Both repeat bitwise."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3, 90, 40)).astype(dtype), rng.standard_normal((3, 40, 70)).astype(dtype)
    a[:, :, :20] = np.round(a[:, :, :20])  # some ties
    c, k = tropic.minplus_matmul(a, b, return_indices=True)
    g = rng.standard_normal(c.shape).astype(dtype)
    expected = tropic.matmul_vjp(g, k, a.shape, b.shape)
    first = on_gpu(cp, tropic.matmul_vjp(cp.asarray(g), cp.asarray(k), a.shape, b.shape))
    second = on_gpu(cp, tropic.matmul_vjp(cp.asarray(g), cp.asarray(k), a.shape, b.shape))
    if dtype == np.float32:
        assert_all_identical(first, expected)
    else:  # reorderings differ by at most (terms) * eps * (sum of |terms|)
        magnitudes = tropic.matmul_vjp(np.abs(g), k, a.shape, b.shape)
        for got, want, magnitude in zip(first, expected, magnitudes, strict=True):
            assert np.all(np.abs(got - want) <= 90 * np.finfo(dtype).eps * magnitude)
    assert_all_identical(second, first)  # deterministic


@pytest.mark.gpu
def test_large_random_product(cp):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 300, 500)).astype(np.float32)
    b = rng.standard_normal((500, 260)).astype(np.float32)
    got = on_gpu(cp, tropic.maxplus_matmul(cp.asarray(a), cp.asarray(b), return_indices=True))
    assert_all_identical(got, tropic.maxplus_matmul(a, b, return_indices=True))


# ---------------------------------------------------------------------------------------- morphology

MORPHOLOGY_CASES = [
    # image shape, element shape, structure?, footprint holes?
    ((6, 7), (3, 3), False, False),
    ((2, 5, 9), (2, 4), True, False),
    ((3, 4), (5, 5), True, True),
    ((2, 3, 40, 33), (7, 7), True, False),
    ((1, 1), (3, 2), False, True),
]


def _morphology_args(rng, case, dtype):
    image_shape, (kh, kw), weighted, holes = case
    image = sample(rng, image_shape, dtype)
    footprint = rng.random((kh, kw)) < 0.7 if holes else None
    structure = sample(rng, (kh, kw), dtype) if weighted else None
    if structure is None and footprint is None:
        return image, None, {"size": (kh, kw)}
    return image, structure, {"footprint": footprint}


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", MORPHOLOGY_CASES, ids=str)
@DTYPES
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_morphology_and_vjp(cp, op, dtype, case, mode):
    rng = np.random.default_rng(5)
    image, structure, element = _morphology_args(rng, case, dtype)
    forward = getattr(tropic, op)
    kwargs = dict(element, mode=mode, cval=1.5, return_indices=True)
    expected = forward(image, structure, **kwargs)
    s_gpu = None if structure is None else cp.asarray(structure)
    got = on_gpu(cp, forward(cp.asarray(image), s_gpu, **kwargs))
    assert_all_identical(got, expected)
    vjp = getattr(tropic, f"{op}_vjp")
    g = dyadic(rng, image.shape, dtype)
    se_shape = case[1]
    want = vjp(g, expected[1], image.shape, se_shape, mode=mode)
    have = on_gpu(cp, vjp(cp.asarray(g), cp.asarray(expected[1]), image.shape, se_shape, mode=mode))
    assert_all_identical(have, want)


TILED_MORPHOLOGY_CASES = [
    # image shape, element shape, structure?, footprint holes?
    ((3, 2, 100, 77), (7, 7), True, False),  # several tiles, ragged edges
    ((2, 256, 256), (7, 7), True, True),
    ((4, 33, 65), (3, 5), False, True),
    ((2, 50, 300), (31, 31), True, False),
    ((1, 5, 9), (32, 32), False, False),  # the largest staged element; H, W < kh, kw
    ((2, 40, 40), (33, 2), True, False),  # too tall to stage: both runs take the simple kernel
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", TILED_MORPHOLOGY_CASES, ids=str)
@pytest.mark.parametrize("specials", [False, True])
@pytest.mark.parametrize("mode", ["neutral", "reflect", "constant"])
@DTYPES
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_tiled_morphology_equals_simple(cp, monkeypatch, op, dtype, mode, specials, case):
    """The shared-memory tiled morphology kernel and the one-thread-per-output kernel agree bitwise
    (values, signs of zeros, NaN positions, winners) on larger images, with infinities everywhere and
    NaN in the upper half only (tiles on the slow path and tiles on the fast one), and both equal the
    NumPy backend."""
    from tropic.backends.cupy import kernels

    image_shape, se_shape, weighted, holes = case
    rng = np.random.default_rng(11)
    image = sample(rng, image_shape, dtype, False) + rng.standard_normal(image_shape).astype(dtype)
    if specials:
        hit = rng.random(image_shape) < 0.05
        image[hit] = rng.choice([-np.inf, np.inf], size=int(hit.sum()))
        upper = image[..., : image_shape[-2] // 2, :]  # a view
        upper[rng.random(upper.shape) < 0.002] = np.nan
    structure = sample(rng, se_shape, dtype, specials) if weighted else None
    if structure is not None:
        structure[np.isnan(structure)] = 0.0  # NaN weights would send every tile to the slow path
    element = {"footprint": rng.random(se_shape) < 0.7} if holes else {}
    if structure is None and not holes:
        element = {"size": se_shape}
    forward = getattr(tropic, op)
    kwargs = dict(element, mode=mode, cval=-0.5, return_indices=True)
    s_gpu = None if structure is None else cp.asarray(structure)
    results = []
    for tiled in (True, False):
        monkeypatch.setattr(kernels, "TILED_MORPHOLOGY", tiled)
        results.append(on_gpu(cp, forward(cp.asarray(image), s_gpu, **kwargs)))
    assert_all_identical(results[0], results[1])
    assert_all_identical(results[0], forward(image, structure, **kwargs))


@pytest.mark.gpu
def test_morphology_image_gradient_any_values(cp):
    """The image gradient sums in the NumPy backend's order: equal for any gradient values."""
    rng = np.random.default_rng(6)
    image = np.round(rng.standard_normal((4, 50, 61)), 1).astype(np.float32)
    out, k = tropic.dilation(image, size=(5, 3), mode="reflect", return_indices=True)
    g = rng.standard_normal(image.shape).astype(np.float32)
    want = tropic.dilation_vjp(g, k, image.shape, (5, 3), mode="reflect")[0]
    have = tropic.dilation_vjp(cp.asarray(g), cp.asarray(k), image.shape, (5, 3), mode="reflect")[0]
    assert_identical(cp.asnumpy(have), want)


# ---------------------------------------------------------------------------------------- conv2d, maxout

CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 2), 1, 0, 1),
    ((1, 4, 9, 8), (6, 2, 3, 3), 2, 1, 2),
    ((2, 2, 5, 5), (2, 1, 2, 3), (2, 1), (0, 2), 2),
    ((1, 1, 3, 3), (1, 1, 3, 3), 3, 2, 1),
    ((3, 8, 20, 17), (16, 2, 5, 3), (1, 2), (2, 1), 4),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@DTYPES
@SEMIRINGS
def test_conv2d_and_vjp(cp, semiring, dtype, case):
    x_shape, w_shape, stride, padding, groups = case
    rng = np.random.default_rng(7)
    x, w = sample(rng, x_shape, dtype), sample(rng, w_shape, dtype)
    op = tropic.maxplus_conv2d if semiring.maximises else tropic.minplus_conv2d
    expected = op(x, w, stride, padding, groups, return_indices=True)
    got = on_gpu(cp, op(cp.asarray(x), cp.asarray(w), stride, padding, groups, return_indices=True))
    assert_all_identical(got, expected)
    g = dyadic(rng, expected[0].shape, dtype)
    want = tropic.conv2d_vjp(g, expected[1], x_shape, w_shape, stride, padding, groups)
    args = (x_shape, w_shape, stride, padding, groups)
    have = on_gpu(cp, tropic.conv2d_vjp(cp.asarray(g), cp.asarray(expected[1]), *args))
    assert_all_identical(have, want)


# Beyond CONV_CASES: several row and column tiles of the tiled kernel (128 positions x 64 channels of a
# group), K over several steps with a partial one, and a layer-sized case.
TILED_CONV_CASES = CONV_CASES + [
    ((4, 16, 33, 31), (150, 8, 3, 5), (1, 2), (2, 1), 2),
    ((2, 64, 20, 20), (128, 64, 3, 3), 1, 1, 1),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", TILED_CONV_CASES, ids=str)
@pytest.mark.parametrize("specials", [False, True])
@DTYPES
@SEMIRINGS
def test_tiled_conv2d_equals_simple(cp, monkeypatch, semiring, dtype, case, specials):
    """The tiled conv2d kernel (tiled.cuh's block tile over the implicit unfold) and the
    one-thread-per-output kernel agree bitwise, values and winners."""
    import array_api_compat.cupy as xp

    from tropic.backends.cupy import kernels
    from tropic.core.conv import ConvGeometry

    x_shape, w_shape, stride, padding, groups = case
    rng = np.random.default_rng(11)
    x = cp.asarray(sample(rng, x_shape, dtype, specials))
    w = cp.asarray(sample(rng, w_shape, dtype, specials))
    geometry = ConvGeometry(x_shape, w_shape, stride, padding, groups)
    shapes = (geometry.x_shape, geometry.w_shape, geometry.out_shape, geometry.padding, geometry.groups)
    assert kernels.layout.conv_tiled_fits(*shapes)  # so the tiled kernel runs
    results = []
    for tiled in (True, False):
        monkeypatch.setattr(kernels, "TILED_CONV", tiled)
        results.append(on_gpu(cp, kernels.conv2d(xp, semiring, x, w, geometry)))
    assert_all_identical(results[0], results[1])


@pytest.mark.gpu
@pytest.mark.parametrize(("shape", "pieces", "axis"), [((3, 8), 4, -1), ((6, 5, 2), 3, 0), ((2, 9, 4), 9, 1)])
@DTYPES
def test_maxout_and_vjp(cp, dtype, shape, pieces, axis):
    rng = np.random.default_rng(8)
    x = sample(rng, shape, dtype)
    expected = tropic.maxout(x, pieces, axis, return_indices=True)
    got = on_gpu(cp, tropic.maxout(cp.asarray(x), pieces, axis, return_indices=True))
    assert_all_identical(got, expected)
    g = rng.standard_normal(expected[0].shape).astype(dtype)
    want = tropic.maxout_vjp(g, expected[1], shape, pieces, axis)
    (have,) = on_gpu(cp, tropic.maxout_vjp(cp.asarray(g), cp.asarray(expected[1]), shape, pieces, axis))
    assert_identical(have, want)


@pytest.mark.gpu
def test_bfloat16_against_the_reference(cp):
    """bfloat16 (where CuPy has it) against core's array-API reference run in bfloat16 on CuPy."""
    try:
        a = cp.asarray(sample(np.random.default_rng(9), (33, 20), np.float32)).astype("bfloat16")
    except Exception as exc:  # CuPy without bfloat16
        pytest.skip(f"this CuPy has no bfloat16 arrays ({type(exc).__name__}: {exc})")
    import array_api_compat.cupy as compat_cupy

    from tropic.core.matmul import matmul_reference

    b = a[:20, :17].T.copy()
    try:
        got = tropic.maxplus_matmul(a, b, return_indices=True)
    except TypeError as exc:
        if "real floating" not in str(exc):
            raise
        pytest.skip(f"the array API layer does not take CuPy's bfloat16 yet ({exc})")
    expected = matmul_reference(compat_cupy, MAX_PLUS, a, b)
    for x, y in zip(got, expected, strict=True):
        assert bool(((x == y) | (cp.isnan(x) & cp.isnan(y))).all())


# ---------------------------------------------------------------------------------------- CPU: the glue


def test_name_expressions_cover_every_kernel_and_type():
    module = glue("module")
    assert set(module.SOURCES) == {p.name for p in (CUPY_DIR / "cuda").glob("*.cu")}
    for source, kernels in module.KERNELS.items():
        full = module.name_expressions(source, "full")
        assert full == [f"{k}<{t}>" for k in kernels for t in ("float", "double")]
        assert module.name_expressions(source, "fp16") == [f"{k}<__half>" for k in kernels]
        assert module.name_expressions(source, "bf16") == [f"{k}<__nv_bfloat16>" for k in kernels]
        assert module.source_of(kernels[0]) == source


def test_source_text_inlines_the_header():
    module = glue("module")
    for source in module.SOURCES:
        full = module.source_text(source, "full")
        assert '#include "common.cuh"' not in full and "struct Best" in full
        assert "#pragma once" not in full and "#define TROPIC_FP16" not in full
        assert module.source_text(source, "fp16").startswith("#define TROPIC_FP16 1\n")
        assert module.source_text(source, "bf16").startswith("#define TROPIC_BF16 1\n")


def test_cuda_types():
    module = glue("module")
    types_ = [module.cuda_type(t) for t in (np.float32, np.float64, np.float16)]
    assert types_ == ["float", "double", "__half"]
    assert module.group_of("__half") == "fp16" and module.group_of("double") == "full"
    assert module.group_of("__nv_bfloat16") == "bf16" and module.cuda_type("bfloat16") == "__nv_bfloat16"
    with pytest.raises(TypeError, match="no kernels for dtype int32"):
        module.cuda_type(np.int32)


def test_launch_sizes():
    layout = glue("layout")
    assert layout.launch_size(0) == ((1,), (256,))
    assert layout.launch_size(256) == ((1,), (256,))
    assert layout.launch_size(257) == ((2,), (256,))
    assert layout.launch_size(10**12) == ((layout.MAX_GRID,), (256,))
    tm, tn = layout.TILE_M, layout.TILE_N
    assert layout.tile_grid(2 * tm + 2, tn + 1, 3) == (2, 3, 3)  # (blocks in N, in M, batches)
    assert layout.tile_grid(tm, tn, 3) == (1, 1, 3)
    assert layout.tile_grid(1, 1, 70000) == (1, 1, 65535)
    assert layout.tiled_fits(tm * 65535) and not layout.tiled_fits(tm * 65535 + 1)


def test_batch_offsets():
    layout = glue("layout")
    offsets = layout.batch_offsets((2, 1), (2, 3), 10)
    assert offsets.tolist() == [0, 0, 0, 10, 10, 10]
    assert layout.batch_offsets((), (4,), 6).tolist() == [0, 0, 0, 0]
    assert layout.batch_offsets((3,), (2, 3), 5).tolist() == [0, 5, 10, 0, 5, 10]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n", "k", "reflected"), [(6, 3, True), (3, 5, False), (1, 4, True), (9, 1, False)])
def test_inverse_lines(mode, n, k, reflected):
    layout = glue("layout")
    table = axis_window(n, k, reflected, mode).indices
    ptr, out, tap = layout.inverse_lines(table, n)
    for r in range(n):
        pairs = list(zip(out[ptr[r] : ptr[r + 1]].tolist(), tap[ptr[r] : ptr[r + 1]].tolist(), strict=True))
        expected = [(i, u) for i in range(table.shape[0]) for u in range(k) if table[i, u] == r]
        assert pairs == expected


@pytest.mark.parametrize(("positions", "keys"), [(1, 1), (4096, 1), (4097, 3), (10**8, 49), (10**6, 10**6)])
def test_chunking(positions, keys):
    layout = glue("layout")
    chunks, size = layout.chunking(positions, keys)
    assert chunks >= 1 and chunks * size >= positions and (chunks - 1) * size < positions
    assert chunks * keys <= max(keys, 1 << 22)


def test_backend_unavailable_without_cupy():
    if gpu_unavailable() is None or "not installed" not in gpu_unavailable():
        pytest.skip("CuPy is installed")
    from tropic.core.dispatch import backend_status, load_backend

    load_backend("cupy")
    assert backend_status()["cupy"].startswith("not available")


@pytest.mark.gpu
@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "simple"])
def test_subnormals_are_not_flushed(cp, monkeypatch, tiled):
    """CuPy compiles with -ftz=true; float32 subnormal sums, compares and gradients must still be
    NumPy's (the kernels use PTX without .ftz for them)."""
    from tropic.backends.cupy import kernels

    monkeypatch.setattr(kernels, "TILED", tiled)
    tiny = np.float32(1e-45)  # the smallest float32 subnormal
    rng = np.random.default_rng(10)
    a = (rng.integers(-3, 4, size=(33, 20)) * tiny).astype(np.float32)
    b = (rng.integers(-3, 4, size=(20, 31)) * tiny).astype(np.float32)
    for op in (tropic.maxplus_matmul, tropic.minplus_matmul):
        expected = op(a, b, return_indices=True)
        assert_all_identical(on_gpu(cp, op(cp.asarray(a), cp.asarray(b), return_indices=True)), expected)
    c, k = tropic.maxplus_matmul(a, b, return_indices=True)
    g = (rng.integers(-3, 4, size=c.shape) * tiny).astype(np.float32)
    want = tropic.matmul_vjp(g, k, a.shape, b.shape)
    assert_all_identical(on_gpu(cp, tropic.matmul_vjp(cp.asarray(g), cp.asarray(k), a.shape, b.shape)), want)
    image = a[None]
    expected = tropic.dilation(image, b[:3, :3], return_indices=True)
    assert_all_identical(
        on_gpu(cp, tropic.dilation(cp.asarray(image), cp.asarray(b[:3, :3]), return_indices=True)), expected
    )
