"""The compiled CPU kernels: their portable generic path gives the same bits as the SIMD path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tropic
from tropic.backends.numpy import compiled, kernels
from tropic.core.semiring import MAX_PLUS, MIN_PLUS

from .helpers import assert_identical, order_revealing, tie_heavy

pytestmark = pytest.mark.skipif(
    not compiled.available() and not os.environ.get("CI"),
    reason="compiled kernels not built (optional)",
)

# Tie-heavy integers with infinities of both signs and signed zeros: every rule is exercised.
_CASES = """
import numpy as np, tropic
rng = np.random.default_rng(3)
def data(shape, dtype):
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.05] = np.inf
    x[rng.random(shape) < 0.05] = -np.inf
    x[rng.random(shape) < 0.1] = -0.0
    return x
results = []
for dtype in (np.float32, np.float64):
    a, b = data((37, 29), dtype), data((29, 45), dtype)
    for product in (tropic.maxplus_matmul, tropic.minplus_matmul):
        results += list(product(a, b, return_indices=True))
        results.append(product(a, b))  # the values-only instances
        results.append(product(data((9, 600), dtype), data((600, 40), dtype)))  # two k-blocks
        # a layer's x @ W.T: B packed from its transpose (k tails, the N tail, two k-blocks)
        results += list(product(a, data((45, 29), dtype).T, return_indices=True))
        results += list(product(data((9, 600), dtype), data((40, 600), dtype).T, return_indices=True))
        # a B almost all the tropical zero: the products over each column's kept entries
        zero = -np.inf if product is tropic.maxplus_matmul else np.inf
        sparse = np.where(rng.random((40, 600)) < 0.004, data((40, 600), dtype), zero).astype(dtype)
        results += list(product(data((9, 600), dtype), sparse.T, return_indices=True))
        results += list(product(data((9, 600), dtype), np.ascontiguousarray(sparse.T), return_indices=True))
        results += list(product(data((37, 600), dtype), sparse.T, return_indices=True))  # row tiles
    images, structure = data((3, 21, 19), dtype), data((3, 4), dtype)
    footprint = rng.random((5, 3)) < 0.6
    for op in (tropic.dilation, tropic.erosion):
        results += list(op(images, structure, mode="reflect", return_indices=True))
        results += list(op(images, footprint=footprint, return_indices=True))
        results += list(op(images, size=(4, 5), mode="nearest", return_indices=True))
        results.append(op(images, structure, mode="reflect"))  # the values-only tap loop
        signal, element = data((2, 20000), dtype), data((7,), dtype)  # a long row, read in place
        results += list(op(signal, element, axes=-1, origin=1, mode="wrap", return_indices=True))
        results.append(op(signal, element, axes=-1, origin=1, mode="wrap"))
    x, w = data((2, 4, 9, 11), dtype), data((6, 2, 3, 2), dtype)
    for conv in (tropic.maxplus_conv2d, tropic.minplus_conv2d):
        results += list(conv(x, w, padding=1, groups=2, return_indices=True))
        results.append(conv(x, w, padding=1, groups=2))  # the values-only channel loop
        # AVX-512's row blocks: output widths 7, 16, 20, 32, 37 (one partial vector, one full, a full and
        # a partial, two full, two full and a partial, for 16 float32 lanes; 8 float64 lanes), blocks
        # of 4 + 1 output channels, and of 2 (groups 3, 3 x 3)
        for width in (7, 16, 20, 32, 37):
            rows = data((2, 3, 4, width), dtype)
            for weight, groups in ((data((5, 3, 2, 3), dtype), 1), (data((6, 1, 3, 3), dtype), 3)):
                results += list(conv(rows, weight, padding=1, groups=groups, return_indices=True))
                results.append(conv(rows, weight, padding=1, groups=groups))
# half-precision products with winners (every sum rounded in the micro-kernel; ties after rounding)
from tropic.backends.numpy import kernels
from tropic.core.semiring import MAX_PLUS, MIN_PLUS
# an MPM layer's pair of products (one pass where the CPU has a pair kernel, else one after the other)
def few_infinities(shape, dtype):  # at 600 k, data()'s infinities would make every best infinite
    x = rng.integers(-8, 9, shape).astype(dtype)
    x[rng.random(shape) < 2e-4] = np.inf
    x[rng.random(shape) < 2e-4] = -np.inf
    x[rng.random(shape) < 0.1] = -0.0
    return x
# (K 600: two k-blocks of 300, whose winners AVX-512 tracks in blocks of 8 k and rescans; K 100: one
# short k-block, tracked pair by pair)
for dtype in (np.float32, np.float64):
    for K in (600, 100):
        x, w, bias = few_infinities((37, K), dtype), few_infinities((45, K), dtype), data((45,), dtype)
        for b in (w.T, np.ascontiguousarray(w.T)):
            for winners in (True, False):
                pair = kernels.matmul_pair(np, (x, b, bias, True), (x, b, None, False), None, winners)
                results += [r for r in pair if r is not None]  # the sum, and the winners stacked
for rounding in ("float16", "bfloat16"):
    scale = lambda shape: rng.choice([1.0, 1 / 1024, 1 / 3, 4096.0], shape).astype(np.float32)
    for M, K, N in ((37, 29, 45), (9, 600, 40)):  # one short k-block; two long ones (blocks of 8 k)
        operand = data if K < 100 else few_infinities
        a, b = operand((M, K), np.float32) * scale((M, K)), operand((K, N), np.float32) * scale((K, N))
        kernels.rounder(rounding)(a), kernels.rounder(rounding)(b)
        for semiring in (MAX_PLUS, MIN_PLUS):
            results += list(kernels.product(semiring, a, b, np.int32, rounding))
            results.append(kernels.product(semiring, a, b, np.int32, rounding, winners=False)[0])
