"""The CuPy backend's CUDA kernels and Python glue, run on the CPU (no GPU, no CuPy needed).

The CUDA sources are compiled as C++ with a small shim (``__global__`` is a plain function, each
CUDA thread of a block is a host thread, ``__syncthreads`` a barrier, ``__shared__`` a static), and
``tropic.backends.cupy.kernels`` is loaded with NumPy standing in for CuPy and the shim standing in
for ``RawModule``. So the kernels' index arithmetic, tie, NaN and infinity rules, the gradient
gathers and the launch glue are checked bitwise against the NumPy backend on any machine with g++
(float32, float64, and float16 where the CUDA toolkit's ``cuda_fp16.h`` is at hand), and bfloat16
(where ``cuda_bf16.h`` is, on ml_dtypes' NumPy bfloat16 arrays) against the NumPy kernels' exact
bfloat16 rounding (the path torch's bfloat16 CPU tensors take); the NVRTC compile and real launches
are left to tests/test_cupy_backend.py on a GPU.
Skipped without g++. The emulation runs each block's threads in lockstep at barriers only, so it checks the
arithmetic and the data flow, not timing or memory-model behaviour between barriers.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path

import array_api_compat.numpy as compat_numpy
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tropic.core import dispatch
from tropic.core.conv import ConvGeometry, conv2d_reference
from tropic.core.matmul import matmul_reference
from tropic.core.maxout import maxout_reference, maxout_vjp_reference
from tropic.core.morphology import _MODES, axis_window, morphology_reference
from tropic.core.semiring import MAX_PLUS, MIN_PLUS

from .helpers import SEMIRINGS, dyadic, sample
from .helpers import assert_identical as assert_identical_floats

try:  # NumPy's bfloat16 dtype (registers the name "bfloat16"); optional: those cases skip without it
    import ml_dtypes
except ImportError:
    ml_dtypes = None

CUPY_DIR = Path(__file__).resolve().parents[1] / "tropic" / "backends" / "cupy"
BF16 = "bfloat16"  # a dtype name, so the parametrisation needs no ml_dtypes
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16])


def is_bf16(dtype) -> bool:
    return (isinstance(dtype, str) and dtype == BF16) or getattr(dtype, "name", None) == BF16


@pytest.fixture
def emu_dtype(emu, dtype):
    if is_bf16(dtype):
        if ml_dtypes is None:
            pytest.skip("bfloat16 needs ml_dtypes (NumPy's bfloat16 arrays)")
        if "__nv_bfloat16" not in emu.emulated_types:
            pytest.skip("bfloat16 needs the CUDA toolkit's cuda_bf16.h")
        return np.dtype(BF16)
    if np.dtype(dtype) == np.float16 and "__half" not in emu.emulated_types:
        pytest.skip("float16 needs the CUDA toolkit's cuda_fp16.h")
    return dtype


SHIM = r"""
HALF_HEADERS
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local Dim3 threadIdx, blockIdx;
Dim3 blockDim, gridDim;
static std::barrier<>* emu_barrier = nullptr;
inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
static std::atomic<int> emu_vote{0};
inline int __syncthreads_or(int p) {
    if (p) emu_vote = 1;
    emu_barrier->arrive_and_wait();
    const int any = emu_vote;
    emu_barrier->arrive_and_wait();
    if (threadIdx.x == 0) emu_vote = 0;
    emu_barrier->arrive_and_wait();
    return any;
}
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
using std::isnan;
using std::min;
#undef __global__
#undef __device__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __shared__ static
SOURCES
template <typename T> T& arg_at(void** args, size_t i) { return *static_cast<T*>(args[i]); }
template <typename... A, size_t... I>
void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(arg_at<std::remove_cv_t<std::remove_reference_t<A>>>(args, I)...);
}
template <typename... A> std::function<void(void**)> entry(void (*f)(A...)) {
    return [f](void** args) { call_with(f, args, std::index_sequence_for<A...>{}); };
}
static std::map<std::string, std::function<void(void**)>> table() {
    std::map<std::string, std::function<void(void**)>> t;
    ENTRIES
    return t;
}
extern "C" int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                          void** args) {
    static const auto kernels = table();
    auto it = kernels.find(name);
    if (it == kernels.end()) return 1;
    gridDim = {gx, gy, gz};
    blockDim = {bx, 1, 1};
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                std::barrier<> bar(bx);
                emu_barrier = &bar;
                std::vector<std::thread> threads;
                for (unsigned t = 0; t < bx; ++t)
                    threads.emplace_back([&, t] {
                        threadIdx = {t, 0, 0};
                        blockIdx = {x, y, z};
                        it->second(args);
                    });
                for (auto& th : threads) th.join();
            }
    return 0;
}
"""

# Kernels that use __syncthreads need their real block; the grid-stride ones run as one CUDA
# thread (the loop then covers every item), which keeps the emulation fast.
_BLOCK_KERNELS = {
    "tropic_matmul_tiled",
    "tropic_conv2d_tiled",
    "tropic_morphology_tiled",
    "tropic_tap_partials",
}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """``(kernels, library)``: the backend's kernels module wired to the C++ build of its sources."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed")
    glue = _load_glue()
    # float16 and bfloat16 too where the CUDA toolkit's cuda_fp16.h / cuda_bf16.h are at hand (they
    # have host implementations of the conversions).
    include = glue.module.toolkit_include()
    types_, headers = ("float", "double"), ""
    if include:
        types_ += ("__half",)
        headers += "#define TROPIC_FP16 1\n#include <cuda_fp16.h>\n"
    if include and Path(include, "cuda_bf16.h").is_file():
        types_ += ("__nv_bfloat16",)
        headers += "#define TROPIC_BF16 1\n#include <cuda_bf16.h>\n"
    sources = "\n".join(f'#include "{CUPY_DIR / "cuda" / s}"' for s in glue.module.SOURCES)
    entries = "\n".join(
        f't["{k}<{t}>"] = entry(&{k}<{t}>);'
        for kernels in glue.module.KERNELS.values()
        for k in kernels
        for t in types_
    )
    build = tmp_path_factory.mktemp("cupy_emu")
    shim = SHIM.replace("HALF_HEADERS", headers).replace("SOURCES", sources).replace("ENTRIES", entries)
    (build / "emu.cpp").write_text(shim)
    command = [compiler, "-O1", "-std=c++20", "-pthread", "-shared", "-fPIC", "-Wno-unknown-pragmas"]
    command += [f"-I{include}"] if include else []
    result = subprocess.run(
        [*command, str(build / "emu.cpp"), "-o", str(build / "emu.so")], capture_output=True, text=True
    )
    if result.returncode:
        if "barrier" in result.stderr and "No such file" in result.stderr:
            pytest.skip("g++ without C++20 <barrier>")
        pytest.fail(f"the CUDA sources do not build as C++ for the emulation:\n{result.stderr[-4000:]}")
    library = ctypes.CDLL(str(build / "emu.so"))
    library.emu_launch.restype = ctypes.c_int
    glue.module.get_kernel = lambda name, dtype: _Kernel(library, name, glue.module.cuda_type(dtype))
    glue.kernels.emulated_types = types_
    return glue.kernels


