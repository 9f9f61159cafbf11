"""ctypes bindings of the compiled CPU kernels (``csrc/*.c``), or the reason they are unavailable.

Contract shared by every C kernel (the NumPy path in ``kernels.py`` keeps the same one):

* a candidate is selected only if it is strictly better than the best so far, so ties keep the
  lowest candidate index and NaN candidates (ordered comparisons are false) never win;
* an output with no winner keeps the initial tropical zero and the index ``-1``;
* the caller applies the NaN rule afterwards (``kernels.py``), and casts the int32 indices to the
  smallest index dtype.

``ctypes.CDLL`` releases the GIL for the duration of each call; OpenMP threads come from
``tropic.get_num_threads()``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np

_f32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_f64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
_i32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_i64 = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
_u8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
_u16 = np.ctypeslib.ndpointer(np.uint16, flags="C_CONTIGUOUS")
_u64 = np.ctypeslib.ndpointer(np.uint64, flags="C_CONTIGUOUS")
_d = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
_n, _flag = ctypes.c_int64, ctypes.c_int
_flag_out = ctypes.POINTER(ctypes.c_int)
_c_f32, _c_f64 = ctypes.c_float, ctypes.c_double


def _tap_arguments(values: type) -> list:
    """The tap kernels' arguments after the sizes: tap_row, tap_col, tap_weight (or NULL), tap_index,
    T, maximise, out, idx, threads."""
    return [_i64, _i64, ctypes.c_void_p, _i32, _n, _flag, values, _i32, _flag]


def _reconstruct_arguments(values: type, winners: bool) -> list:
    """The reconstruction kernels' arguments: seed, mask, ndim, shape, steps, nsteps, flip, out,
    (winner, for the _winners kernels,) found."""
    return [values, values, _n, _i64, _i64, _n, _flag, values, *([_i64] if winners else []), _flag_out]


_SIGNATURES = {
    # (a, b, c, idx, M, K, N, maximise, threads)
    ("matmul_c", "tropic_matmul_f32"): [_f32, _f32, _f32, _i32, _n, _n, _n, _flag, _flag],
    ("matmul_c", "tropic_matmul_f64"): [_f64, _f64, _f64, _i32, _n, _n, _n, _flag, _flag],
    # (a, b, c, idx, M, K, N, maximise, task, tasks): one share, on the calling thread (the pool runs
    # them in C; bound for the tests of the split)
    ("matmul_c", "tropic_matmul_part_f32"): [_f32, _f32, _f32, _i32, _n, _n, _n, _flag, _flag, _flag],
    ("matmul_c", "tropic_matmul_part_f64"): [_f64, _f64, _f64, _i32, _n, _n, _n, _flag, _flag, _flag],
    # (a, b, c, idx, M, K, N, maximise, rounding, tasks, threads): the shares on the thread pool
    # (rounding 0: none; float64 takes only 0)
    ("matmul_c", "tropic_matmul_pooled_f32"): [_f32, _f32, _f32, _i32, _n, _n, _n, *[_flag] * 4],
    ("matmul_c", "tropic_matmul_pooled_f64"): [_f64, _f64, _f64, _i32, _n, _n, _n, *[_flag] * 4],
    # half-precision products: (a, b, c, idx, M, K, N, maximise, rounding, threads)
    ("matmul_c", "tropic_rounding_supported"): [],
    ("matmul_c", "tropic_matmul_rounded_f32"): [_f32, _f32, _f32, _i32, _n, _n, _n, _flag, _flag, _flag],
    # (src, dst, n): float16 / bfloat16 (as uint16) <-> float32
    ("matmul_c", "tropic_widen_f16"): [_u16, _f32, _n],
    ("matmul_c", "tropic_narrow_f16"): [_f32, _u16, _n],
    ("matmul_c", "tropic_widen_bf16"): [_u16, _f32, _n],
    ("matmul_c", "tropic_narrow_bf16"): [_f32, _u16, _n],
    # (x, n): float32 rounded in place to bfloat16's precision (NaN kept)
    ("matmul_c", "tropic_round_bf16"): [_f32, _n],
    # (src, dst, rows, cols): dst = the transpose of src
    ("matmul_c", "tropic_transpose_f32"): [_f32, _f32, _n, _n],
    ("matmul_c", "tropic_transpose_f64"): [_f64, _f64, _n, _n],
    # (P, n, Hp, Wp, pstride, H, W, ostride, tap_row, tap_col, tap_weight | None, tap_index, T, maximise,
    # out, idx, threads): images and outputs pstride and ostride elements apart
    ("morphology_c", "tropic_taps_strided_f32"): [_f32, *[_n] * 7, *_tap_arguments(_f32)],
    ("morphology_c", "tropic_taps_strided_f64"): [_f64, *[_n] * 7, *_tap_arguments(_f64)],
    # (padded, C_in, C_group, Hp, Wp, H, W, C_out, per_group, tap_row, tap_col, weights, tap_index, T,
    # maximise, rounding, y, winner | None, winner_bytes, tasks (o, oc, b0, b1 rows), ntasks, threads):
    # the tap loops per task on the thread pool, the winners in winner_bytes (1, 2, 4 or 8)
    **{
        ("morphology_c", f"tropic_conv_pooled_{name}"): [values, *[_n] * 8, _i64, _i64, values, _i32, _n]
        + [_flag, _flag, values, ctypes.c_void_p, _flag, _i64, _n, _flag]
        for name, values in (("f32", _f32), ("f64", _f64))
    },
    # (src, n, H, W, row_line, Hp, col_line, Wp, left, fill, dst, nan_found): images framed by the line maps
    **{
        ("morphology_c", f"tropic_pad_{name}"): [values, _n, _n, _n, _i64, _n, _i64, _n, _n, scalar, values]
        + [_flag_out]
        for name, values, scalar in (("f32", _f32, _c_f32), ("f64", _f64, _c_f64))
    },
    # (src, H, W, row_line, col_line, Wp, left, fill, kh, tap_row, tap_col, tap_weight | None, tap_index, T,
    # maximise, rounding, out, winner | None, winner_bytes, blocks (b0, b1, i0, i1 rows), nblocks, nan_found,
    # threads): pad and tap loop per block on the thread pool
    **{
        ("morphology_c", f"tropic_morphology_pooled_{name}"): [values, _n, _n, _i64, _i64, _n, _n, scalar, _n]
        + [_i64, _i64, ctypes.c_void_p, _i32, _n, _flag, _flag, values, ctypes.c_void_p, _flag, _i64, _n]
        + [_flag_out, _flag]
        for name, values, scalar in (("f32", _f32, _c_f32), ("f64", _f64, _c_f64))
    },
    # backward passes (on the thread pool)
    # (g, idx, n, M, N, K, ga, gb (float64, or the gradient's dtype when out_t), gb_transposed, bias_k,
    # gbias, out_t, threads)
    ("scatter_c", "tropic_matmul_vjp_f32"): [_f32, _i32, *[_n] * 4, *[ctypes.c_void_p] * 2, *[_flag] * 2]
    + [_f32, _flag, _flag],
    ("scatter_c", "tropic_matmul_vjp_f64"): [_f64, _i32, *[_n] * 4, *[ctypes.c_void_p] * 2, *[_flag] * 2]
    + [_f64, _flag, _flag],
    # the bias as candidate K: (c, bias, rows, N, maximise, winner or NULL, winner's bytes (1, 2, 4), K)
    ("matmul_c", "tropic_bias_select_f32"): [_f32, _f32, _n, _n, _flag, ctypes.c_void_p, _flag, _n],
    ("matmul_c", "tropic_bias_select_f64"): [_f64, _f64, _n, _n, _flag, ctypes.c_void_p, _flag, _n],
    # (g, idx, idx's bytes (1, 2, 4), n, H, W, rows, kh, cols, kw, gimg (the gradient's dtype, written), gw
    # (zeroed), threads)
    ("scatter_c", "tropic_morphology_vjp_f32"): [_f32, ctypes.c_void_p, _flag, _n, _n, _n, _i64, _n, _i64, _n]
    + [_f32, _d, _flag],
    ("scatter_c", "tropic_morphology_vjp_f64"): [_f64, ctypes.c_void_p, _flag, _n, _n, _n, _i64, _n, _i64, _n]
    + [_f64, _d, _flag],
    # (g, idx, idx's bytes (1, 2, 4), 15 sizes, gx (the gradient's dtype, written), gw (zeroed), threads)
    ("scatter_c", "tropic_conv2d_vjp_f32"): [_f32, ctypes.c_void_p, _flag] + [_n] * 15 + [_f32, _d, _flag],
    ("scatter_c", "tropic_conv2d_vjp_f64"): [_f64, ctypes.c_void_p, _flag] + [_n] * 15 + [_f64, _d, _flag],
    # maxout: (x, groups, pieces, y, idx) and its backward (g, idx, groups, pieces, gx)
    ("scatter_c", "tropic_maxout_f32"): [_f32, _n, _n, _f32, _i32],
    ("scatter_c", "tropic_maxout_f64"): [_f64, _n, _n, _f64, _i32],
    ("scatter_c", "tropic_maxout_vjp_f32"): [_f32, _i32, _n, _n, _f32],
    ("scatter_c", "tropic_maxout_vjp_f64"): [_f64, _i32, _n, _n, _f64],
    # (P, Hp, Wp, kh, kw, maximise, out, idx, blocks (b0, b1, i0, i1 rows), nblocks, threads): the rect
    # kernel per block on the thread pool
    ("morphology_c", "tropic_rect_pooled_f32"): [_f32, _n, _n, _n, _n, _flag, _f32, _i32, _i64, _n, _flag],
    ("morphology_c", "tropic_rect_pooled_f64"): [_f64, _n, _n, _n, _n, _flag, _f64, _i32, _i64, _n, _flag],
    # geodesic reconstruction: (seed, mask, ndim, shape, steps, nsteps, flip, out[, winner], found)
    **{
        ("geodesic_c", f"tropic_reconstruct{'_winners' if winners else ''}_{name}"): _reconstruct_arguments(
            values, winners
        )
        for name, values in (("f32", _f32), ("f64", _f64), ("i64", _i64), ("u64", _u64))
        for winners in (False, True)
    },
}

# Each library's calling convention, as its exported version function reports it: a build of an older
# source (an editable install not rebuilt after a pull) would otherwise be called with arguments it
# reads differently. A mismatch leaves that library unloaded (the NumPy path), with the reason in
# status().
_ABI_VERSIONS = {
    "matmul_c": ("tropic_abi_version", 1),
    "morphology_c": ("tropic_abi_version", 2),
    "scatter_c": ("tropic_abi_version", 3),
    "geodesic_c": ("tropic_geodesic_abi_version", 1),
}

_functions: dict[str, ctypes._CFuncPtr] = {}
_modules: dict[str, object] = {}  # the extension modules imported as Python modules (entry points)
_raw_functions: dict[str, ctypes._CFuncPtr] = {}
_status: dict[str, str] = {}
_pool_shared: dict[str, bool] = {}  # kernel modules running their tasks on matmul_c's pool
_isa: dict[str, str] = {}  # the code path each library chose at load time ("avx512+avx2", "avx2", "generic")


def _load(library: str) -> ctypes.CDLL | None:
    if os.environ.get("TROPIC_DISABLE_COMPILED"):
        _status[library] = "disabled by TROPIC_DISABLE_COMPILED"
        return None
    spec = importlib.util.find_spec(f"tropic.backends.numpy._{library}")
    if spec is None or spec.origin is None:
        _status[library] = "not built (the C compiler or OpenMP was missing at install time)"
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError as exc:
        _status[library] = f"failed to load ({exc})"
        return None
    symbol, expected = _ABI_VERSIONS[library]
    version = getattr(lib, symbol, None)
    found = version() if version is not None else None
    if found != expected:
        _status[library] = (
            f"not used: built from another version of the source (calling convention {found}, this tropic "
            f"expects {expected}); rebuild it (pip install -e . again)"
        )
        return None
    isa = getattr(lib, "tropic_isa", None)
    if isa is not None:
        isa.restype = ctypes.c_char_p
        _isa[library] = isa().decode()
    _status[library] = f"loaded ({_isa[library]})" if isa is not None else "loaded"
    _modules[library] = importlib.import_module(f"tropic.backends.numpy._{library}")
    return lib


def _bind() -> None:
    libraries: dict[str, ctypes.CDLL | None] = {}
    for (library, name), argtypes in _SIGNATURES.items():
        if library not in libraries:
            libraries[library] = _load(library)
        lib = libraries[library]
        fn = getattr(lib, name, None) if lib is not None else None
        if fn is None:
            if lib is not None:
                _status[library] += f"; {name} missing"
            continue
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
        _functions[name] = fn
        raw = lib[name]  # a second function object: same code, arrays passed as addresses
        # ndpointer types subclass c_void_p: every pointer argument becomes a plain address
        raw.argtypes = [ctypes.c_void_p if issubclass(t, ctypes.c_void_p) else t for t in argtypes]
        raw.restype = ctypes.c_int
        _raw_functions[name] = raw
    _share_the_task_pool(libraries)


def _share_the_task_pool(libraries: dict[str, ctypes.CDLL | None]) -> None:
    """One task pool (csrc/thread_pool.h) for every kernel module: the product module's, handed to
    the others, so that one set of helper threads serves every kernel."""
    owner = libraries.get("matmul_c")
    if owner is None or not hasattr(owner, "tropic_pool_runner_address"):
        return
    owner.tropic_pool_runner_address.restype = ctypes.c_void_p
    runner = owner.tropic_pool_runner_address()
    for library, lib in libraries.items():
        if lib is not None and library != "matmul_c" and hasattr(lib, "tropic_pool_share"):
            lib.tropic_pool_share.argtypes = [ctypes.c_void_p]
            lib.tropic_pool_share.restype = None
            lib.tropic_pool_share(runner)
            lib.tropic_pool_is_shared.restype = ctypes.c_int
            _pool_shared[library] = bool(lib.tropic_pool_is_shared())


def function(name: str):
    """The bound C function ``name``, or None when it is not available (use the NumPy path)."""
    return _functions.get(name) if enabled else None


def isa(library: str) -> str | None:
    """The code path library ``library`` chose when it loaded (``"avx512+avx2"``, ``"avx2"`` or
    ``"generic"``), or None when it is not in use or does not say."""
    return _isa.get(library) if enabled and library in _modules else None


def raw_function(name: str):
    """``function(name)`` taking arrays as integer addresses (``a.ctypes.data``), unchecked.

    Converting an ndarray argument costs microseconds (dtype and flags checks), which adds up when a
    kernel is called per block of a large job; the caller checks dtype and contiguity once.
    """
    return _raw_functions.get(name) if enabled else None


def entry(library: str, name: str):
    """The Python-callable function ``name`` of extension ``library`` (``"matmul_c"``), or None when the
    compiled kernels are off or not built; same availability rules as :func:`function`."""
    if not enabled or library not in _modules:
        return None
    return getattr(_modules[library], name, None)


def available() -> bool:
    """Whether any compiled kernel is bound (and not switched off)."""
    return enabled and bool(_functions)


def status() -> dict[str, str]:
    """Load status of each compiled library (for ``tropic.backends.info()``)."""
    return dict(_status)


_bind()
# Tests switch this off to exercise the NumPy path on the same inputs.
enabled = True