"""


def _run_cases(**env: str) -> list[np.ndarray]:
    """The cases in a fresh process (the kernels read their ISA switches once, at load)."""
    code = _CASES + "np.savez(__import__('sys').argv[1], *results)"
    tag = "_".join(f"{k}{v}" for k, v in env.items()) or "default"
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tropic_compiled_{os.getpid()}_{tag}.npz")
    clean = {k: v for k, v in os.environ.items() if k not in ("TROPIC_FORCE_GENERIC", "TROPIC_MAX_ISA")}
    subprocess.run([sys.executable, "-c", code, path], check=True, env={**clean, **env})
    with np.load(path) as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    os.remove(path)
    return arrays


@pytest.mark.parametrize(
    "switch", [{"TROPIC_FORCE_GENERIC": "1"}, {"TROPIC_MAX_ISA": "avx2"}], ids=["generic", "avx2"]
)
def test_every_instruction_set_gives_the_same_bits(switch):
    """The widest path the CPU allows (AVX-512 / AVX2) against a narrower one, bit for bit."""
    widest, narrower = _run_cases(), _run_cases(**switch)
    assert len(widest) == len(narrower) > 0
    for fast, other in zip(widest, narrower, strict=True):
        assert_identical(other, fast)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(1, 7, 5), (3, 29, 17), (37, 600, 45), (64, 256, 256), (200, 40, 3)], ids=str
)
def test_values_only_products_are_the_bits_of_the_full_ones(shape, dtype):
    """Without return_indices the kernels skip the winners (an add and a max per pair): the values
    are those of the product with winners, bit for bit, through ties, infinities, signed zeros, NaN
    and biases, on one thread and on several."""
    M, K, N = shape
    rng = np.random.default_rng(M * K + N)

    def data(shape):
        return tie_heavy(rng, shape, dtype, nan=0.0)  # NaN comes in separately below

    a, b, bias = data((M, K)), data((K, N)), data((N,))
    a_nan = a.copy()
    a_nan[rng.random(a.shape) < 0.01] = np.nan
    for threads in (1, 2):
        tropic.set_num_threads(threads)
        try:
            for product in (tropic.maxplus_matmul, tropic.minplus_matmul):
                for left, extra in ((a, {}), (a_nan, {}), (a, {"bias": bias})):
                    full, _ = product(left, b, return_indices=True, **extra)
                    assert_identical(product(left, b, **extra), full)
        finally:
            tropic.set_num_threads(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 256, 256), (5, 700, 3), (3, 2, 2100)], ids=str)
def test_a_single_nan_anywhere_is_found_on_one_thread_and_on_the_pool(monkeypatch, shape, dtype):
    """The compiled product scans its operands for NaN in blocks (2048 elements) before the NaN rule:
    one NaN at the first, the last or a block's edge of either operand gives the NumPy path's values
    and winners, on one thread and split on the pool."""
    M, K, N = shape
    rng = np.random.default_rng(M + K + N)
    a, b = rng.integers(-3, 4, (M, K)).astype(dtype), rng.integers(-3, 4, (K, N)).astype(dtype)
    cases = []
    for operand in (a, b):
        for flat in {0, 2047, 2048, operand.size - 1} & set(range(operand.size)):
            hit = operand.copy()
            hit.reshape(-1)[flat] = np.nan
            cases.append((hit, b) if operand is a else (a, hit))
    monkeypatch.setattr(kernels, "_PARALLEL_PRODUCT_PAIRS", 0)
    for left, right in cases:
        for threads in (1, 2):
            tropic.set_num_threads(threads)
            try:
                got = tropic.maxplus_matmul(left, right, return_indices=True)
                values_only = tropic.minplus_matmul(left, right)
            finally:
                tropic.set_num_threads(None)
            assert np.isnan(got[0]).any()
            monkeypatch.setattr(compiled, "enabled", False)
            expected = tropic.maxplus_matmul(left, right, return_indices=True)
            expected_min = tropic.minplus_matmul(left, right)
            monkeypatch.setattr(compiled, "enabled", True)
            for x, y in zip(got, expected, strict=True):
                assert_identical(x, y)
            assert_identical(values_only, expected_min)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs"),
    [
        ((2, 4, 9, 11), (6, 2, 3, 2), {"padding": 1, "groups": 2}),
        ((3, 1, 28, 28), (6, 1, 5, 5), {"padding": 2}),
        ((2, 6, 14, 14), (16, 6, 5, 5), {}),
        ((2, 3, 8, 8), (5, 3, 3, 3), {"stride": 2, "padding": 1}),
    ],
    ids=str,
)
def test_values_only_convolutions_are_the_bits_of_the_full_ones(x_shape, w_shape, kwargs, dtype):
    """Without return_indices the channel tap loop skips the winners: the values are those of the
    convolution with winners, bit for bit (ties, infinities, signed zeros; NaN and stride 2 take the
    im2col path, which computes the winners anyway)."""
    rng = np.random.default_rng(sum(x_shape))

    def data(shape):
        return tie_heavy(rng, shape, dtype, nan=0.0)  # NaN comes in separately below

    x, w = data(x_shape), data(w_shape)
    x_nan = x.copy()
    x_nan[0, 0, 0, 0] = np.nan
    for conv in (tropic.maxplus_conv2d, tropic.minplus_conv2d):
        for image in (x, x_nan):
            full, _ = conv(image, w, return_indices=True, **kwargs)
            assert_identical(conv(image, w, **kwargs), full)


def test_status_names_the_instruction_set():
    for state in compiled.status().values():
        assert any(isa in state for isa in ("avx512", "avx2", "generic")), state


@pytest.mark.parametrize("library", sorted(compiled._ABI_VERSIONS))
def test_a_build_of_another_calling_convention_is_not_used(monkeypatch, library):
    """Each built library reports the calling convention compiled.py expects; one that reports
    another (an editable install not rebuilt after its C signatures changed) is not loaded, and its
    status says why and how to rebuild, so the NumPy path runs instead of a mis-called kernel."""
    symbol, expected = compiled._ABI_VERSIONS[library]
    monkeypatch.setitem(compiled._status, library, compiled._status[library])
    assert compiled._load(library) is not None, compiled._status[library]
    monkeypatch.setitem(compiled._ABI_VERSIONS, library, (symbol, expected + 1))
    assert compiled._load(library) is None
    assert f"calling convention {expected}, this tropic expects {expected + 1}" in compiled._status[library]
    assert "rebuild" in compiled._status[library]


@pytest.mark.parametrize("flat_rect_taps", [0, kernels._FLAT_RECT_TAPS])
@pytest.mark.parametrize("shape", [(7, 6), (3, 3), (1, 5)])
def test_flat_rectangle_matches_the_tap_loop(monkeypatch, flat_rect_taps, shape):
    """Full flat rectangles, on the van Herk kernel (``_FLAT_RECT_TAPS`` 0) and, up to
    ``_FLAT_RECT_TAPS`` taps, on the flat tap loop, against the general (weighted) tap kernel on the
    same input, ties and tropical zeros included."""
    monkeypatch.setattr(kernels, "_FLAT_RECT_TAPS", flat_rect_taps)
    rng = np.random.default_rng(5)
    image = rng.integers(-3, 3, (2, 40, 33)).astype(np.float32)
    image[0, 5:9, 5:9] = -np.inf
    image[1, 10:12, 3:5] = np.inf
    full = np.ones(shape, dtype=bool)
    for op in (tropic.dilation, tropic.erosion):
        for mode in ("neutral", "reflect", "wrap"):
            rect = op(image, footprint=full, mode=mode, return_indices=True)
            # The same rectangle as a structure of zeros runs the tap kernel (a weighted one).
            taps = op(image, np.zeros(shape, np.float32), mode=mode, return_indices=True)
            for got, want in zip(rect, taps, strict=True):
                assert_identical(got, want)
            assert_identical(op(image, footprint=full, mode=mode), rect[0])  # values alone


def test_the_tap_tables_of_large_elements_are_not_kept(monkeypatch):
    """The tap loop caches the tables of elements up to ``_CACHED_ELEMENT_SIZE`` entries only (a
    large element's would hold megabytes), and gives the NumPy path's bits either way."""
    rng = np.random.default_rng(7)
    image = rng.integers(-3, 3, (2, 40, 40)).astype(np.float32)
    small, large = rng.random((5, 5)) < 0.6, rng.random((33, 33)) < 0.6  # 25 and 1089 entries
    kernels._element_taps_of.cache_clear()
    got = [tropic.dilation(image, footprint=fp, return_indices=True) for fp in (small, large, small)]
    info = kernels._element_taps_of.cache_info()
    assert (info.currsize, info.misses) == (1, 1) and info.hits > 0  # the small one kept, found again
    monkeypatch.setattr(compiled, "enabled", False)
    for fp, result in zip((small, large, small), got, strict=True):
        for g, w in zip(result, tropic.dilation(image, footprint=fp, return_indices=True), strict=True):
            assert_identical(g, w)


def test_small_flat_rectangles_take_the_tap_loop_where_it_is_vectorised(monkeypatch):
    """Up to ``_FLAT_RECT_TAPS`` taps a full flat rectangle runs the tap loop (where the morphology
    kernels are vectorised), above it van Herk's kernel."""
    if compiled.isa("morphology_c") not in ("avx2", "avx512+avx2"):
        pytest.skip("the morphology kernels are not vectorised here (no AVX2): van Herk for every size")
    called = []
    real = kernels._compiled_rect
    monkeypatch.setattr(kernels, "_compiled_rect", lambda *a, **k: called.append(1) or real(*a, **k))
    image = np.random.default_rng(6).standard_normal((2, 30, 30)).astype(np.float32)
    tropic.dilation(image, size=7)  # 49 taps
    assert called == []
    tropic.dilation(image, size=(7, 8))  # 56 taps
    assert called == [1]


def test_backward_kernels_match_the_numpy_path_bitwise(monkeypatch):
    """Compiled scatter-adds sum in float64 in the outputs' order, exactly as np.bincount does."""
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, (3, 4, 9, 8)).astype(np.float32)  # ties: many outputs share winners
    w = rng.integers(-2, 3, (6, 2, 3, 2)).astype(np.float32)
    a, b = x.reshape(12, 72)[:, :20], rng.integers(-2, 3, (20, 15)).astype(np.float32)
    structure = rng.integers(-2, 3, (3, 4)).astype(np.float32)

    def gradients():
        c, k = tropic.maxplus_matmul(a, b, return_indices=True)
        y, j = tropic.maxplus_conv2d(x, w, stride=(2, 1), padding=1, groups=2, return_indices=True)
        d, t = tropic.dilation(x, structure, mode="mirror", return_indices=True)
        g = np.random.default_rng(12)  # the same random float gradients on both paths
        return [
            *tropic.matmul_vjp(g.standard_normal(c.shape, dtype=np.float32), k, a.shape, b.shape),
            *tropic.conv2d_vjp(
                g.standard_normal(y.shape, dtype=np.float32), j, x.shape, w.shape, (2, 1), 1, 2
            ),
            *tropic.dilation_vjp(
                g.standard_normal(d.shape, dtype=np.float32), t, x.shape, (3, 4), mode="mirror"
            ),
        ]

    fast = gradients()
    monkeypatch.setattr(compiled, "enabled", False)
    for got, want in zip(fast, gradients(), strict=True):
        assert_identical(got, want)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "padding", "groups"),
    [((6, 1, 14, 13), (6, 1, 3, 3), 1, 1, 1), ((3, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 2), 2)],
    ids=["one channel", "grouped and strided"],
)
def test_convolution_gradients_add_in_the_outputs_order(
    monkeypatch, threads, x_shape, w_shape, stride, padding, groups
):
    """Each slot of a convolution's gradients is a float64 sum of its outputs' gradients in the
    outputs' order, as np.bincount takes them. Gradients of +-1 and +-2**60 make the order show in
    the rounded result (2**60 + 1 - 2**60 is 0, 2**60 - 2**60 + 1 is 1), so a sum taken in another
    order (the weight's channels or an image's columns visited otherwise) fails; integer images give
    ties, so that many outputs share a slot."""
    rng = np.random.default_rng(21)
    x = rng.integers(-2, 3, x_shape).astype(np.float32)
    w = rng.integers(-2, 3, w_shape).astype(np.float32)
    y, k = tropic.maxplus_conv2d(x, w, stride=stride, padding=padding, groups=groups, return_indices=True)
    g = order_revealing(rng, y.shape, np.float32)
    tropic.set_num_threads(threads)
    try:
        fast = tropic.conv2d_vjp(g, k, x.shape, w.shape, stride, padding, groups)
    finally:
        tropic.set_num_threads(None)
    monkeypatch.setattr(compiled, "enabled", False)
    expected = tropic.conv2d_vjp(g, k, x.shape, w.shape, stride, padding, groups)
    for got, want in zip(fast, expected, strict=True):
        assert_identical(got, want)
    # the data reach the case: the weight's slots summed in reverse order differ somewhere
    slot = (np.arange(w.shape[0]).reshape(1, -1, 1, 1) * (w.size // w.shape[0]) + k).ravel()
    won = k.ravel() >= 0
    reverse = np.zeros(w.size)
    np.add.at(reverse, slot[won][::-1], g.ravel()[won][::-1].astype(np.float64))
    assert (reverse.astype(np.float32) != expected[1].ravel()).any()


@pytest.mark.parametrize(("n", "H", "cost", "tasks"), [(128, 64, 1600, 8), (3, 500, 40, 8), (1, 7, 10**7, 4)])
def test_task_blocks_cover_every_row_once(n, H, cost, tasks):
    blocks = kernels._task_blocks(n, H, cost, tasks, kernels._TASK_CANDIDATES)
    seen = np.zeros((n, H), int)
    for b0, b1, i0, i1 in blocks:
        assert b0 < b1 and i0 < i1
        assert b1 - b0 == 1 or (i0, i1) == (0, H)  # a block is whole images or rows of one image
        assert (b1 - b0) * (i1 - i0) * cost <= max(kernels._TASK_CANDIDATES, cost)
        seen[b0:b1, i0:i1] += 1
    assert (seen == 1).all()


def test_parallel_tasks_runs_each_task_once_and_reraises():
    done = []
    kernels.parallel_tasks(37, done.append, threads=3)
    assert sorted(done) == list(range(37))

    def fail(t: int) -> None:
        if t == 5:
            raise ValueError("task 5")

    with pytest.raises(ValueError, match="task 5"):
        kernels.parallel_tasks(9, fail, threads=2)


@pytest.mark.parametrize("flat_rect_taps", [0, kernels._FLAT_RECT_TAPS])
@pytest.mark.parametrize("threads", [1, 2])
def test_blocked_taps_match_the_numpy_path(monkeypatch, threads, flat_rect_taps):
    """Tiny blocks (row bands and image blocks) on several threads, NaN and infinities included,
    give the NumPy path's bits: the blocks' padding, NaN flags and van Herk bands stitch correctly
    (``_FLAT_RECT_TAPS`` 0: the flat rectangles on van Herk's kernel, else on the tap loop)."""
    monkeypatch.setattr(kernels, "_FLAT_RECT_TAPS", flat_rect_taps)
    rng = np.random.default_rng(21)
    images = rng.integers(-2, 3, (3, 23, 17)).astype(np.float32)
    images[0, 4, 4], images[2, 20, 1] = np.nan, -np.inf
    structure = rng.integers(-2, 3, (4, 3)).astype(np.float32)
    structure[1, 1] = -np.inf
    footprint = rng.random((5, 5)) < 0.5
    cases = [
        lambda: tropic.dilation(images, structure, mode="reflect", return_indices=True),
        lambda: tropic.erosion(images, structure, return_indices=True),
        lambda: tropic.dilation(images[1:2], structure, mode="constant", cval=np.nan, return_indices=True),
        lambda: tropic.erosion(images, footprint=footprint, mode="wrap", return_indices=True),
        # full flat rectangles: van Herk's kernel or the tap loop, on blocks and bands (dilation flipped)
        lambda: tropic.dilation(
            np.nan_to_num(images, nan=1.0), size=(3, 4), mode="reflect", return_indices=True
        ),
        lambda: tropic.erosion(np.nan_to_num(images, nan=1.0), size=(4, 3), return_indices=True),
    ]
    tropic.set_num_threads(threads)
    try:
        monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
        monkeypatch.setattr(kernels, "_TASK_CANDIDATES", 200)  # a few rows per block
        fast = [case() for case in cases]
        monkeypatch.setattr(compiled, "enabled", False)
        for got, want in zip(fast, [case() for case in cases], strict=True):
            for g, w in zip(got, want, strict=True):
                assert_identical(g, w)
    finally:
        tropic.set_num_threads(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("M", "K", "N"), [(37, 29, 45), (2, 50, 300), (100, 7, 3), (1, 1, 1)])
def test_product_shares_give_the_whole_product(dtype, M, K, N):
    """Any split into shares (more shares than tiles included) writes every output exactly once,
    with the bits of the one-call kernel."""
    rng = np.random.default_rng(M * K * N)
    a = rng.integers(-2, 3, (M, K)).astype(dtype)  # ties everywhere
    b = rng.integers(-2, 3, (K, N)).astype(dtype)
    b[0, 0], a[-1, -1] = -np.inf, np.inf
    name = "tropic_matmul_f32" if dtype == np.float32 else "tropic_matmul_f64"
    whole, part = compiled.function(name), compiled.function(name.replace("matmul", "matmul_part"))
    for maximise in (1, 0):
        c, idx = np.empty((M, N), dtype), np.empty((M, N), np.int32)
        assert whole(a, b, c, idx, M, K, N, maximise, 1) == 0
        for tasks in (1, 2, 3, 7, 64):
            c_parts, idx_parts = np.full((M, N), np.nan, dtype), np.full((M, N), -7, np.int32)
            for t in range(tasks):
                assert part(a, b, c_parts, idx_parts, M, K, N, maximise, t, tasks) == 0
            assert_identical(c_parts, c)
            assert_identical(idx_parts, idx)
        assert part(a, b, c, idx, M, K, N, maximise, 3, 3) == 1  # task out of range


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (33, 65), (64, 64), (300, 17), (40, 256)])
def test_tiled_transpose_copies_every_element(dtype, shape):
    """The compiled transpose (the products' copy of a layer's ``W.T``) against NumPy's, with signed
    zeros, infinities and NaN, bit for bit; and ``_c_order`` on a shape that takes it."""
    rng = np.random.default_rng(shape[0] * shape[1])
    w = _tie_data(rng, shape, dtype)
    w[rng.random(shape) < 0.05] = np.nan
    name = "tropic_transpose_f32" if dtype == np.float32 else "tropic_transpose_f64"
    copied = np.empty(shape[::-1], dtype)
    assert compiled.function(name)(w, copied, *shape) == 0
    assert_identical(copied, np.ascontiguousarray(w.T))
    ordered = kernels._c_order(w.T)
    assert ordered.flags.c_contiguous
    assert_identical(ordered, np.ascontiguousarray(w.T))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("M", "K", "N"),
    # one row (thin products read a C-ordered B in place) and an M tail; K below one tile, with a tile
    # tail, 256 (rows of W a multiple of 1 KiB) and 1100 (three k-blocks); N below one tile, an N tail
    [(1, 256, 130), (3, 5, 7), (40, 256, 130), (17, 13, 33), (9, 1100, 40), (64, 784, 256)],
    ids=str,
)
def test_product_of_a_transposed_view_equals_the_contiguous_product(dtype, M, K, N):
    """A layer's ``x @ W.T`` (B packed from its transpose where it lies) gives the bits of the product
    of the contiguous copy: values, winners, ties, infinities, signed zeros and NaN, with and without
    winners and a bias, on one thread and two."""
    rng = np.random.default_rng(M * K + N)
    x, w = tie_heavy(rng, (M, K), dtype, nan=0.002), tie_heavy(rng, (N, K), dtype, nan=0.002)
    bias = tie_heavy(rng, (N,), dtype, nan=0.0)
    for threads in (1, 2):
        tropic.set_num_threads(threads)
        try:
            for product in (tropic.maxplus_matmul, tropic.minplus_matmul):
                for extra in ({}, {"bias": bias}):
                    got = product(x, w.T, return_indices=True, **extra)
                    expected = product(x, np.ascontiguousarray(w.T), return_indices=True, **extra)
                    for g, e in zip(got, expected, strict=True):
                        assert_identical(g, e)
                    assert_identical(product(x, w.T, **extra), expected[0])
        finally:
            tropic.set_num_threads(None)