def _load_glue():
    """``tropic/backends/cupy`` under a private package name with NumPy as ``cupy``, registering
    its kernels in a throwaway table (the real dispatch table is left as it was)."""
    package = types.ModuleType("tropic_cupy_emulated")
    package.__path__ = [str(CUPY_DIR)]
    saved_cupy = sys.modules.get("cupy")
    saved_kernels = dispatch._kernels
    sys.modules["tropic_cupy_emulated"] = package
    sys.modules["cupy"] = np
    dispatch._kernels = dict(saved_kernels)
    try:
        package.layout = importlib.import_module("tropic_cupy_emulated.layout")
        package.module = importlib.import_module("tropic_cupy_emulated.module")
        package.kernels = importlib.import_module("tropic_cupy_emulated.kernels")
    finally:
        dispatch._kernels = saved_kernels
        if saved_cupy is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved_cupy
    return package


class _Kernel:
    """A RawModule function stand-in: ``kernel(grid, block, args)`` runs the C++ build."""

    def __init__(self, library, name: str, cuda_type: str):
        self.library, self.name, self.expression = library, name, f"{name}<{cuda_type}>"

    def __call__(self, grid, block, args):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        threads = block[0] if self.name in _BLOCK_KERNELS else 1
        if self.name not in _BLOCK_KERNELS:
            grid = (1, 1, 1)
        held = [_c_value(a) for a in args]
        pointers = (ctypes.c_void_p * len(held))(
            *[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in held]
        )
        status = self.library.emu_launch(self.expression.encode(), *map(int, grid), int(threads), pointers)
        assert status == 0, f"no emulated kernel {self.expression}"


def _c_value(a):
    if isinstance(a, np.ndarray):
        assert a.flags.c_contiguous, "kernel arrays must be C-contiguous"
        return ctypes.c_void_p(a.ctypes.data)
    kinds = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float32: ctypes.c_float}
    kinds[np.float64] = ctypes.c_double
    assert type(a) in kinds, f"kernel scalars must be exact NumPy types, got {type(a).__name__}"
    return kinds[type(a)](a)


def assert_identical(actual, expected) -> None:
    """helpers.assert_identical, bfloat16 included: NumPy gives ml_dtypes' bfloat16 the kind "V", so
    those arrays are compared as float32 (an exact, bit-preserving widening)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if is_bf16(actual.dtype) or is_bf16(expected.dtype):
        assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        actual, expected = actual.astype(np.float32), expected.astype(np.float32)
    assert_identical_floats(actual, expected)


def _numpy_vjp(name: str):
    """The NumPy backend's ``name`` kernel (imported when first called, as in the tests below)."""

    def vjp(*args):
        from tropic.backends.numpy import kernels as numpy_kernels

        return getattr(numpy_kernels, name)(*args)

    return staticmethod(vjp)


class CoreReference:
    """The reference of float32/64 and float16: core's forward references and the NumPy backend's
    vjps, under the names and with the arguments of the CuPy backend's kernels."""

    matmul, morphology = staticmethod(matmul_reference), staticmethod(morphology_reference)
    conv2d, maxout = staticmethod(conv2d_reference), staticmethod(maxout_reference)
    maxout_vjp = staticmethod(maxout_vjp_reference)
    matmul_vjp, morphology_vjp = _numpy_vjp("matmul_vjp"), _numpy_vjp("morphology_vjp")
    conv2d_vjp = _numpy_vjp("conv2d_vjp")


class RoundedReference:
    """The reference of bfloat16: the NumPy backend's kernels on float32 copies with every candidate
    sum rounded to bfloat16 before it is compared (``rounding="bfloat16"``, what the torch engine runs
    for bfloat16 CPU tensors), values and gradients narrowed back to bfloat16 (ml_dtypes arrays)."""

    @staticmethod
    def _kernels():
        from tropic.backends.numpy import kernels

        return kernels

    @staticmethod
    def _narrow(results):
        return tuple(r.astype(BF16) if r is not None and r.dtype == np.float32 else r for r in results)

    @classmethod
    def matmul(cls, xp, semiring, a, b):
        wide = a.astype(np.float32), b.astype(np.float32)
        c, k = cls._kernels().matmul(xp, semiring, *wide, rounding="bfloat16")
        return cls._narrow((c, k))

    @classmethod
    def matmul_vjp(cls, xp, g, k, a_shape, b_shape):
        return cls._narrow(cls._kernels().matmul_vjp(xp, g.astype(np.float32), k, a_shape, b_shape))

    @classmethod
    def morphology(cls, xp, semiring, image, weights, support, rows, cols, fill):
        weights = None if weights is None else weights.astype(np.float32)
        args = (image.astype(np.float32), weights, support, rows, cols, fill, "bfloat16")
        return cls._narrow(cls._kernels().morphology(xp, semiring, *args))

    @classmethod
    def morphology_vjp(cls, xp, g, k, image_shape, rows, cols):
        return cls._narrow(
            cls._kernels().morphology_vjp(xp, g.astype(np.float32), k, image_shape, rows, cols)
        )

    @classmethod
    def conv2d(cls, xp, semiring, x, w, geometry):
        args = (x.astype(np.float32), w.astype(np.float32), geometry, "bfloat16")
        return cls._narrow(cls._kernels().conv2d(xp, semiring, *args))

    @classmethod
    def conv2d_vjp(cls, xp, g, k, geometry):
        return cls._narrow(cls._kernels().conv2d_vjp(xp, g.astype(np.float32), k, geometry))

    @classmethod
    def maxout(cls, xp, grouped):
        return cls._narrow(cls._kernels().maxout(xp, grouped.astype(np.float32)))

    @classmethod
    def maxout_vjp(cls, xp, g, k, pieces):
        return maxout_vjp_reference(xp, g, k, pieces)


def reference(dtype):
    """Where ``dtype``'s kernels are checked against: the NumPy kernels rounding to bfloat16 for
    bfloat16, else core's references and the NumPy backend's vjps."""
    return RoundedReference if is_bf16(dtype) else CoreReference