def test_the_direct_entry_checks_the_shape_of_a_transposed_b():
    """``product(..., b_transposed=True)`` takes B's transpose, (N, K), and says so when it does not fit."""
    direct = compiled.entry("matmul_c", "product")
    if direct is None:
        pytest.skip("the products' extension module is not built")
    a, w = np.ones((4, 3), np.float32), np.ones((5, 3), np.float32)
    c, idx = np.empty((4, 5), np.float32), np.empty((4, 5), np.int32)
    assert direct(a, w, c, idx, 1, 1, 1, True) == (0, 0)
    assert_identical(c, np.full((4, 5), 2.0, np.float32))
    with pytest.raises(ValueError, match=r"\(M, K\), \(N, K\)"):
        direct(a, np.ones((3, 5), np.float32), c, idx, 1, 1, 1, True)


def test_the_direct_entry_takes_a_pair_and_refuses_what_is_not_one():
    """``product(..., maximise=2)``: the max-plus product into the first M rows of c and idx, the
    min-plus product into the last M, each with its own bias; with no candidate (K = 0) every output
    is its zero, without a winner. Other senses, and a ``bias_min`` without a pair, are refused."""
    direct = compiled.entry("matmul_c", "product")
    if direct is None:
        pytest.skip("the products' extension module is not built")
    for dtype in (np.float32, np.float64):
        a, b = np.array([[0.0, 3.0]], dtype), np.array([[0.0], [-1.0]], dtype)
        c, idx = np.empty((2, 1), dtype), np.empty((2, 1), np.int32)
        bias_max, bias_min = np.array([5.0], dtype), np.array([1.0], dtype)
        assert direct(a, b, c, idx, 2, 1, 1, False, bias_max, bias_min) == (0, 0)
        assert_identical(c, np.array([[5.0], [0.0]], dtype))  # max(5, 0, 2); min(1, 0, 2)
        assert_identical(idx, np.array([[2], [0]], np.int32))  # the bias (K = 2), then k = 0
        empty_a, empty_b = np.empty((3, 0), dtype), np.empty((0, 4), dtype)
        c, idx = np.empty((6, 4), dtype), np.empty((6, 4), np.int32)
        assert direct(empty_a, empty_b, c, idx, 2) == (0, 0)
        assert_identical(c, np.concatenate([np.full((3, 4), -np.inf, dtype), np.full((3, 4), np.inf, dtype)]))
        assert_identical(idx, np.full((6, 4), -1, np.int32))
        with pytest.raises(ValueError, match="maximise must be 0, 1 or 2"):
            direct(a, b, np.empty((1, 1), dtype), None, 3)
        with pytest.raises(ValueError, match="bias_min only with 2"):
            direct(a, b, np.empty((1, 1), dtype), None, 1, 1, 1, False, None, bias_min)
        with pytest.raises(ValueError, match=r"\(2 M, N\) for a pair"):
            direct(a, b, np.empty((1, 1), dtype), None, 2)


def _half_sample(rng, shape, dtype, nan=True):
    """float32 holding values of the half-precision ``dtype``: ties after rounding, infinities,
    signed zeros, NaN (unless ``nan`` is False), the largest finite value (sums overflow) and
    subnormals."""
    x = rng.integers(-40, 40, shape) * rng.choice([1.0, 1 / 32, 1 / 1024, 1 / 3, 4096.0], shape)
    for value, p in (
        (np.inf, 0.02),
        (-np.inf, 0.03),
        (-0.0, 0.05),
        (np.nan, 0.005 if nan else 0.0),
        (65504.0, 0.02),
        (6e-8, 0.02),
    ):
        x[rng.random(shape) < p] = value
    if dtype == "float16":
        with np.errstate(over="ignore"):  # 4096 x 40 and such: beyond float16, an infinity
            return x.astype(np.float16).astype(np.float32)
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).view(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rounding", ["float16", "bfloat16"])
@pytest.mark.parametrize(("M", "K", "N"), [(5, 3, 7), (40, 300, 130), (130, 64, 17)])
def test_rounded_product_matches_the_numpy_rounding_path(monkeypatch, threads, rounding, M, K, N):
    """The compiled half-precision product (sums rounded in the micro-kernel) gives the bits and
    winners of the NumPy block loop that rounds each block of sums; one thread and shared tiles."""
    if not kernels._compiled_rounding():
        pytest.skip("this CPU has no AVX2 + F16C: the rounded product runs the NumPy path")
    rng = np.random.default_rng(M * K + N)
    a, b = _half_sample(rng, (M, K), rounding), _half_sample(rng, (K, N), rounding)
    tropic.set_num_threads(threads)
    try:
        for semiring in (MAX_PLUS, MIN_PLUS):
            fast = kernels.product(semiring, a, b, np.int32, rounding)
            with monkeypatch.context() as m:
                m.setattr(compiled, "enabled", False)
                slow = kernels.product(semiring, a, b, np.int32, rounding)
            for got, want in zip(fast, slow, strict=True):
                assert_identical(got, want)
    finally:
        tropic.set_num_threads(None)


@pytest.mark.parametrize("rounding", ["float16", "bfloat16"])
def test_rounded_winner_is_the_first_sum_that_rounds_to_the_best(rounding):
    """With winners, a half-precision product keeps its bests unrounded and rounds them (rounding is
    monotone); its winner must still be the first k whose *rounded* sum is the best, not the k of the
    largest unrounded sum. Here every row's sums round to few values, and within them the unrounded
    sums grow with k, across blocks of 8 k: the expected values and winners come from NumPy."""
    if not kernels._compiled_rounding():
        pytest.skip("this CPU has no AVX2 + F16C: the rounded product runs the NumPy path")
    rng = np.random.default_rng(11)
    K, N = 43, 19  # five full blocks of 8 k and a partial one
    # a: 1024 and its neighbours; b: multiples of 1/64 of the rounding step at 1024 (1 for float16,
    # 8 for bfloat16), growing with k: both exactly half precision, and x + w rounds to x's value or
    # the next one
    step = 1.0 if rounding == "float16" else 8.0
    a = (1024.0 + step * rng.integers(-2, 3, (9, K))).astype(np.float32)
    a[0, K - 2], a[1, K - 2] = 1024.0 + 3 * step, 1024.0 - 3 * step  # bests first met in the last block
    b = (step * (np.arange(K)[:, None] + rng.integers(0, 3, (K, N))) / 64).astype(np.float32)
    sums = a[:, :, None] + b[None]  # float32 sums, exact here
    if rounding == "float16":
        rounded = sums.astype(np.float16).astype(np.float32)
    else:
        bits = sums.view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).view(np.float32)
    assert (rounded != sums).any()  # the case is about sums that rounding moves
    for semiring, best in ((MAX_PLUS, np.max), (MIN_PLUS, np.min)):
        values, winners = kernels.product(semiring, a, b, np.int32, rounding)
        want = best(rounded, axis=1)
        first = np.argmax(rounded == want[:, None, :], axis=1)
        assert_identical(values, want)
        assert_identical(winners, first.astype(np.int32))
        later = np.argmax(sums == best(sums, axis=1)[:, None, :], axis=1)
        assert (later > first).any()  # unrounded, another k would have won


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rounding", ["float16", "bfloat16"])
def test_rounded_tap_loops_match_the_numpy_rounding_path(monkeypatch, threads, rounding):
    """Half-precision dilation / erosion (every mode's border, a structuring element with holes)
    and stride-1 convolutions on the compiled tap loop that rounds each sum: the bits and winners
    of the NumPy paths."""
    if not kernels._compiled_rounding():
        pytest.skip("this CPU has no AVX2 + F16C: half-precision tap loops run the NumPy path")
    from tropic.core import conv as core_conv
    from tropic.core import morphology as core_morphology

    rng = np.random.default_rng(5)
    images = _half_sample(rng, (6, 70, 37), rounding)
    weights = _half_sample(rng, (3, 4), rounding)
    support = rng.random((3, 4)) < 0.8
    x = _half_sample(rng, (3, 4, 40, 19), rounding, nan=False)  # no NaN: the tap loop, not im2col
    w = _half_sample(rng, (6, 2, 3, 3), rounding, nan=False)

    def results():
        out = []
        for semiring in (MAX_PLUS, MIN_PLUS):
            for mode in ("reflect", "nearest", "constant", "neutral"):
                rows = core_morphology.axis_window(70, 3, semiring.maximises, mode)
                cols = core_morphology.axis_window(37, 4, semiring.maximises, mode)
                fill = 0.5 if mode == "constant" else semiring.zero
                out += kernels.morphology(np, semiring, images, weights, support, rows, cols, fill, rounding)
            geometry = core_conv.ConvGeometry(x.shape, w.shape, 1, 1, 2)
            out += kernels.conv2d(np, semiring, x, w, geometry, rounding)
        return out

    tropic.set_num_threads(threads)
    try:
        fast = results()
        monkeypatch.setattr(compiled, "enabled", False)
        for got, want in zip(fast, results(), strict=True):
            assert_identical(got, want)
    finally:
        tropic.set_num_threads(None)