MATMUL_SHAPES = [
    ((5, 7), (7, 3)),
    ((1, 1), (1, 1)),
    ((70, 33), (33, 65)),  # not multiples of the 128 x 64 tile nor of the k step (32; 16 for float64)
    ((130, 70), (70, 66)),  # 2 x 2 blocks, 3 k steps
    ((3, 0), (0, 4)),  # K = 0: every output is the zero, no winner
    ((2, 4, 5), (5, 6)),  # the layer case: a's batch folded into rows
    ((2, 1, 4, 5), (3, 5, 6)),  # broadcast batches
    ((3, 4, 5), (3, 5, 2)),
]


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "simple"])
@pytest.mark.parametrize(("a_shape", "b_shape"), MATMUL_SHAPES)
@DTYPES
@SEMIRINGS
def test_matmul(emu, emu_dtype, monkeypatch, semiring, dtype, a_shape, b_shape, tiled):
    monkeypatch.setattr(emu, "TILED", tiled)
    rng = np.random.default_rng(0)
    a, b = sample(rng, a_shape, dtype), sample(rng, b_shape, dtype)
    c, k = emu.matmul(compat_numpy, semiring, a, b)
    c_ref, k_ref = reference(dtype).matmul(compat_numpy, semiring, a, b)
    assert_identical(c, c_ref)
    assert_identical(k, k_ref)


# (a shape, b shape, whether dL/da's lines are summed in chunks, whether dL/db's are): a line of
# at least 64 positions (a row of g for dL/da, a column for dL/db) is cut into chunks in the emulation.
VJP_CHUNKING = [
    ((20, 33), (33, 40), False, False),
    ((300, 4), (4, 2), False, True),
    ((2, 150, 3), (3, 5), False, True),
    ((2, 3), (3, 300), True, False),
]


@pytest.mark.parametrize(("a_shape", "b_shape"), MATMUL_SHAPES + [case[:2] for case in VJP_CHUNKING])
@DTYPES
def test_matmul_vjp(emu, emu_dtype, dtype, a_shape, b_shape):
    """Dyadic gradients sum exactly in any order: bitwise the NumPy backend's result (bfloat16: its
    float32 gradient rounded once, as for torch's CPU tensors), chunked or not."""
    rng = np.random.default_rng(1)
    a, b = sample(rng, a_shape, dtype), sample(rng, b_shape, dtype)
    c, k = reference(dtype).matmul(compat_numpy, MAX_PLUS, a, b)
    g = dyadic(rng, c.shape, dtype)
    if is_bf16(dtype) and (a.shape[:-2] != c.shape[:-2] or b.shape[:-2] != c.shape[:-2]):
        # Broadcast batches: the kernels round each batch's gradient to bfloat16, then sum the batches
        # (as the NumPy backend does with float16); the rounded reference sums in float32, rounds once.
        # They agree where every partial sum is exact in bfloat16 (8 bits): halves of small integers.
        g = (rng.integers(-2, 3, size=c.shape) / 2).astype(dtype)
    got = emu.matmul_vjp(compat_numpy, g, k, a.shape, b.shape)
    expected = reference(dtype).matmul_vjp(compat_numpy, g, k, a.shape, b.shape)
    for x, y in zip(got, expected, strict=True):
        assert_identical(x, y)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_matmul_vjp_broadcast_rounds_once(emu, dtype):
    """Broadcast batches are summed in float64 before the one rounding, as in the NumPy backend:
    bitwise equal to it for gradients whose per-batch roundings would differ."""
    from tropic.backends.numpy import kernels as numpy_kernels

    if np.dtype(dtype) == np.float16 and "__half" not in emu.emulated_types:
        pytest.skip("float16 needs the CUDA toolkit's cuda_fp16.h")
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((1, 6, 5)).astype(dtype), rng.standard_normal((8, 5, 7)).astype(dtype)
    c, k = matmul_reference(compat_numpy, MAX_PLUS, a, b)
    g = (rng.standard_normal(c.shape) * 3).astype(dtype)
    got = emu.matmul_vjp(compat_numpy, g, k, a.shape, b.shape)
    expected = numpy_kernels.matmul_vjp(compat_numpy, g, k, a.shape, b.shape)
    for x, y in zip(got, expected, strict=True):
        assert_identical(x, y)