@pytest.mark.parametrize("compiled_on", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rounding", ["float16", "bfloat16"])
def test_values_only_half_precision_rounds_once_per_output(monkeypatch, compiled_on, threads, rounding):
    """Without winners, a half-precision product, convolution or dilation reduces the unrounded sums
    and rounds each output once: the bits of the values whose every candidate sum was rounded
    (ties after rounding, sums that overflow, signed zeros, infinities, NaN, subnormals)."""
    from tropic.core import conv as core_conv
    from tropic.core import morphology as core_morphology

    monkeypatch.setattr(compiled, "enabled", compiled_on)
    rng = np.random.default_rng(11)
    a, b = _half_sample(rng, (37, 70), rounding), _half_sample(rng, (70, 45), rounding)
    images, weights = _half_sample(rng, (5, 33, 40), rounding), _half_sample(rng, (3, 4), rounding)
    support = rng.random((3, 4)) < 0.8
    x, w = _half_sample(rng, (3, 4, 20, 19), rounding), _half_sample(rng, (6, 2, 3, 3), rounding)
    x_no_nan = np.where(np.isnan(x), 1.0, x).astype(np.float32)  # and without NaN: the tap loop

    def calls(semiring):
        rows = core_morphology.axis_window(33, 3, semiring.maximises, "reflect")
        cols = core_morphology.axis_window(40, 4, semiring.maximises, "reflect")
        geometry = core_conv.ConvGeometry(x.shape, w.shape, 1, 1, 2)
        yield lambda winners: kernels.product(semiring, a, b, np.int32, rounding, winners)
        yield lambda winners: kernels.morphology(
            np, semiring, images, weights, support, rows, cols, semiring.zero, rounding, winners
        )
        for image in (x, x_no_nan):
            yield lambda winners, x=image: kernels.conv2d(np, semiring, x, w, geometry, rounding, winners)

    tropic.set_num_threads(threads)
    try:
        for semiring in (MAX_PLUS, MIN_PLUS):
            for call in calls(semiring):
                values, winner = call(False)
                assert winner is None
                assert_identical(values, call(True)[0])
        if rounding == "float16":  # NumPy float16 arrays, through the public functions
            public = (
                lambda **k: tropic.maxplus_matmul(a.astype(np.float16), b.astype(np.float16), **k),
                lambda **k: tropic.dilation(images.astype(np.float16), weights.astype(np.float16), **k),
                lambda **k: tropic.minplus_conv2d(
                    x.astype(np.float16), w.astype(np.float16), padding=1, groups=2, **k
                ),
            )
            for call in public:
                values = call()
                assert values.dtype == np.float16
                assert_identical(values, call(return_indices=True)[0])
    finally:
        tropic.set_num_threads(None)


def test_float16_conversions_match_numpy_bitwise():
    """The F16C casts of the torch engine's float16 operands and results: every float16 widens
    exactly, and float32 bit patterns (subnormals, overflow, ties) narrow as NumPy rounds them."""
    every = np.arange(2**16, dtype=np.uint16).view(np.float16)
    expected = every.astype(np.float32)
    got = kernels.float16_to_float32(every)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)
    assert_identical(got[~nan], expected[~nan])
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, 300_001, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = np.concatenate([x[~np.isnan(x)], [65519.99, 65520.0, 2.0**-25, 2.0**-24 * 1.5, -0.0]]).astype(
        np.float32
    )
    with np.errstate(over="ignore"):
        expected16 = x.astype(np.float16)
    assert_identical(kernels.float32_to_float16(x), expected16)


def test_bfloat16_conversions_match_the_numpy_rounding(monkeypatch):
    """Compiled bfloat16 casts: every pattern widens to its bits on top; float32 bit patterns narrow
    to nearest even as the NumPy rounding does, and NaN stays NaN."""
    every = np.arange(2**16, dtype=np.uint16)
    assert_identical(kernels.bfloat16_to_float32(every).view(np.uint32), every.astype(np.uint32) << 16)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2**32, 300_001, dtype=np.uint64).astype(np.uint32).view(np.float32)
    got = kernels.float32_to_bfloat16(x)
    with monkeypatch.context() as m:
        m.setattr(compiled, "enabled", False)  # the NumPy rounding
        want = kernels.float32_to_bfloat16(x)
    nan = np.isnan(x)
    assert nan.any()
    for bits in (got, want):  # compiled and NumPy: a NaN stays NaN, whatever its payload
        assert np.isnan(kernels.bfloat16_to_float32(bits[nan])).all()
    assert_identical(got[~nan], want[~nan])


def test_bfloat16_rounding_in_place_matches_the_numpy_rounding(monkeypatch):
    """The compiled in-place bfloat16 rounding gives the NumPy rounding's bits for float32 bit
    patterns of every kind (NaN left exactly as it was, whatever its payload), on a contiguous
    block (vector body and scalar tail); a strided block takes the NumPy path."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 2**32, 300_001, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x[:4] = [np.inf, -np.inf, -0.0, np.finfo(np.float32).max]
    assert np.isnan(x).any()
    got = x.copy()
    kernels._round_to_bfloat16(got)
    want = x.copy()
    with monkeypatch.context() as m:
        m.setattr(compiled, "enabled", False)  # the NumPy rounding
        kernels._round_to_bfloat16(want)
    assert_identical(got.view(np.uint32), want.view(np.uint32))
    strided = x.copy()[::2]
    kernels._round_to_bfloat16(strided)
    assert_identical(strided.view(np.uint32), want[::2].view(np.uint32))


_CONV_CASES = [  # (x shape, w shape, padding, groups): stride 1, the tap-loop convolution
    ((3, 1, 9, 8), (4, 1, 3, 3), 1, 1),
    ((2, 4, 7, 9), (4, 1, 3, 2), (1, 0), 4),  # depthwise
    ((2, 6, 8, 7), (4, 3, 2, 3), 0, 2),
    ((1, 3, 5, 6), (2, 3, 5, 5), 2, 1),  # windows wider than the image
    ((2, 2, 1, 1), (3, 2, 1, 1), 0, 1),
    ((2, 2, 7, 9), (6, 2, 3, 3), 1, 1),  # 6 output channels: blocks of 4 and 2
    ((1, 1, 5, 21), (9, 1, 2, 2), 0, 1),  # blocks of 4, 4 and 1; rows of 20 (a masked tail)
]


def _tie_data(rng, shape, dtype):
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.1] = -np.inf
    x[rng.random(shape) < 0.05] = np.inf
    x[rng.random(shape) < 0.1] = -0.0
    return x


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_tap_loop_matches_im2col_and_the_numpy_path(monkeypatch, threads, dtype):
    """Stride-1 convolutions run on the morphology tap loop (one tall image per group); their values
    and winners are the im2col product's and the NumPy path's bit for bit: ties, signed zeros, both
    infinities (inf + -inf never wins), tasks split over channels and batch chunks."""
    rng = np.random.default_rng(5)
    taken = []
    real = kernels._conv2d_taps
    monkeypatch.setattr(kernels, "_conv2d_taps", lambda *a: taken.append(1) or real(*a))
    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    tropic.set_num_threads(threads)
    try:
        for x_shape, w_shape, padding, groups in _CONV_CASES:
            x, w = _tie_data(rng, x_shape, dtype), _tie_data(rng, w_shape, dtype)
            for conv in (tropic.maxplus_conv2d, tropic.minplus_conv2d):

                def run(conv=conv, x=x, w=w, padding=padding, groups=groups):
                    return conv(x, w, padding=padding, groups=groups, return_indices=True)

                taken.clear()
                fast = run()
                assert taken, "the tap loop was not tried"
                with monkeypatch.context() as m:
                    m.setattr(kernels, "_conv2d_taps", lambda *a: None)
                    im2col = run()
                with monkeypatch.context() as m:
                    m.setattr(compiled, "enabled", False)
                    numpy_path = run()
                for got, a, b in zip(fast, im2col, numpy_path, strict=True):
                    assert_identical(got, a)
                    assert_identical(got, b)
    finally:
        tropic.set_num_threads(None)


def test_conv2d_with_nan_or_a_stride_keeps_the_im2col_rule():
    """A NaN operand (NaN dominates, won by the first NaN candidate) and strides other than 1 leave
    the tap loop: it declines them, and the results are the NumPy path's."""
    from tropic.core.conv import ConvGeometry

    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    x[1, 0, 2, 2] = np.nan
    for padding in ((1, 1), (0, 0), (0, 2), (1, 0)):  # framed by the compiled pad, or read in place
        geometry = ConvGeometry(x.shape, w.shape, (1, 1), padding, 1)
        assert kernels._conv2d_taps(tropic.MAX_PLUS, x, w, geometry, None) is None
        y, k = tropic.maxplus_conv2d(x, w, padding=padding, return_indices=True)
        assert np.isnan(y[1]).any() and not np.isnan(y[0]).any()
        assert kernels._conv2d_taps(tropic.MAX_PLUS, np.nan_to_num(x), w, geometry, None) is not None
    x = rng.standard_normal((2, 2, 6, 6))
    strided = ConvGeometry(x.shape, w.shape, (2, 1), (0, 0), 1)
    assert kernels._conv2d_taps(tropic.MAX_PLUS, x, w, strided, None) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("x_shape", "padding"), [((1, 1, 0, 5), 3), ((2, 3, 4, 0), (0, 2)), ((0, 3, 4, 4), 1)]
)
def test_conv2d_of_images_without_pixels_reads_only_the_padding(monkeypatch, x_shape, padding, dtype):
    """An image with no rows or no columns, padded: every output reads the tropical zero of the
    padding (winner -1), as on the NumPy path."""
    w = np.arange(3 * 3 * 3 * 2, dtype=dtype).reshape(2, 3, 3, 3)[:, : x_shape[1]]
    x = np.zeros(x_shape, dtype)
    for conv in (tropic.maxplus_conv2d, tropic.minplus_conv2d):
        got = conv(x, w, padding=padding, return_indices=True)
        monkeypatch.setattr(compiled, "enabled", False)
        expected = conv(x, w, padding=padding, return_indices=True)
        monkeypatch.setattr(compiled, "enabled", True)
        for g, e in zip(got, expected, strict=True):
            assert_identical(g, e)
        assert got[0].size == 0 or (np.all(np.isinf(got[0])) and np.all(got[1] == -1))


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed"])
def test_conv2d_tap_loop_takes_any_memory_layout(layout):
    """Fortran-ordered, strided and negatively strided inputs give the values and winners of the
    C-contiguous copy (the tap loop reads raw addresses: it must see C order)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 2, 3, 3))
    view = {
        "fortran": np.asfortranarray(x),
        "strided": np.repeat(x, 2, axis=3)[..., ::2],
        "reversed": x[:, ::-1].copy()[:, ::-1],
    }[layout]
    assert np.array_equal(view, x) and not view.flags.c_contiguous
    for conv in (tropic.maxplus_conv2d, tropic.minplus_conv2d):
        for padding in (1, 0, (2, 0)):
            expected = conv(np.ascontiguousarray(x), w, padding=padding, groups=2, return_indices=True)
            got = conv(view, np.asfortranarray(w), padding=padding, groups=2, return_indices=True)
            for g, e in zip(got, expected, strict=True):
                assert_identical(g, e)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize(("a_shape", "b_shape"), [((3, 40, 300), (300, 37)), ((64, 520), (520, 130))])
def test_wide_product_gradients_match_the_numpy_path_bitwise(monkeypatch, threads, a_shape, b_shape):
    """Products big enough for the thread pool, with a batch and a column count that neither the
    scatter's column tiles nor its task split divides; gradients of +-1 and +-2**60, so that a sum
    taken in another order would show (2**60 + 1 - 2**60 is 0, 2**60 - 2**60 + 1 is 1)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    c, index = tropic.maxplus_matmul(a, b, return_indices=True)
    g = order_revealing(rng, c.shape, np.float32)
    tropic.set_num_threads(threads)
    try:
        fast = tropic.matmul_vjp(g, index, a.shape, b.shape)
    finally:
        tropic.set_num_threads(None)
    monkeypatch.setattr(compiled, "enabled", False)
    for grad, expected in zip(fast, tropic.matmul_vjp(g, index, a.shape, b.shape), strict=True):
        assert_identical(grad, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("M", "K", "N"),
    [(7, 1100, 45), (2, 300, 40), (3, 1100, 1000), (64, 13, 17), (3, 8, 16), (5, 9, 1), (1, 7, 33)],
    ids=str,
)
def test_winners_are_the_first_best_pair_at_every_place_in_a_block(monkeypatch, threads, M, K, N, dtype):
    """The AVX2 kernels mark only the block of 8 k where the best grew and rescan that block at the
    end: their winners are the NumPy path's (the first pair with the best sum) wherever in a block
    they fall, in blocks cut short by the end of a k-block or of K, in k-blocks after the first, in
    thin products that read B in place (a B over 4 MB: k-blocks of one block each) and in panels
    packed from B's transpose. Continuous data puts one best pair anywhere; tie-heavy data puts
    several in one block, with both infinities, signed zeros and NaN."""
    rng = np.random.default_rng(M * K + N)
    cases = [
        (rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)),
        (tie_heavy(rng, (M, K), dtype), tie_heavy(rng, (K, N), dtype)),
    ]
    for a, b in cases:
        for product in (tropic.maxplus_matmul, tropic.minplus_matmul):
            for right in (b, np.ascontiguousarray(b.T).T):
                tropic.set_num_threads(threads)
                try:
                    got = product(a, right, return_indices=True)
                finally:
                    tropic.set_num_threads(None)
                with monkeypatch.context() as m:
                    m.setattr(compiled, "enabled", False)
                    want = product(a, right, return_indices=True)
                for g, e in zip(got, want, strict=True):
                    assert_identical(g, e)