@pytest.mark.parametrize(("a_shape", "b_shape", "a_chunked", "b_chunked"), VJP_CHUNKING, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_vjp_rounded_sums(emu, dtype, a_shape, b_shape, a_chunked, b_chunked):
    """Gradients whose float64 sums round: a line summed in one chunk runs in NumPy's order (bitwise
    equal); chunks add their partial sums in a fixed order (within float64 rounding, and repeatable)."""
    from tropic.backends.numpy import kernels as numpy_kernels

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
    a[..., : a.shape[-1] // 2] = np.round(a[..., : a.shape[-1] // 2])  # some ties
    c, k = matmul_reference(compat_numpy, MIN_PLUS, a, b)
    g = (rng.standard_normal(c.shape) * np.exp2(rng.integers(-30, 30, c.shape))).astype(dtype)
    got = emu.matmul_vjp(compat_numpy, g, k, a.shape, b.shape)
    expected = numpy_kernels.matmul_vjp(compat_numpy, g, k, a.shape, b.shape)
    again = emu.matmul_vjp(compat_numpy, g, k, a.shape, b.shape)
    *batch, M, N = c.shape
    n_batch, keys = math.prod(batch), a.shape[-1]
    lines = ((n_batch * M, N), (n_batch * N, M))  # (lines, positions) of dL/da and dL/db
    magnitudes = numpy_kernels.matmul_vjp(compat_numpy, np.abs(g), k, a.shape, b.shape)
    assert got[2] is expected[2] is None  # no bias
    got, expected, again, magnitudes = got[:2], expected[:2], again[:2], magnitudes[:2]
    cases = zip(got, expected, again, magnitudes, lines, (a_chunked, b_chunked), strict=True)
    for x, y, x_again, magnitude, (n, positions), chunked in cases:
        assert (emu.layout.vjp_chunking(n, positions, keys)[0] > 1) == chunked
        assert_identical(x_again, x)
        if chunked:  # float64 reorderings differ by at most positions * eps * sum |g|, then one rounding
            bound = np.finfo(dtype).eps * np.abs(y) + positions * 2.0**-52 * magnitude.astype(np.float64)
            assert np.all(np.abs(x.astype(np.float64) - y) <= bound)
        else:
            assert_identical(x, y)


@given(lines=st.integers(1, 1 << 20), positions=st.integers(0, 1 << 20), keys=st.integers(1, 1 << 14))
def test_vjp_chunking_covers_each_line_once(emu, lines, positions, keys):
    """Runs tile every line exactly (none empty), run long, and the partial sums stay bounded."""
    layout = emu.layout
    chunks, size = layout.vjp_chunking(lines, positions, keys)
    assert chunks >= 1 and size >= 1
    assert (chunks - 1) * size < max(positions, 1) <= chunks * size
    assert chunks == 1 or size >= layout.VJP_MIN_RUN
    assert (chunks - 1) * lines * keys <= layout.VJP_MAX_PARTIAL
    assert chunks == 1 or lines * (chunks - 1) < layout.VJP_THREADS


MORPHOLOGY_CASES = [
    # (image shape, support shape, weighted, footprint holes)
    ((6, 7), (3, 3), False, False),
    ((2, 5, 9), (2, 4), True, False),
    ((3, 4), (5, 5), True, True),  # element larger than the image: reflections of reflections
    ((1, 1), (3, 2), False, True),
]


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "simple"])
@pytest.mark.parametrize("mode", sorted(set(_MODES.values())))
@pytest.mark.parametrize("case", MORPHOLOGY_CASES, ids=str)
@DTYPES
@SEMIRINGS
def test_morphology_and_vjp(emu, emu_dtype, monkeypatch, semiring, dtype, case, mode, tiled):
    monkeypatch.setattr(emu, "TILED_MORPHOLOGY", tiled)
    image_shape, (kh, kw), weighted, holes = case
    rng = np.random.default_rng(2)
    image = sample(rng, image_shape, dtype)
    support = rng.random((kh, kw)) < 0.7 if holes else np.ones((kh, kw), bool)
    weights = sample(rng, (kh, kw), dtype) if weighted else None
    reflected = semiring.maximises
    rows = axis_window(image_shape[-2], kh, reflected, mode)
    cols = axis_window(image_shape[-1], kw, reflected, mode)
    fill = semiring.zero if mode == "neutral" else 1.5
    args = (semiring, image, weights, support, rows, cols, fill)
    out, k = emu.morphology(compat_numpy, *args)
    out_ref, k_ref = reference(dtype).morphology(compat_numpy, *args)
    assert_identical(out, out_ref)
    assert_identical(k, k_ref)
    if dtype == np.float64 or not tiled:  # the gathers depend on neither; the halves check the rounding
        return
    g = dyadic(rng, image_shape, dtype)
    got = emu.morphology_vjp(compat_numpy, g, k, image_shape, rows, cols)
    expected = reference(dtype).morphology_vjp(compat_numpy, g, k_ref, image_shape, rows, cols)
    for x, y in zip(got, expected, strict=True):
        assert_identical(x, y)


CONV_CASES = [
    # (x shape, w shape, stride, padding, groups)
    ((2, 3, 7, 6), (4, 3, 3, 2), 1, 0, 1),
    ((1, 4, 9, 8), (6, 2, 3, 3), 2, 1, 2),
    ((2, 2, 5, 5), (2, 1, 2, 3), (2, 1), (0, 2), 2),
    ((1, 1, 3, 3), (1, 1, 3, 3), 3, 2, 1),
]


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "simple"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@DTYPES
@SEMIRINGS
def test_conv2d_and_vjp(emu, emu_dtype, monkeypatch, semiring, dtype, case, tiled):
    monkeypatch.setattr(emu, "TILED_CONV", tiled)
    x_shape, w_shape, stride, padding, groups = case
    rng = np.random.default_rng(3)
    x, w = sample(rng, x_shape, dtype), sample(rng, w_shape, dtype)
    geometry = ConvGeometry(x_shape, w_shape, stride, padding, groups)
    y, k = emu.conv2d(compat_numpy, semiring, x, w, geometry)
    y_ref, k_ref = reference(dtype).conv2d(compat_numpy, semiring, x, w, geometry)
    assert_identical(y, y_ref)
    assert_identical(k, k_ref)
    if dtype == np.float64 or not semiring.maximises or not tiled:  # the vjp depends on none of them
        return
    g = dyadic(rng, y.shape, dtype)
    got = emu.conv2d_vjp(compat_numpy, g, k, geometry)
    expected = reference(dtype).conv2d_vjp(compat_numpy, g, k_ref, geometry)
    for a, b in zip(got, expected, strict=True):
        assert_identical(a, b)


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 1), (6, 2, 8)])
@DTYPES
def test_maxout_and_vjp(emu, emu_dtype, dtype, shape):
    rng = np.random.default_rng(4)
    grouped = sample(rng, shape, dtype)
    y, k = emu.maxout(compat_numpy, grouped)
    y_ref, k_ref = reference(dtype).maxout(compat_numpy, grouped)
    assert_identical(y, y_ref)
    assert_identical(k, k_ref)
    g = rng.standard_normal(y.shape).astype(dtype)
    expected = reference(dtype).maxout_vjp(compat_numpy, g, k_ref, shape[-1])
    assert_identical(emu.maxout_vjp(compat_numpy, g, k, shape[-1]), expected)


def test_weight_sums_over_many_chunks(emu):
    """The chunked tap sums (several chunks, a ragged last one) against a plain float64 sum."""
    rng = np.random.default_rng(5)
    B, planes, S, taps = 3, 2, 5000, 3
    g = dyadic(rng, (B, planes, S), np.float32)
    winner = rng.integers(-1, taps, size=(B, planes, S)).astype(np.int32)
    assert sys.modules["tropic_cupy_emulated.layout"].chunking(B * S, planes * taps)[0] > 1
    got = emu._tap_sums(g, winner, B, planes, S, taps, np.float32)
    expected = np.array(
        [[g[:, o][winner[:, o] == t].astype(np.float64).sum() for t in range(taps)] for o in range(planes)]
    ).astype(np.float32)
    assert_identical(got, expected)


# The tiled product's own geometry (matmul.cu): 128 x 64 outputs per block, k in steps of 32 (16 for
# float64). The shapes below give 2 x 2 blocks (M, N not multiples of the tile) and a last, partial k
# step (K = 100), small enough for the emulation's 256 host threads per block.
TILED_M, TILED_K, TILED_N = 130, 100, 70