@pytest.mark.parametrize("mode", ["neutral", "reflect", "mirror", "nearest", "wrap", "constant"])
@pytest.mark.parametrize(
    ("size", "origin"), [((3, 3), 0), ((5, 3), (1, -1)), ((1, 5), 0), ((5, 5), (0, 2)), ((6, 6), 0)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_morphology_gradients_match_the_numpy_path_bitwise(monkeypatch, mode, size, origin, dtype):
    """The compiled image and element gradients of a dilation and an erosion against np.bincount's
    sums in output order, for every border mode, shifted origins and flat-line elements; gradients
    of +-1 and +-2**60 (2**60 + 1 - 2**60 is 0, 2**60 - 2**60 + 1 is 1) and a tie-heavy image (many
    outputs share a winning pixel), so that a sum taken in another order would show."""
    rng = np.random.default_rng(sum(size) + len(mode))
    x = rng.integers(-3, 4, (2, 3, 19, 23)).astype(dtype)
    structure = rng.integers(-1, 2, size).astype(dtype)
    for reduce, vjp in ((tropic.dilation, tropic.dilation_vjp), (tropic.erosion, tropic.erosion_vjp)):
        y, winners = reduce(x, structure, mode=mode, origin=origin, return_indices=True)
        g = order_revealing(rng, y.shape, dtype)
        fast = vjp(g, winners, x.shape, size, mode=mode, origin=origin)
        with monkeypatch.context() as patch:
            patch.setattr(compiled, "enabled", False)
            expected = vjp(g, winners, x.shape, size, mode=mode, origin=origin)
        for grad, reference in zip(fast, expected, strict=True):
            assert_identical(grad, reference)


def test_gradients_never_share_the_reused_accumulators():
    """The backward kernels accumulate in per-thread scratch buffers: every gradient they return is
    its own array, which a later call (same shapes, other numbers) leaves as it was."""
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((64, 48)), rng.standard_normal((48, 32))
    x, w = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3))
    _, k = tropic.maxplus_matmul(a, b, return_indices=True)
    _, j = tropic.maxplus_conv2d(x, w, padding=1, return_indices=True)
    _, t = tropic.dilation(x, w[0, 0], return_indices=True)

    def gradients(scale):
        return [
            *tropic.matmul_vjp(np.full(k.shape, scale), k, a.shape, b.shape),
            *tropic.conv2d_vjp(np.full(j.shape, scale), j, x.shape, w.shape, 1, 1),
            tropic.dilation_vjp(np.full(t.shape, scale), t, x.shape, (3, 3))[0],
        ]

    first = gradients(1.0)
    kept = [g.copy() for g in first]
    second = gradients(2.0)
    for g, g_kept, g2 in zip(first, kept, second, strict=True):
        assert_identical(g, g_kept)
        assert_identical(g2, 2 * g_kept)
        assert not np.shares_memory(g, g2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "pieces", "axis"), [((7, 12), 4, -1), ((5, 9, 6), 3, 1), ((3, 260), 130, -1)]
)
def test_maxout_kernels_match_the_numpy_path(monkeypatch, dtype, shape, pieces, axis):
    """The compiled grouped max and its scatter give the NumPy path's bits: first NaN (its payload
    kept), else first maximum (ties, -0.0 against +0.0), -1 for an all -inf group; the gradient at
    the winner, +0.0 elsewhere."""
    rng = np.random.default_rng(len(shape) * pieces)
    x = tie_heavy(rng, shape, dtype)
    payload = np.array([0x7FC00123], np.uint32).view(np.float32).astype(dtype)  # a NaN with a payload
    x[rng.random(shape) < 0.02] = payload[0]
    np.moveaxis(x, axis, -1)[(0,) * (x.ndim - 1) + (slice(0, pieces),)] = -np.inf  # an all -inf group
    fast = tropic.maxout(x, pieces, axis, return_indices=True)
    grad = tie_heavy(rng, fast[0].shape, dtype)
    fast_grad = tropic.maxout_vjp(grad, fast[1], x.shape, pieces, axis)
    monkeypatch.setattr(compiled, "enabled", False)
    slow = tropic.maxout(x, pieces, axis, return_indices=True)
    for got, want in zip(fast, slow, strict=True):
        assert_identical(got, want)
    assert_identical(fast_grad, tropic.maxout_vjp(grad, slow[1], x.shape, pieces, axis))


def test_wide_winners_beyond_int32_are_refused_not_wrapped():
    """64-bit winners are narrowed to int32 for the scatter kernels: 2**32 + 1 must not wrap into the
    valid winner 1 (every backward refuses it, naming the caller's values)."""
    wide = 2**32 + 1
    g4 = np.ones((1, 1, 4, 4), np.float32)
    calls = {
        "maxout_vjp": lambda k: tropic.maxout_vjp(np.ones((2, 2), np.float32), k((2, 2)), (2, 8), 4),
        "conv2d_vjp": lambda k: tropic.conv2d_vjp(g4, k(g4.shape), g4.shape, (1, 1, 3, 3), padding=1),
        "dilation_vjp": lambda k: tropic.dilation_vjp(g4[0, 0], k((4, 4)), (4, 4), (3, 3)),
        "matmul_vjp": lambda k: tropic.matmul_vjp(np.ones((2, 2), np.float32), k((2, 2)), (2, 3), (3, 2)),
    }
    for call in calls.values():
        for dtype in (np.int64, np.uint64):
            with pytest.raises(ValueError, match="winners in"):
                call(lambda shape, dtype=dtype: np.full(shape, wide, dtype))
            call(lambda shape, dtype=dtype: np.full(shape, 1, dtype))  # in range: accepted


def test_the_products_backward_entry_reads_narrow_winners_and_checks_its_buffers():
    """``matmul_vjp`` of the scatter module takes int8 / int16 winners as they are (widened in C):
    the bits of the same winners as int32; buffers of the wrong size or type raise."""
    direct = compiled.entry("scatter_c", "matmul_vjp")
    if direct is None:
        pytest.skip("the backward passes' extension module is not built")
    rng = np.random.default_rng(5)
    n, M, N, K = 2, 5, 7, 100
    g = rng.standard_normal((n, M, N)).astype(np.float32)
    winners = rng.integers(-1, K + 1, (n, M, N))  # K: the bias's candidate

    def run(idx):
        ga, gb = np.empty((n, M, K), np.float32), np.empty((n, N, K), np.float32)
        gbias = np.empty(N, np.float32)
        assert direct(g, idx, ga, gb, gbias, n, M, N, K, True, True, True, 2) == 0
        return ga, gb, gbias

    wide = run(winners.astype(np.int32))
    for dtype in (np.int8, np.int16):
        for got, want in zip(run(winners.astype(dtype)), wide, strict=True):
            assert_identical(got, want)
    ga = np.empty((n, M, K), np.float32)
    with pytest.raises(ValueError, match="wrong size"):
        direct(g, np.zeros(n * M * N - 1, np.int32), ga, None, None, n, M, N, K, False, False, True, 1)
    with pytest.raises(TypeError, match="int8, int16 or int32"):
        direct(g, winners.astype(np.int64), ga, None, None, n, M, N, K, False, False, True, 1)
    with pytest.raises(ValueError, match="ga has the wrong size"):
        wide_ga = ga.astype(np.float64)  # out_t: the gradients in g's type
        direct(g, winners.astype(np.int32), wide_ga, None, None, n, M, N, K, False, False, True, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("M", "K", "N"), [(64, 512, 70), (600, 40, 13), (3, 300, 9)], ids=str)