def _tiled_case(name: str, rng, dtype, semiring):
    """``(a, b)`` of the tiled product's named edge case."""
    M, K, N = TILED_M, TILED_K, TILED_N
    sign = 1.0 if semiring.maximises else -1.0  # towards the better end of the semiring
    if name == "records_in_every_step":
        # Half of the rows rise with k (for max-plus a new best in every step, the winner in the last,
        # partial step), half fall (the winner in step 0); b's spread (1) is below a's slope (4).
        slope = np.where(np.arange(M) % 2 == 0, 4.0, -4.0)[:, None]
        a = slope * np.arange(K)[None, :] + rng.integers(-8, 9, size=(M, 1))
        b = rng.integers(-1, 2, size=(K, N)).astype(np.float64)
    elif name == "all_equal":  # every candidate ties: the winner is k = 0
        a, b = np.ones((M, K)), np.ones((K, N))
    elif name == "ties_across_and_within_steps":
        # Each row's best value sits at 3 random k (often in different steps, sometimes in the same
        # one); b is constant per column, so those candidates tie exactly. The first one wins.
        a = np.full((M, K), -3.0 * sign)
        for i in range(M):
            a[i, rng.choice(K, size=3, replace=False)] = 5.0 * sign
        b = np.broadcast_to(rng.integers(-2, 3, size=(1, N)), (K, N)).astype(np.float64)
    elif name == "signed_zeros":
        # Sums of +-0.0 tie with each other: the first zero sum wins with its own sign.
        a = rng.choice([-0.0, 0.0, -1.0 * sign], size=(M, K), p=[0.4, 0.4, 0.2])
        b = rng.choice([-0.0, 0.0], size=(K, N))
    elif name == "late_nan":
        # Finite winners in the NaN-free steps 0 and 1, then NaN in step 2 (k = 80, 90; also step 5 of
        # float64's 16-k steps) for some rows and columns, and a NaN-free step after it.
        a, b = sample(rng, (M, K), np.float64, False), sample(rng, (K, N), np.float64, False)
        a[rng.random(M) < 0.2, 80] = np.nan
        b[90, rng.random(N) < 0.2] = np.nan
    elif name == "infinities":
        # -inf + inf candidates (the tropical zero, never winning), the absorbing infinity, rows and
        # columns with no winner at all.
        a, b = sample(rng, (M, K), np.float64, False), sample(rng, (K, N), np.float64, False)
        a[rng.random((M, K)) < 0.3] = -np.inf * sign
        b[rng.random((K, N)) < 0.3] = np.inf * sign
        a[3, :], b[:, 5] = -np.inf * sign, np.inf * sign  # every candidate of row 3 / column 5: NaN
        a[7, 60], b[60, 9] = np.inf * sign, 1.0  # an absorbing candidate in step 1
    elif name == "k_zero":
        a, b = np.zeros((M, 0)), np.zeros((0, N))
    else:
        raise AssertionError(name)
    return a.astype(dtype), b.astype(dtype)


TILED_CASES = [
    "records_in_every_step",
    "all_equal",
    "ties_across_and_within_steps",
    "signed_zeros",
    "late_nan",
    "infinities",
    "k_zero",
]


@pytest.mark.parametrize("case", TILED_CASES)
@DTYPES
@SEMIRINGS
def test_tiled_product_edge_cases(emu, emu_dtype, monkeypatch, semiring, dtype, case):
    """The tiled kernel's step-wise best and its resolution of the winning step, bitwise against the
    reference (value, sign of zero, winner) on the cases that separate it from a per-pair scan."""
    monkeypatch.setattr(emu, "TILED", True)
    a, b = _tiled_case(case, np.random.default_rng(7), dtype, semiring)
    c, k = emu.matmul(compat_numpy, semiring, a, b)
    c_ref, k_ref = reference(dtype).matmul(compat_numpy, semiring, a, b)
    assert_identical(c, c_ref)
    assert_identical(k, k_ref)
    if case == "all_equal":
        assert (k_ref == 0).all()
    if case == "signed_zeros":  # the case means something only if both signs win somewhere
        assert np.signbit(c_ref[c_ref == 0]).any() and not np.signbit(c_ref[c_ref == 0]).all()


@pytest.mark.parametrize("nan", [False, True])
@SEMIRINGS
def test_tiled_product_fast_and_slow_steps(emu, monkeypatch, semiring, nan):
    """Steps of 32 k without a NaN take the tiled kernel's fast path, the others the full rules; an
    output decided by a NaN in an early step must stay NaN through the later fast steps, and one whose
    best is in a fast step must keep it through a later slow one."""
    monkeypatch.setattr(emu, "TILED", True)
    rng = np.random.default_rng(6)
    a, b = sample(rng, (70, 130), np.float32, False), sample(rng, (130, 66), np.float32, False)
    a[rng.random(a.shape) < 0.1] = -np.inf
    b[rng.random(b.shape) < 0.1] = np.inf
    if nan:
        a[5, 3] = np.nan  # step 0
        b[70, 7] = np.nan  # step 2; steps 1, 3 and 4 are NaN-free
    c, k = emu.matmul(compat_numpy, semiring, a, b)
    c_ref, k_ref = matmul_reference(compat_numpy, semiring, a, b)
    assert_identical(c, c_ref)
    assert_identical(k, k_ref)


# The tiled morphology kernel's own geometry (morphology.cu): 32 x 32 outputs per block, the taps in
# steps of 8, elements up to 32 x 32 staged (larger ones take the one-thread-per-output kernel).
def _tiled_morphology_case(name: str, rng, dtype, semiring):
    """``(image, weights, support, mode)`` of the tiled morphology kernel's named edge case."""
    sign = 1.0 if semiring.maximises else -1.0  # towards the better end of the semiring
    weights = None
    if name == "several_tiles":
        # 3 x 2 tiles of 2 images, the last ones partly outside (70 x 45), winners in all 7 steps.
        image = sample(rng, (2, 70, 45), np.float64, False) + rng.integers(-1, 2, size=(2, 70, 45))
        image[rng.random(image.shape) < 0.05] = -np.inf * sign
        support, weights, mode = np.ones((7, 7), bool), sample(rng, (7, 7), np.float64, False), "reflect"
        weights[6, 6] = 3.0 * sign  # the last tap, alone in the last (partial) step, often wins
    elif name == "flat_holes":
        image = sample(rng, (1, 65, 33), np.float64, False)
        support, mode = rng.random((5, 4)) < 0.6, "nearest"
        support[0, 0] = support[-1, -1] = True
    elif name == "nan_in_one_tile":
        # A NaN in tile (0, 0) only (its halo reaches no other tile): that block takes the slow path,
        # the other two the fast one.
        image = sample(rng, (1, 40, 70), np.float64, False)
        image[0, 5, 3] = image[0, 20, 12] = np.nan
        support, weights, mode = np.ones((3, 5), bool), sample(rng, (3, 5), np.float64, False), "neutral"
    elif name == "nan_weight":  # every block slow
        image = sample(rng, (1, 33, 40), np.float64, False)
        support, weights, mode = np.ones((3, 3), bool), sample(rng, (3, 3), np.float64, False), "mirror"
        weights[1, 2] = np.nan
    elif name == "infinities":
        # -inf + inf candidates (the tropical zero, never winning), the absorbing infinity, outputs
        # with no winner at all.
        image = sample(rng, (1, 40, 36), np.float64, False)
        image[rng.random(image.shape) < 0.3] = np.inf * sign
        image[0, 10:15, :] = -np.inf * sign  # output row 12 reads only these: no winner
        weights = sample(rng, (5, 5), np.float64, False)
        weights[rng.random((5, 5)) < 0.3] = -np.inf * sign
        weights[2, 2] = np.inf * sign
        support, mode = np.ones((5, 5), bool), "constant"
    elif name == "ties":  # every candidate ties: the first tap (0) wins wherever it is not the border
        image, weights = np.full((1, 36, 36), 2.0), np.ones((5, 5))
        support, mode = np.ones((5, 5), bool), "neutral"
    elif name in ("signed_zeros", "signed_zeros_flat"):
        # Candidates of +-0.0 tie with each other: the first zero wins with its own sign.
        image = rng.choice([-0.0, 0.0, -1.0 * sign], size=(1, 40, 40), p=[0.4, 0.4, 0.2])
        if name == "signed_zeros":
            weights = rng.choice([-0.0, 0.0], size=(3, 3))
        support, mode = np.ones((3, 3), bool), "nearest"
    elif name == "largest_element":  # 32 x 32: the whole staged region and 1024 taps; H < kh
        image = sample(rng, (1, 3, 40), np.float64, False)
        support, weights, mode = np.ones((32, 32), bool), sample(rng, (32, 32), np.float64, False), "wrap"
    elif name == "fallback":  # 33 rows: too tall to stage, the one-thread-per-output kernel runs
        image = sample(rng, (1, 5, 6), np.float64, False)
        support, weights, mode = np.ones((33, 2), bool), sample(rng, (33, 2), np.float64, False), "reflect"
    else:
        raise AssertionError(name)
    weights = None if weights is None else weights.astype(dtype)
    return image.astype(dtype), weights, support, mode


TILED_MORPHOLOGY_CASES = [
    "several_tiles",
    "flat_holes",
    "nan_in_one_tile",
    "nan_weight",
    "infinities",
    "ties",
    "signed_zeros",
    "signed_zeros_flat",
    "largest_element",
    "fallback",
]