def test_a_weight_gradient_with_few_winners_per_column_gives_the_numpy_paths_bits(
    monkeypatch, dtype, threads, M, K, N
):
    """The backward of ``x @ W.T + b`` with W's gradient in W's layout, where each output column has
    two candidate winners (a Sparse-Morph weight): a column's sums hit one slot many times in a row,
    columns are summed in groups that N does not divide, and a gradient line has fewer winners than
    slots (M < K: only the touched slots are written) or more (M >= K). With winners -1 (none) and K
    (the bias), every subset of the gradients asked, on one thread and on the pool, after a call
    that stopped at a bad winner (its sums left behind must not leak into the next call): the NumPy
    path's bits."""
    rng = np.random.default_rng(M + K + N)
    g = rng.standard_normal((M, N)).astype(dtype)  # random: another summation order shows
    candidates = rng.integers(0, K, (N, 2))
    winners = candidates[np.arange(N), rng.integers(0, 2, (M, N))]
    winners[rng.random((M, N)) < 0.05] = -1
    winners[rng.random((M, N)) < 0.05] = K
    winners = winners.astype(np.int16)
    bad = winners.copy()
    bad[M // 2, N // 2] = K + 1
    monkeypatch.setattr(kernels, "_PARALLEL_PRODUCT_PAIRS", 0)  # the pool whenever threads > 1
    shapes = ((M, K), (K, N), (N,))
    tropic.set_num_threads(threads)
    try:
        for needs in ((True, True, True), (False, True, False), (True, False, True), (False, False, True)):
            with pytest.raises(ValueError, match="winners"):
                kernels.matmul_vjp(np, g, bad, *shapes, needs, transposed_b_grad=True)
            _assert_matmul_vjp_is_the_numpy_paths(monkeypatch, g, winners, shapes, needs, True)
    finally:
        tropic.set_num_threads(None)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M", [4, 7], ids=lambda m: f"M={m}")
@pytest.mark.parametrize("transposed", [True, False], ids=["W.T", "C-ordered"])
def test_the_backward_takes_the_slot_after_the_last_only_for_a_bias(monkeypatch, threads, M, transposed):
    """Winner K (one past the last of a's K columns) is the bias's with a bias (its output adds
    nothing to a's or b's gradient, only to the bias's: the NumPy path's bits) and out of range
    without one, for every subset of the gradients asked: a's alone (the rows' pass, 4 rows at a
    time and what is left over, alone reads the winners then), b's in either layout, and both."""
    rng = np.random.default_rng(M)
    N, K = 9, 6
    g = rng.standard_normal((M, N)).astype(np.float32)
    winners = rng.integers(0, K, (M, N)).astype(np.int16)
    winners[M - 1, N // 2] = K
    monkeypatch.setattr(kernels, "_PARALLEL_PRODUCT_PAIRS", 0)
    tropic.set_num_threads(threads)
    try:
        for needs in ((True, False, False), (False, True, False), (True, True, False), (True, True, True)):
            with pytest.raises(ValueError, match="winners"):
                kernels.matmul_vjp(np, g, winners, (M, K), (K, N), None, needs, transposed_b_grad=transposed)
            _assert_matmul_vjp_is_the_numpy_paths(
                monkeypatch, g, winners, ((M, K), (K, N), (N,)), needs, transposed
            )
    finally:
        tropic.set_num_threads(None)


def _assert_matmul_vjp_is_the_numpy_paths(monkeypatch, g, winners, shapes, needs, transposed):
    """The NumPy backend's product vjp (the compiled scatter where it applies) gives, for each
    gradient in ``needs``, the bits of the same call with the compiled kernels off."""
    got = kernels.matmul_vjp(np, g, winners, *shapes, needs, transposed_b_grad=transposed)
    with monkeypatch.context() as m:
        m.setattr(compiled, "enabled", False)
        want = kernels.matmul_vjp(np, g, winners, *shapes, needs, transposed_b_grad=transposed)
    for asked, fast, expected in zip(needs, got, want, strict=True):
        if asked:
            assert_identical(fast, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [True, False], ids=["W.T", "C-ordered"])
@pytest.mark.parametrize(
    ("M", "K", "N"), [(64, 512, 512), (37, 600, 90), (5, 300, 70), (1, 4096, 3)], ids=str
)
def test_a_mostly_zero_operand_gives_the_bits_of_the_dense_product(monkeypatch, dtype, transposed, M, K, N):
    """A B that is almost all the tropical zero (the Sparse-Morph weights: under 1% of entries kept)
    is reduced over each column's kept entries only: the values and winners of the NumPy path, bit
    for bit, through ties, both infinities, signed zeros and NaN in either operand, a bias, values
    only, columns with no kept entry, and on one thread and two. The kernel runs tiles of rows (32
    float32 or 16 float64 rows with AVX2), and rows, k and columns by blocks of 8 (4) in its
    transposes: M = 37 and 5 leave partial tiles and blocks, K = 300 and N = 70, 90 partial blocks."""
    rng = np.random.default_rng(M + K + N)
    for semiring, product in ((MAX_PLUS, tropic.maxplus_matmul), (MIN_PLUS, tropic.minplus_matmul)):
        w = tie_heavy(rng, (N, K), dtype, nan=0.0)
        w[rng.random((N, K)) > 0.004] = semiring.zero  # about 2 kept entries in 512
        w[: N // 3] = semiring.zero  # columns of B with no entry: the zero and -1
        w_finite = w.copy()
        w[-1, rng.integers(0, K, 3)] = [np.nan, np.inf, -np.inf]  # kept: only the zero is skipped
        bias = tie_heavy(rng, (N,), dtype, nan=0.0)
        # NaN in x, in B only (found in B's lists), or nowhere (the bias then applied in C)
        for nan_in_x, weight in ((0.005, w), (0.0, w), (0.0, w_finite)):
            x = tie_heavy(rng, (M, K), dtype, nan=nan_in_x)
            b = weight.T if transposed else np.ascontiguousarray(weight.T)
            _check_sparse_product(monkeypatch, product, x, b, bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", [8, 16, 40, 64])
@pytest.mark.parametrize("density", [1 / 20, 1 / 40])
def test_a_pruned_weight_gives_the_bits_of_the_dense_product(monkeypatch, dtype, M, density):
    """A few percent of B kept (a pruned layer's weight): with winners, from 32 rows of x the kernel
    lists up to 1/16 of B, from 16 rows 1/32, with fewer 1/128 (values only: from 64 and 32 rows);
    past that share it goes back to the dense kernel part way through its pass over B. Every one
    of those paths gives the NumPy path's values and winners, bit for bit, in both layouts of B,
    with and without a bias."""
    rng = np.random.default_rng(M + round(1 / density))
    K, N = 300, 120
    for semiring, product in ((MAX_PLUS, tropic.maxplus_matmul), (MIN_PLUS, tropic.minplus_matmul)):
        w = tie_heavy(rng, (N, K), dtype, nan=0.0)
        w[rng.random((N, K)) > density] = semiring.zero
        x = tie_heavy(rng, (M, K), dtype, nan=0.0 if M == 40 else 0.005)
        bias = tie_heavy(rng, (N,), dtype, nan=0.0)
        for b in (w.T, np.ascontiguousarray(w.T)):
            _check_sparse_product(monkeypatch, product, x, b, bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_sparse_product_split_on_the_pool_gives_the_bits_of_one_thread(monkeypatch, dtype):
    """A sparse product with work enough for the thread pool (300 rows: 10 row tiles of float32, 19
    of float64, the last partial, taken by the tasks in turn): the bits of the one-thread call,
    and of the NumPy path on the first and the last tiles' rows (rows are independent)."""
    rng = np.random.default_rng(300)
    M, K, N = 300, 512, 512
    for semiring, product in ((MAX_PLUS, tropic.maxplus_matmul), (MIN_PLUS, tropic.minplus_matmul)):
        w = tie_heavy(rng, (N, K), dtype, nan=0.0)
        w[rng.random((N, K)) > 0.004] = semiring.zero
        x, bias = tie_heavy(rng, (M, K), dtype), tie_heavy(rng, (N,), dtype, nan=0.0)
        results = {}
        for threads in (1, 2):
            tropic.set_num_threads(threads)
            try:
                results[threads] = product(x, w.T, bias=bias, return_indices=True)
            finally:
                tropic.set_num_threads(None)
        for pooled, alone in zip(results[2], results[1], strict=True):
            assert_identical(pooled, alone)
        rows = np.r_[0:40, 260:300]
        with monkeypatch.context() as m:
            m.setattr(compiled, "enabled", False)
            want = product(x[rows], w.T, bias=bias, return_indices=True)
        for got, expected in zip(results[2], want, strict=True):
            assert_identical(got[rows], expected)


def _check_sparse_product(monkeypatch, product, x, b, bias):
    """``product(x, b)`` against the NumPy path, bit for bit, on one thread and two, with and without
    the bias and the winners."""
    for threads in (1, 2):
        tropic.set_num_threads(threads)
        try:
            for extra in ({}, {"bias": bias}):
                got = product(x, b, return_indices=True, **extra)
                values = product(x, b, **extra)
                with monkeypatch.context() as m:
                    m.setattr(compiled, "enabled", False)
                    want = product(x, b, return_indices=True, **extra)
                for g, e in zip(got, want, strict=True):
                    assert_identical(g, e)
                assert_identical(values, want[0])
        finally:
            tropic.set_num_threads(None)


def test_the_compiled_address_reader_gives_ctypes_addresses():
    """The raw kernels take addresses, which the compiled module reads through the buffer protocol:
    the first element's address exactly as ``a.ctypes.data`` gives it, for strided, reversed,
    empty, read-only and half-precision arrays and views; None stays None; a non-array is refused."""
    read = compiled.entry("scatter_c", "addresses")
    if read is None:
        pytest.skip("the compiled kernels are not built")
    base = np.arange(60.0).reshape(6, 10)
    frozen = np.arange(5, dtype=np.int32)
    frozen.flags.writeable = False
    arrays = [
        base,
        base[1:, ::3],
        base[::-1, ::-2],
        base[:, 7:],
        np.zeros((0, 4), np.float32),
        frozen,
        np.ones(3, np.float16),
        np.int8(5) * np.ones((2, 2, 2), np.int8),
    ]
    assert read(*arrays, None) == (*(a.ctypes.data for a in arrays), None)
    assert kernels._addresses(base, None, frozen) == (base.ctypes.data, None, frozen.ctypes.data)
    assert kernels._address(base[2:]) == base[2:].ctypes.data
    assert read() == ()
    with pytest.raises(TypeError):
        read(3)