@pytest.mark.parametrize("case", TILED_MORPHOLOGY_CASES)
@DTYPES
@SEMIRINGS
def test_tiled_morphology_edge_cases(emu, emu_dtype, monkeypatch, semiring, dtype, case):
    """The tiled morphology kernel (staged halo, step-wise best, the winning step's resolution, the
    NaN vote per block) bitwise against the reference and the NumPy backend: dilation (max-plus, the
    reflected window) and erosion (min-plus), flat and non-flat, on the cases that separate it from a
    per-tap scan."""
    from tropic.backends.numpy import kernels as numpy_kernels

    monkeypatch.setattr(emu, "TILED_MORPHOLOGY", True)
    launched = []
    get_kernel = emu.module.get_kernel
    record = lambda name, t: launched.append(name) or get_kernel(name, t)  # noqa: E731
    monkeypatch.setattr(emu.module, "get_kernel", record)
    image, weights, support, mode = _tiled_morphology_case(case, np.random.default_rng(8), dtype, semiring)
    (kh, kw), (H, W) = support.shape, image.shape[-2:]
    rows = axis_window(H, kh, semiring.maximises, mode)
    cols = axis_window(W, kw, semiring.maximises, mode)
    fill = semiring.zero if mode == "neutral" else -1.5
    args = (semiring, image, weights, support, rows, cols, fill)
    out, k = emu.morphology(compat_numpy, *args)
    out_ref, k_ref = reference(dtype).morphology(compat_numpy, *args)
    assert_identical(out, out_ref)
    assert_identical(k, k_ref)
    if not is_bf16(dtype):  # (bfloat16's reference is the NumPy kernels' rounding)
        out_np, k_np = numpy_kernels.morphology(compat_numpy, *args)
        assert_identical(out, out_np)
        assert_identical(k, k_np)
    assert launched == ["tropic_morphology" if case == "fallback" else "tropic_morphology_tiled"]
    # The cases mean something only if what they set up happens.
    if case == "ties":
        assert (k_ref[..., 2:-2, 2:-2] == 0).all()
    if case.startswith("signed_zeros"):
        zeros = out_ref[out_ref == 0]
        assert np.signbit(zeros).any() and not np.signbit(zeros).all()
    if case == "infinities":
        assert (k_ref == -1).any() and np.isinf(out_ref).any()
    if case == "nan_in_one_tile":
        assert np.isnan(out_ref).any() and not np.isnan(out_ref[..., 32:]).any()
    if case == "nan_weight":  # every output meets the NaN weight's tap
        assert np.isnan(out_ref).all() and (k_ref == 5).all()
    if case == "several_tiles":  # winners in every step, the last (partial) one included
        assert set(np.unique(k_ref // 8).tolist()) == set(range(7))


# The tiled conv2d kernel (conv.cu's tropic_conv2d_tiled on tiled.cuh's block tile: 128 output positions
# x 64 output channels of a group per block, k in steps of 32, 16 for float64). The geometry below has
# 2 x 2 tiles in each of its 2 groups (B * H_out * W_out = 2 * 7 * 12 = 168 rows, 66 channels per
# group), stride (2, 1), padding (1, 2), a 3 x 2 window (kh != kw: the tap's (c, u, v) must use each
# where it belongs), and K = 6 * 3 * 2 = 36 taps: a last, partial step of 4 (of 4 for float64 too,
# after two full ones). Small enough for the emulation's 256 host threads per block.
TILED_CONV_GEOMETRY = ((2, 12, 13, 9), (132, 6, 3, 2), (2, 1), (1, 2), 2)


def _tiled_conv_case(name: str, rng, dtype, semiring):
    """``(x, w, geometry)`` of the tiled conv2d kernel's named edge case."""
    x_shape, w_shape, stride, padding, groups = TILED_CONV_GEOMETRY
    sign = 1.0 if semiring.maximises else -1.0  # towards the better end of the semiring
    x, w = sample(rng, x_shape, np.float64, False), sample(rng, w_shape, np.float64, False)
    if name == "specials":  # NaN and infinities everywhere: most blocks take the slow path
        x, w = sample(rng, x_shape, np.float64), sample(rng, w_shape, np.float64)
    elif name == "records_in_every_step":
        # Half of the output channels' weights rise with k (a new best in every step, the winner in the
        # last, partial step where the window is inside the image), half fall (the winner in step 0).
        k = np.arange(36.0).reshape(1, 6, 3, 2)
        slope = sign * np.where(np.arange(132) % 2 == 0, 4.0, -4.0).reshape(132, 1, 1, 1)
        w = slope * k + rng.integers(-1, 2, size=w_shape)
    elif name == "ties":  # every candidate ties: the first tap inside the image wins
        x, w = np.full(x_shape, 2.0), np.ones(w_shape)
    elif name == "signed_zeros":  # sums of +-0.0 tie with each other: the first zero wins with its sign
        x = rng.choice([-0.0, 0.0, -1.0 * sign], size=x_shape, p=[0.4, 0.4, 0.2])
        w = rng.choice([-0.0, 0.0], size=w_shape)
    elif name == "nan_in_x_one_step":
        # NaN in channel 0 only (taps k < 6: step 0 for every dtype) of group 0: those blocks' step 0 is
        # slow, their later steps and group 1's blocks fast.
        x[0, 0, 3, 4] = x[1, 0, 12, 0] = np.nan
    elif name == "nan_weight_late":  # NaN at tap 35 (the last, partial step) of one output channel
        w[5, 5, 2, 1] = np.nan
    elif name == "infinities":
        # -inf + inf candidates (the tropical zero, never winning), the absorbing infinity, outputs with
        # no winner at all (image 1's group 1 is all the zero).
        x[rng.random(x_shape) < 0.3] = -np.inf * sign
        w[rng.random(w_shape) < 0.3] = np.inf * sign
        x[1, 6:] = -np.inf * sign
        x[0, 1, 6, 4] = np.inf * sign
    elif name != "finite":  # "finite": no NaN, no infinity, every step fast
        raise AssertionError(name)
    return x.astype(dtype), w.astype(dtype), ConvGeometry(x_shape, w_shape, stride, padding, groups)


TILED_CONV_CASES = [
    "finite",
    "specials",
    "records_in_every_step",
    "ties",
    "signed_zeros",
    "nan_in_x_one_step",
    "nan_weight_late",
    "infinities",
]


def _record_launches(emu, monkeypatch) -> list:
    """The names of the kernels launched from now on."""
    launched = []
    get_kernel = emu.module.get_kernel

    def recording(name, dtype):
        launched.append(name)
        return get_kernel(name, dtype)

    monkeypatch.setattr(emu.module, "get_kernel", recording)
    return launched


@pytest.mark.parametrize("case", TILED_CONV_CASES)
@DTYPES
@SEMIRINGS
def test_tiled_conv2d_edge_cases(emu, emu_dtype, monkeypatch, semiring, dtype, case):
    """The tiled conv2d kernel (the implicit unfold's loader with stride, padding and groups, the
    product's step-wise best and winner recovery, the output's address) bitwise against the reference
    and the NumPy backend, values and winners, on several row and column tiles of two groups."""
    from tropic.backends.numpy import kernels as numpy_kernels

    monkeypatch.setattr(emu, "TILED_CONV", True)
    launched = _record_launches(emu, monkeypatch)
    x, w, geometry = _tiled_conv_case(case, np.random.default_rng(9), dtype, semiring)
    y, k = emu.conv2d(compat_numpy, semiring, x, w, geometry)
    y_ref, k_ref = reference(dtype).conv2d(compat_numpy, semiring, x, w, geometry)
    assert_identical(y, y_ref)
    assert_identical(k, k_ref)
    if not is_bf16(dtype):  # (bfloat16's reference is the NumPy kernels' rounding)
        y_np, k_np = numpy_kernels.conv2d(compat_numpy, semiring, x, w, geometry)
        assert_identical(y, y_np)
        assert_identical(k, k_np)
    assert launched == ["tropic_conv2d_tiled"]
    # The cases mean something only if what they set up happens.
    B, C_out, H_out, W_out = geometry.out_shape
    assert B * H_out * W_out > emu.layout.TILE_M and C_out // geometry.groups > emu.layout.TILE_N
    if case == "records_in_every_step":  # winners in the last, partial step and in step 0
        assert (k_ref >= 32).any() and (k_ref < 6).any()
    if case == "ties":  # the first tap inside the image: 0 wherever the window's corner is inside
        assert (k_ref[:, :, 1:, 2:-1] == 0).all() and (k_ref[:, :, 0, 1:-1] > 0).all()
        assert (k_ref[..., [0, -1]] == -1).all()  # the outer columns' windows are all padding: no winner
    if case == "signed_zeros":
        zeros = y_ref[y_ref == 0]
        assert np.signbit(zeros).any() and not np.signbit(zeros).all()
    if case == "nan_in_x_one_step":  # only group 0's outputs of the windows over the NaN
        assert np.isnan(y_ref[:, :66]).any() and not np.isnan(y_ref[:, 66:]).any()
        assert not np.isnan(y_ref[:, :66]).all()
    if case == "nan_weight_late":
        assert np.isnan(y_ref[:, 5]).all() and (k_ref[:, 5] == 35).all() and not np.isnan(y_ref[:, 6:]).any()
    if case == "infinities":
        assert (k_ref[1, 66:] == -1).all() and (k_ref[0] >= 0).any() and np.isinf(y_ref[0]).any()


@SEMIRINGS
def test_tiled_conv2d_falls_back(emu, monkeypatch, semiring):
    """Where layout.conv_tiled_fits refuses (int32 offsets could overflow) the one-thread-per-output
    kernel runs; no input channel (K = 0, every output the zero with no winner) runs tiled."""
    monkeypatch.setattr(emu, "TILED_CONV", True)
    launched = _record_launches(emu, monkeypatch)
    rng = np.random.default_rng(10)
    for shapes, fits, kernel in [
        (((1, 2, 5, 6), (3, 2, 2, 2)), False, "tropic_conv2d"),
        (((1, 0, 5, 6), (3, 0, 2, 2)), True, "tropic_conv2d_tiled"),
    ]:
        monkeypatch.setattr(emu.layout, "conv_tiled_fits", lambda *_, fits=fits: fits)
        launched.clear()
        x, w = sample(rng, shapes[0], np.float32), sample(rng, shapes[1], np.float32)
        geometry = ConvGeometry(*shapes, 1, 1, 1)
        y, k = emu.conv2d(compat_numpy, semiring, x, w, geometry)
        y_ref, k_ref = conv2d_reference(compat_numpy, semiring, x, w, geometry)
        assert_identical(y, y_ref)
        assert_identical(k, k_ref)
        assert launched == [kernel]


def test_conv_tiled_fits_bounds(emu):
    """The tiled conv2d's int32 limits, each just met and just exceeded, and its grid."""
    layout = emu.layout
    big = layout.INT32_MAX

    def fits(B=1, C_in=1, H=4, W=4, C_out=1, kh=1, kw=1, ph=0, pw=0, groups=1):
        H_out, W_out = H + 2 * ph - kh + 1, W + 2 * pw - kw + 1
        shapes = (B, C_in, H, W), (C_out, C_in // groups, kh, kw), (B, C_out, H_out, W_out)
        return layout.conv_tiled_fits(*shapes, (ph, pw), groups)

    assert fits()
    assert fits(C_in=big // 16) and not fits(C_in=big // 16 + 1)  # x's offsets (16 per channel)
    assert fits(C_in=2048, C_out=2**27 - 2048, groups=2048) and not fits(C_in=2048, C_out=2**27, groups=2048)
    assert fits(H=1, W=1, C_out=65535 * 64) and not fits(H=1, W=1, C_out=65535 * 64 + 1)  # column tiles
    assert fits(C_in=65535, C_out=65535, groups=65535) and not fits(C_in=65536, C_out=65536, groups=65536)
    assert fits(H=1, W=1, ph=2**29 - 1) and not fits(H=2, W=1, ph=2**29 - 1)  # padded sides below 2^30
    assert fits(H=1, W=1, pw=2**29 - 1) and not fits(H=1, W=2, pw=2**29 - 1)
    assert fits(B=big - 128, H=1, W=1) and not fits(B=big - 127, H=1, W=1)  # rows plus a tile
    assert layout.conv_tile_grid(2, 7, 11, 66, 2) == (2, 2, 2)
    assert layout.conv_tile_grid(1, 8, 16, 64, 3) == (1, 1, 3)


def _rounding_ties_case(op: str, rng, semiring):
    """``(args of the kernel, reference)`` of ``op`` on operands whose sums land in [245, 265], where
    bfloat16 (8 significant bits) keeps only the even integers above 256: sums distinct in float32 tie
    once rounded (257 -> 256, 259 -> 260, ties to even)."""
    sign = 1.0 if semiring.maximises else -1.0
    near_256 = lambda shape: sign * 2.0 * rng.integers(124, 132, size=shape)  # noqa: E731
    small = lambda shape: sign * rng.integers(-3, 4, size=shape).astype(np.float64)  # noqa: E731
    if op == "matmul":  # 2 x 2 tiles of the tiled kernel, 2 k steps
        return (semiring, near_256((70, 40)), small((40, 66))), matmul_reference
    if op == "morphology":  # 2 x 2 tiles of the tiled kernel
        rows, cols = (axis_window(n, 5, semiring.maximises, "reflect") for n in (36, 35))
        support = np.ones((5, 5), bool)
        args = (semiring, near_256((2, 36, 35)), small((5, 5)), support, rows, cols, -1.5)
        return args, morphology_reference
    geometry = ConvGeometry((2, 4, 9, 10), (70, 2, 3, 3), 1, 1, 2)  # 2 row tiles in each of 2 groups
    return (semiring, near_256(geometry.x_shape), small(geometry.w_shape), geometry), conv2d_reference


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "simple"])
@pytest.mark.parametrize("op", ["matmul", "morphology", "conv2d"])
@pytest.mark.parametrize("dtype", [BF16])
@SEMIRINGS
def test_bfloat16_rounding_ties(emu, emu_dtype, monkeypatch, semiring, dtype, op, tiled):
    """Each candidate sum is rounded to bfloat16 before it is compared, so candidates whose float32
    sums differ can tie: the winner is the lowest index among those with the best ROUNDED sum (the
    NumPy kernels' rounding, bitwise), never the float32 winner when an earlier candidate rounds to the
    same."""
    for switch in ("TILED", "TILED_MORPHOLOGY", "TILED_CONV"):
        monkeypatch.setattr(emu, switch, tiled)
    args, float32_reference = _rounding_ties_case(op, np.random.default_rng(11), semiring)
    operand = lambda a: isinstance(a, np.ndarray) and a.dtype == np.float64  # noqa: E731
    exact = tuple(a.astype(np.float32) if operand(a) else a for a in args)
    rounded = tuple(a.astype(emu_dtype) if operand(a) else a for a in args)
    values, winners = getattr(emu, op)(compat_numpy, *rounded)
    values_ref, winners_ref = getattr(RoundedReference, op)(compat_numpy, *rounded)
    assert_identical(values, values_ref)
    assert_identical(winners, winners_ref)
    # The operands are bfloat16 numbers, so the float32 sums are exact; rounding is monotone, so the
    # best rounded sum is the rounded best sum, and the first candidate reaching it comes no later
    # than the float32 winner. Earlier somewhere: the case has rounding ties that float32 has not.
    values_32, winners_32 = float32_reference(compat_numpy, *exact)
    assert_identical(values, values_32.astype(emu_dtype))
    assert (winners_ref <= winners_32).all() and (winners_ref < winners_32).any()


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "simple"])
@pytest.mark.parametrize(
    "shape, element, axes",
    [
        ((2, 5, 4, 6), (3, 2, 3), (1, 2, 3)),  # a volume: the flattened extended planes
        ((3, 4500), (5,), (-1,)),  # a long signal: folded into rows
        ((4, 7), (3,), (0,)),
    ],
    ids=["3-D", "folded 1-D", "1-D"],
)
@SEMIRINGS
def test_n_dimensional_morphology_on_the_cuda_kernels(
    emu, monkeypatch, semiring, shape, element, axes, tiled
):
    """The CUDA kernels serve N-D morphology through the windows the core builds for it (taps that
    are offsets into flattened planes or folded rows, not compact windows): values, winners and
    both gradients, the NumPy backend's bits."""
    import tropic.core.morphology as morphology_module

    monkeypatch.setattr(emu, "TILED_MORPHOLOGY", tiled)
    rng = np.random.default_rng(9)
    image, structure = sample(rng, shape, np.float32), sample(rng, element, np.float32)
    g = dyadic(rng, shape, np.float32)
    _, params, _ = morphology_module.check(semiring, image, structure, None, None, "reflect", 0.0, axes=axes)

    def run():
        values, winners = morphology_module._run(compat_numpy, image, structure, **params)
        grads = morphology_module._vjp(compat_numpy, g, winners, (shape, element), (True, True), **params)
        return values, winners, *grads

    expected = run()  # the NumPy backend
    monkeypatch.setattr(morphology_module, "kernel_for", lambda operator, xp: getattr(emu, operator))
    for got, want in zip(run(), expected, strict=True):
        assert_identical(got, want)
