"""NumPy kernels for the tropical operators, registered with ``tropic.core.dispatch``.

One idea serves every operator: gather a bounded block of candidate sums ``x_k + w_k`` with the
candidates ``k`` on the last, contiguous axis, then let ``np.argmax`` / ``np.argmin`` (vectorised
along the last axis, first occurrence on ties, first NaN if any: exactly the tie and NaN rules of
``tropic.core.semiring``) pick the winner. Blocks hold at most ``_BLOCK_ELEMENTS`` candidates, so
memory stays O(output) however large the reduction. The results are bitwise those of the core
reference kernels (the tests check it); the gradients are scatter-adds with ``np.bincount``.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tropic.core._array_api import index_dtype, sum_to_shape
from tropic.core.checks import require_winners
from tropic.core.config import get_num_threads
from tropic.core.dispatch import register
from tropic.core.matmul import apply_bias, bias_vjp
from tropic.core.morphology import LONG_ROW, border_index, fold_long_rows
from tropic.core.semiring import MAX_PLUS, MIN_PLUS

from . import compiled

_BLOCK_ELEMENTS = 1 << 19  # candidates per block (2 MiB of float32): few Python-level calls
_PARALLEL_PAIRS = 1 << 22  # products with fewer pairs run on one thread
_SMALL_OUTPUT = 1 << 12  # outputs this small get fresh buffers (cheaper than the scratch lookup)
_executor: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool)
_executor_lock = threading.Lock()
_SCRATCH_LIMIT = 1 << 25  # bytes
_thread_local = threading.local()
_C_PRODUCT = {np.float32: "tropic_matmul_f32", np.float64: "tropic_matmul_f64"}
_C_TRANSPOSE = {np.float32: "tropic_transpose_f32", np.float64: "tropic_transpose_f64"}
_C_PRODUCT_POOLED = {np.float32: "tropic_matmul_pooled_f32", np.float64: "tropic_matmul_pooled_f64"}
_C_BIAS = {np.float32: "tropic_bias_select_f32", np.float64: "tropic_bias_select_f64"}
_SHARES_PER_THREAD = 2  # more shares balance better on a loaded machine, fewer re-read more of A
_C_CONV_POOLED = {np.float32: "tropic_conv_pooled_f32", np.float64: "tropic_conv_pooled_f64"}
_C_PAD = {np.float32: "tropic_pad_f32", np.float64: "tropic_pad_f64"}
_C_TAPS_STRIDED = {np.float32: "tropic_taps_strided_f32", np.float64: "tropic_taps_strided_f64"}
_C_VJP = {
    op: {np.float32: f"tropic_{op}_vjp_f32", np.float64: f"tropic_{op}_vjp_f64"}
    for op in ("matmul", "morphology", "conv2d")
}
_C_RECT_POOLED = {np.float32: "tropic_rect_pooled_f32", np.float64: "tropic_rect_pooled_f64"}
_C_MORPHOLOGY_POOLED = {
    np.float32: "tropic_morphology_pooled_f32",
    np.float64: "tropic_morphology_pooled_f64",
}
_C_MAXOUT = {np.float32: "tropic_maxout_f32", np.float64: "tropic_maxout_f64"}
_C_MAXOUT_VJP = {np.float32: "tropic_maxout_vjp_f32", np.float64: "tropic_maxout_vjp_f64"}
_PARALLEL_CANDIDATES = 1 << 20  # compiled kernels with fewer candidates run on one thread
# Products up to this many pairs (about 50 us on one core) run on one thread. Above it the shares go
# to the C task pool (thread_pool.h), whose helper wakes in microseconds: 64 x 256 x 64 (1 M pairs)
# 46 -> 27 us on two threads, 64 x 256 x 256 183 -> 95 us, where Python's pool (which hands the GIL
# over at each wake-up) had gained nothing below 8 M pairs. Beside a busy process the split costs
# little (64 x 784 x 256: 0.55-0.63 ms against 0.56 on one thread), unlike an OpenMP team's barrier.
_PARALLEL_PRODUCT_PAIRS = 1 << 20
_RECT_COST = 8  # comparisons per pixel of the van Herk kernel, for the task sizes
_TASK_CANDIDATES = 1 << 21  # candidates per task of the compiled morphology (its pad fits in L2)


def scratch(slot: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A work buffer that this thread reuses across calls; it must never be returned to the caller.

    Fresh multi-megabyte allocations are paid in page faults (the allocator gives freed pages back
    to the OS), which cost more than a small kernel's whole run; buffers above
    ``_SCRATCH_LIMIT`` bytes are not kept.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > _SCRATCH_LIMIT:
        return np.empty(shape, dtype)
    buffers = _thread_local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(slot)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = buffers[slot] = np.empty(max(nbytes, 1), np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def accumulator(slot: str, shape: tuple[int, ...], contributions: int) -> np.ndarray:
    """A gradient's float64 accumulator, zero, for ``contributions`` scattered adds; the caller copies
    the result out (``astype``). Where the adds are at least a quarter as many as the slots, a
    :func:`scratch` buffer filled with zeros: random writes into fresh ``np.zeros`` memory fault its
    pages in one by one, which on these VMs cost some 0.4 ms per MiB (a 512 x 512 product's backward
    took 5.5 ms that way against 1.8). Fewer adds touch few pages, and untouched pages of fresh zeros
    cost nothing, so there ``np.zeros`` (a sparse weight's gradient: 8 % slower with the scratch)."""
    if 4 * contributions < math.prod(shape):
        return np.zeros(shape)
    buffer = scratch(slot, shape, np.float64)
    buffer.fill(0.0)
    return buffer


def needs_repair(x: np.ndarray, w: np.ndarray) -> bool:
    """Whether ``x + w`` can meet ``inf + -inf`` (IEEE NaN, tropically the zero)."""
    return (_has_inf(x, +1) and _has_inf(w, -1)) or (_has_inf(x, -1) and _has_inf(w, +1))


def tropical_add(x: np.ndarray, w: np.ndarray, semiring, repair: bool, out=None) -> np.ndarray:
    """``x + w`` (broadcast) with the tropical zero absorbing, as ``Semiring.multiply``.

    ``repair`` comes from :func:`needs_repair` on the whole operands, so the check runs once per
    call, not once per block.
    """
    # inf - inf: repaired just below; a sum beyond the dtype's range is an infinity, as the compiled
    # kernels compute it (float16 operands overflow easily), not an error
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.add(x, w, out=out)
    if repair:
        spurious = np.isnan(total) & ~np.isnan(x) & ~np.isnan(w)
        total[spurious] = semiring.zero
    return total


def select_winner(candidates: np.ndarray, semiring, values: np.ndarray, winner: np.ndarray) -> None:
    """⊕-reduce the last axis of ``candidates`` into ``values`` and ``winner`` (in place).

    Winners of outputs that are the tropical zero are fixed to -1 by :func:`mark_no_winner`, once
    for the whole output.
    """
    pick = np.argmax if semiring.maximises else np.argmin
    best = pick(candidates, axis=-1)
    values[...] = np.take_along_axis(candidates, best[..., None], axis=-1)[..., 0]
    winner[...] = best


def mark_no_winner(values: np.ndarray, winner: np.ndarray, semiring) -> None:
    """An output equal to the tropical zero had only zero candidates: it has no winner."""
    winner[values == semiring.zero] = -1


def product(
    semiring,
    a: np.ndarray,
    b: np.ndarray,
    index_type,
    rounding: str | None = None,
    winners: bool = True,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``c[i, j] = ⊕_k a[i, k] ⊗ b[k, j]`` for 2-D ``a`` (M, K) and ``b`` (K, N); with ``bias`` (N,),
    then ``⊕(bias, c)`` with the bias as candidate ``K`` (core's rule, :func:`_with_bias`; the winners
    then in the index type of ``K + 1`` candidates).

    The compiled kernel when it is built and the dtype has one, else :func:`matmul_rows`; with
    ``rounding`` (float32 operands that hold half-precision values) each candidate sum is rounded to
    that dtype before it is compared (:func:`rounder`), in the compiled kernel where the CPU has AVX2
    and F16C. ``winners=False``: the compiled kernels compute the values only (an add and a max per
    pair, the same bits) and None is returned for the winners.
    """
    (M, K), N = a.shape, b.shape[1]
    direct = compiled.entry("matmul_c", "product") if rounding is None else None
    if bias is not None:
        fits = bias.shape == (N,) and bias.dtype == a.dtype == b.dtype and a.dtype.type in _C_PRODUCT
        if direct is None or not (fits and 0 < K < 2**31 and M and N):
            return _with_bias(semiring, bias, *product(semiring, a, b, index_type, rounding, winners), K)
        index_type = _index_type(K + 1)  # the direct entry applies it (below)
    if _float16_through_float32(rounding, a, b):
        wide = float16_to_float32(a), float16_to_float32(b)
        c, winner = product(semiring, *wide, index_type, "float16", winners)
        return float32_to_float16(c), winner
    if rounding is not None and not winners and a.dtype == np.float32 == b.dtype:
        return _values_rounded_once(product(semiring, a, b, index_type, None, False)[0], rounding)
    kernel = pooled = None
    code: tuple[int, ...] = ()  # the rounded kernels take the rounding's code after `maximise`
    if 0 < K < 2**31 and M and N:
        if rounding is None:
            kernel = compiled.raw_function(_C_PRODUCT.get(a.dtype.type, ""))
        elif a.dtype == np.float32 == b.dtype and _compiled_rounding():
            kernel = compiled.raw_function("tropic_matmul_rounded_f32")
            code = (_ROUNDING_CODES[rounding],)
        pooled = compiled.raw_function(_C_PRODUCT_POOLED.get(a.dtype.type, "")) if kernel else None
    if kernel is None:
        return matmul_rows(semiring, a, np.ascontiguousarray(b.T), index_type, rounder(rounding))
    # Without the direct entry (a rounding), the raw kernels take addresses (converting arrays costs
    # microseconds, which a 4 x 4 product notices): a, b contiguous of the kernel's dtype, c and winner fresh.
    maximise = int(semiring.maximises)
    if direct is not None:
        a, b, c, winner, nan_found = _direct_product(direct, a, b, maximise, winners, bias)
        if nan_found:  # the NaN rule, then the bias
            _product_nan_rule(a, b, c, winner)
        winner = None if winner is None else winner.astype(index_type)
        return _with_bias(semiring, bias, c, winner, K) if bias is not None and nan_found else (c, winner)
    a, b = np.ascontiguousarray(a), _c_order(b)
    c, winner = np.empty((M, N), a.dtype), None
    if winners:
        winner = np.empty((M, N), np.int32) if M * N <= _SMALL_OUTPUT else scratch("winner", (M, N), np.int32)
    threads = get_num_threads() if M * K * N > _PARALLEL_PRODUCT_PAIRS else 1
    addresses = _addresses(a, b, c, winner)
    if threads == 1 or pooled is None:
        _check(kernel(*addresses, M, K, N, maximise, *code, 1), "product")
    else:  # shares of the tiles, claimed by the threads one at a time (the C pool, thread_pool.h)
        tasks = _SHARES_PER_THREAD * threads
        _check(pooled(*addresses, M, K, N, maximise, *(code or (0,)), tasks, threads), "product")
    _product_nan_rule(a, b, c, winner)
    # A copy: a large `winner` is scratch, and the caller wants the smallest index dtype anyway.
    return c, None if winner is None else winner.astype(index_type)


def _direct_product(direct, a: np.ndarray, b: np.ndarray, maximise: int, winners: bool, bias, bias_min=None):
    """One call of the compiled module's own entry point (one thread, or shares of the tiles on the
    C pool, thread_pool.h): the product, a NaN scan and the bias (unless a NaN was found: then the
    caller applies the NaN rule and the bias), no ctypes. ``maximise`` 2: the pair, the max-plus
    product (with ``bias``) in the first rows of c and winner, the min-plus one (``bias_min``) in the
    last. B is packed from its transpose where it lies (the W.T of a layer's x @ W.T), else read in
    C order. Returns ``(a, b, c, winner, nan_found)``: the operands as the kernel read them, c
    fresh, the int32 winners (scratch when large: the caller copies them out) or None. (Every line
    counts here: a 4 x 4 product's whole call takes about 14 us on the project's VMs.)"""
    b_transposed = _is_transposed_matrix(b)
    a, b = np.ascontiguousarray(a), b if b_transposed else _c_order(b)
    (M, K), N = a.shape, b.shape[1]
    rows = 2 * M if maximise == 2 else M
    c = np.empty((rows, N), a.dtype)
    winner = None
    if winners:
        winner = (
            np.empty((rows, N), np.int32)
            if rows * N <= _SMALL_OUTPUT
            else scratch("winner", (rows, N), np.int32)
        )
    threads = get_num_threads() if rows * K * N > _PARALLEL_PRODUCT_PAIRS else 1
    if bias is not None:
        bias = np.ascontiguousarray(bias)
    if bias_min is not None:
        bias_min = np.ascontiguousarray(bias_min)
    b_given = b.T if b_transposed else b
    tasks = _SHARES_PER_THREAD * threads
    status, nan_found = direct(a, b_given, c, winner, maximise, tasks, threads, b_transposed, bias, bias_min)
    _check(status, "product")
    return a, b, c, winner, nan_found


_ROUNDING_CODES = {"float16": 1, "bfloat16": 2}  # the rounded product kernels' codes


def _float16_through_float32(rounding: str | None, *arrays: np.ndarray | None) -> bool:
    """Whether float16 operands run on the float32 kernels that round every sum to float16 (where
    the CPU has AVX2 + F16C): the same values and winners as float16 arithmetic, whose sum of two
    float16 numbers is their correctly rounded sum too; NumPy's float16 has no compiled kernel."""
    if rounding is not None:
        return False
    given = False
    for x in arrays:  # a loop that stops at the first non-float16 operand: every call asks
        if x is not None:
            if getattr(x, "dtype", None) != np.float16:
                return False
            given = True
    return given and _compiled_rounding()


def _compiled_rounding() -> bool:
    """Whether the compiled kernels round half-precision sums themselves (AVX2 and F16C)."""
    supported = compiled.raw_function("tropic_rounding_supported")
    return supported is not None and supported() == 1


def float16_to_float32(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float32)`` for a float16 array (exact), by F16C where the CPU has it."""
    widen = compiled.function("tropic_widen_f16") if _compiled_rounding() else None
    if widen is None:
        return x.astype(np.float32)
    out = np.empty(x.shape, np.float32)
    _check(widen(np.ascontiguousarray(x).view(np.uint16), out, x.size), "float16 conversion")
    return out


def float32_to_float16(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float16)`` for a float32 array: to nearest even, beyond float16's range an
    infinity (as in float16 arithmetic, without NumPy's overflow warning); by F16C where the CPU has it."""
    narrow = compiled.function("tropic_narrow_f16") if _compiled_rounding() else None
    if narrow is None:
        with np.errstate(over="ignore"):
            return x.astype(np.float16)
    out = np.empty(x.shape, np.uint16)
    _check(narrow(np.ascontiguousarray(x), out, x.size), "float16 conversion")
    return out.view(np.float16)


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 numbers given as their uint16 bits (exact: the bits go on top)."""
    widen = compiled.function("tropic_widen_bf16")
    if widen is None:
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    out = np.empty(bits.shape, np.float32)
    _check(widen(np.ascontiguousarray(bits), out, bits.size), "bfloat16 conversion")
    return out


def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` rounded to bfloat16, to nearest even, as uint16 bits (a NaN stays a NaN)."""
    narrow = compiled.function("tropic_narrow_bf16")
    if narrow is None:
        rounded = np.array(x, dtype=np.float32, copy=True)
        _round_to_bfloat16(rounded)
        bits = (rounded.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
        bits[np.isnan(rounded)] |= np.uint16(0x0040)  # the quiet bit: a NaN whose payload was low stays NaN
        return bits
    out = np.empty(x.shape, np.uint16)
    _check(narrow(np.ascontiguousarray(x), out, x.size), "bfloat16 conversion")
    return out


def _transposed_is_cheaper(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a @ b`` should run as ``(b.T @ a.T).T``: ``b`` (K, N) is the transposed view of a
    C-contiguous (N, K) matrix (the ``x @ W.T`` of every layer), and copying ``a`` and the (M, N)
    results costs less than copying ``b`` into C order (few rows: a batch of 64 against a 256 x 784
    weight copies 16 K values instead of 200 K)."""
    if not _is_transposed_matrix(b):
        return False
    (M, K), N = a.shape, b.shape[1]
    return M * K + 2 * M * N < K * N


def _packs_transposed(rounding: str | None) -> bool:
    """Whether :func:`product` packs a transposed ``b`` where it lies (the compiled direct entry,
    without rounding): then it beats both the transposed product and a copy of ``b`` at every shape
    (x 64 x 256 @ W.T, W 256 x 256: 104 against 142 us; at 1 x 256 23 against 54 us)."""
    return rounding is None and compiled.entry("matmul_c", "product") is not None


def _transposed_product(semiring, a, b, index_type, rounding, winners):
    """``a @ b`` as ``(b.T @ a.T).T``, in C order: the same candidates ``a[i, k] + b[k, j]``
    (``+`` commutes exactly), the same order in ``k``, ties and NaN rule, so the same bits."""
    c_t, w_t = product(semiring, b.T, np.ascontiguousarray(a.T), index_type, rounding, winners)
    return np.ascontiguousarray(c_t.T), None if w_t is None else np.ascontiguousarray(w_t.T)


def _is_transposed_matrix(b: np.ndarray) -> bool:
    """Whether 2-D ``b`` is the transposed view of a C-contiguous matrix (and not C-contiguous itself)."""
    return not b.flags.c_contiguous and b.T.flags.c_contiguous


def _c_order(b: np.ndarray) -> np.ndarray:
    """``b`` (K, N) C-contiguous, for the product kernels.

    A transposed view of a C-contiguous matrix (the ``W.T`` of every layer's ``x @ W.T``) whose rows
    of ``W`` are a multiple of 1 KiB long is copied by the compiled tiled transpose into this
    thread's scratch (valid until its next product). NumPy's transposing copy reads ``W`` a row apart,
    and a power-of-two row length maps those reads to a few cache sets: at K = 512, N = 256 float32 it
    takes 358 us against 76, at K = 1024 1877 against 151. For other row lengths, or fewer than 32
    columns, NumPy's copy is as fast or faster (K = 784, N = 256: 99 us against 116).
    """
    if b.flags.c_contiguous:
        return b
    transpose = compiled.raw_function(_C_TRANSPOSE.get(b.dtype.type, ""))
    K, N = b.shape
    aliasing = (K * b.itemsize) % 1024 == 0 and N >= 32
    if transpose is None or not aliasing or not b.T.flags.c_contiguous:
        return np.ascontiguousarray(b)
    out = scratch("product_b", b.shape, b.dtype)
    transpose(*_addresses(b.T, out), N, K)
    return out


def _product_nan_rule(a: np.ndarray, b: np.ndarray, c: np.ndarray, winner: np.ndarray | None) -> None:
    """NaN dominates: ``c[i, j]`` is NaN if row ``i`` of ``a`` or column ``j`` of ``b`` holds one,
    won by the first NaN candidate (``winner`` None: the values only). (The compiled kernels never
    let a NaN candidate win.)"""
    if not (_any_nan(a) or _any_nan(b)):  # the common case, without boolean temporaries
        return
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    K = a.shape[1]
    first_a = np.where(nan_a.any(axis=1), nan_a.argmax(axis=1), K)
    first_b = np.where(nan_b.any(axis=0), nan_b.argmax(axis=0), K)
    first = np.minimum(first_a[:, None], first_b[None, :])
    hit = first < K
    c[hit] = np.nan
    if winner is not None:
        winner[hit] = first[hit]


def rounder(rounding: str | None) -> Callable[[np.ndarray], None] | None:
    """The in-place rounding of a float32 block of candidate sums to ``rounding`` (``"float16"`` or
    ``"bfloat16"``, round to nearest even), or None.

    A float32 sum of two half-precision numbers rounded to half precision is the correctly rounded
    half-precision sum (24 >= 2 * 11 + 2 bits), so the candidates compare exactly as in that dtype.
    """
    if rounding is None:
        return None
    if rounding == "float16":
        return _round_to_float16
    if rounding == "bfloat16":
        return _round_to_bfloat16
    raise ValueError(f"rounding must be None, 'float16' or 'bfloat16', got {rounding!r}")


def _values_rounded_once(values: np.ndarray, rounding: str) -> tuple[np.ndarray, None]:
    """``(values, None)`` with ``values`` (the unrounded ⊕-reduction of float32 sums of half-precision
    numbers) rounded in place to ``rounding``: the values of the reduction whose every candidate is
    rounded, bit for bit, at one rounding per output instead of one per candidate.

    Rounding to nearest is monotone, so the best rounded candidate is the rounded best candidate. The
    bits agree too: where several candidates round to the best value, which of them won does not
    change the value, and no nonzero sum rounds to a zero (a sum of two float16 or bfloat16 numbers
    is a multiple of the dtype's smallest subnormal), so no zero's sign can differ; the infinities
    (an overflowing sum rounds to one either way) come out the same, and so do NaN outputs (the NaN
    rules write the default NaN, which rounds to itself). The winners are another matter (rounded
    ties go to the first candidate), so only the values-only calls use this.
    """
    rounder(rounding)(values)
    return values, None


def _rounded_scalar(value: float, rounding: str) -> float:
    block = np.array([value], np.float32)
    rounder(rounding)(block)
    return float(block[0])


def _round_to_float16(block: np.ndarray) -> None:
    """Round float32 ``block`` in place to float16, to nearest even. A sum beyond float16's range
    rounds to an infinity, as in float16 arithmetic: not an error, so NumPy's cast warning is off.
    A contiguous block goes through F16C where the CPU has it (NumPy's cast is several times slower)."""
    narrow = compiled.function("tropic_narrow_f16") if _compiled_rounding() else None
    widen = compiled.function("tropic_widen_f16") if narrow is not None else None
    if widen is not None and block.flags.c_contiguous:
        bits = scratch("float16_bits", block.shape, np.uint16)
        _check(narrow(block, bits, block.size), "float16 conversion")
        _check(widen(bits, block, block.size), "float16 conversion")
        return
    with np.errstate(over="ignore"):
        np.copyto(block, block.astype(np.float16))


def _round_to_bfloat16(block: np.ndarray) -> None:
    """Round float32 ``block`` in place to bfloat16's 8 significand bits, to nearest even (NaN stays).
    A contiguous block in one compiled pass where the kernels are built (the same bits)."""
    round_in_place = compiled.function("tropic_round_bf16")
    if round_in_place is not None and block.flags.c_contiguous:
        _check(round_in_place(block, block.size), "bfloat16 rounding")
        return
    bits = block.view(np.uint32)
    lowest_kept = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = (bits + (np.uint32(0x7FFF) + lowest_kept)) & np.uint32(0xFFFF0000)
    np.copyto(bits, rounded, where=~np.isnan(block))


def _check(status: int, what: str) -> None:
    """C kernels return 0, 1 for arguments they cannot take (a bug on this side), 2 out of memory."""
    if status == 2:
        raise MemoryError(f"tropic's compiled {what} kernel could not allocate its work space")
    if status != 0:
        raise RuntimeError(f"tropic's compiled {what} kernel rejected its arguments (status {status})")


def matmul_rows(
    semiring, a: np.ndarray, b_t: np.ndarray, index_type, rounding: Callable[[np.ndarray], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy path: ``c[i, j] = ⊕_k a[i, k] ⊗ b_t[j, k]`` for 2-D ``a`` (M, K) and ``b_t`` (N, K).

    ``rounding``, if given, rounds each block of candidate sums in place before the selection (the
    torch ops' half-precision products, computed in float32).
    """
    (M, K), N = a.shape, b_t.shape[0]
    c = np.full((M, N), semiring.zero, a.dtype)
    winner = np.full((M, N), -1, index_type)
    if K == 0:
        return c, winner
    repair = needs_repair(a, b_t)
    cols = max(1, min(N, _BLOCK_ELEMENTS // K))
    rows = max(1, min(M, _BLOCK_ELEMENTS // (K * cols)))

    def stripe(lo: int, hi: int) -> None:  # rows lo..hi of the output, with a private scratch block
        sums = np.empty((rows, cols, K), a.dtype)
        for j0 in range(0, N, cols):
            b_block = b_t[None, j0 : j0 + cols, :]
            for i0 in range(lo, hi, rows):
                i1 = min(i0 + rows, hi)
                block = sums[: i1 - i0, : b_block.shape[1]]
                tropical_add(a[i0:i1, None, :], b_block, semiring, repair, out=block)
                if rounding is not None:
                    rounding(block)
                select_winner(block, semiring, c[i0:i1, j0 : j0 + cols], winner[i0:i1, j0 : j0 + cols])

    # NumPy releases the GIL inside add and argmax, so row stripes run in parallel threads; each
    # output is written by one thread only, so the result does not depend on the thread count.
    threads = min(get_num_threads(), M) if M * N * K >= _PARALLEL_PAIRS else 1
    bounds = np.linspace(0, M, threads + 1).astype(int)
    parallel_tasks(threads, lambda t: stripe(bounds[t], bounds[t + 1]), threads)
    mark_no_winner(c, winner, semiring)
    return c, winner


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool, with at least ``workers`` threads.

    A pool is never shut down while tropic runs: calls in flight on other Python threads hold it and
    keep submitting to it. When a call needs more workers, a larger pool replaces it for later calls;
    the old one's idle threads exit once the last call holding it is done and it is collected.
    """
    global _executor
    with _executor_lock:
        if _executor is None or _executor[0] < workers:
            _executor = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tropic"))
        return _executor[1]


def _has_inf(x: np.ndarray, sign: int) -> bool:
    return bool(np.any(x == sign * np.inf))


def _index_type(n_candidates: int):
    return index_dtype(np, n_candidates)


@register("numpy", "matmul")
def matmul(
    xp,
    semiring,
    a: np.ndarray,
    b: np.ndarray,
    bias: np.ndarray | None = None,
    rounding: str | None = None,
    winners: bool = True,
):
    """The products (:func:`product`; a transposed weight as :func:`_transposed_product`), then the
    bias as candidate ``K`` (:func:`_with_bias`; a layer's bias (N,) in the product's own call)."""
    in_product = bias is not None and b.ndim == 2 and bias.shape == (b.shape[-1],)
    c, w = _matmul(semiring, a, b, rounding, winners, bias if in_product else None)
    return (c, w) if bias is None or in_product else _with_bias(semiring, bias, c, w, a.shape[-1])


@register("numpy", "matmul_pair")
def matmul_pair(xp, first: tuple, second: tuple, rounding: str | None = None, winners: bool = True):
    """The max-plus-min product's run (:func:`tropic.core.mpm._run`) in one compiled call, for a
    layer's operands: ``first`` and ``second`` are ``(a, b, bias, maximise)``, a max-plus and a
    min-plus product of the same arrays ``a`` and ``b`` (the same objects, as the operator passes
    them); returns ``(c_max + c_min, stack([winners_first, winners_second]))`` (the winners in the
    index dtype of ``K`` candidates, ``K + 1`` with a bias; None for values only), what two calls of
    :func:`matmul` and the add give, bit for bit, or None where this does not apply (the operator
    then makes the two calls).

    .. math:: c_{ij} = \\max\\big(\\beta_j, \\max_k a_{ik} + b_{kj}\\big)
              + \\min\\big(\\beta'_j, \\min_k a_{ik} + b_{kj}\\big)

    Where the CPU has a pair kernel (AVX2 or AVX-512) each candidate sum is added once for both
    products, in one pass over ``a`` and the packed ``b``; elsewhere (the portable C) the compiled
    entry runs the two products one after the other."""
    direct = compiled.entry("matmul_c", "product")
    (a, b, bias_first, max_first), (a_second, b_second, bias_second, max_second) = first, second
    if (
        direct is None
        or rounding is not None
        or max_first == max_second
        or a is not a_second
        or b is not b_second
    ):
        return None
    dtype = a.dtype
    if dtype.type not in _C_PRODUCT or a.ndim < 2 or b.ndim != 2 or b.dtype != dtype:
        return None
    batch, K, N = a.shape[:-1], a.shape[-1], b.shape[1]  # a's leading axes fold into its rows
    M = math.prod(batch)
    if not (0 < K < 2**31 and M and N):
        return None
    for bias in (bias_first, bias_second):  # a layer's bias (N,) of a's dtype: the compiled call applies it
        fits = isinstance(bias, np.ndarray) and bias.shape == (N,) and bias.dtype == dtype
        if bias is not None and not fits:
            return None
    bias_max, bias_min = (bias_first, bias_second) if max_first else (bias_second, bias_first)
    # maximise 2: both products, the max-plus product's rows of c and winner first
    a, b, c, winner, nan_found = _direct_product(direct, a.reshape(M, K), b, 2, winners, bias_max, bias_min)
    index_type = _index_type(K + 1 if bias_max is not None or bias_min is not None else K)
    if nan_found:  # as product(): the NaN rule, then each bias (rare: NumPy code)
        planes = []
        for rows, semiring, bias in (
            (slice(0, M), MAX_PLUS, bias_max),
            (slice(M, 2 * M), MIN_PLUS, bias_min),
        ):
            w_plane = None if winner is None else winner[rows]
            _product_nan_rule(a, b, c[rows], w_plane)
            if bias is not None:
                c[rows], w_plane = _with_bias(semiring, bias, c[rows], w_plane, K)
            planes.append(w_plane)
        if winner is not None:
            winner = np.concatenate([w.astype(index_type) for w in planes])
    values = (c[:M] + c[M:]).reshape(batch + (N,))  # c_max + c_min, as the operator adds them
    if winner is None:
        return values, None
    stacked = winner.reshape((2, *batch, N))  # copied (winner may be scratch) into the index dtype
    return values, (stacked if max_first else stacked[::-1]).astype(index_type, order="C")


def _with_bias(semiring, bias: np.ndarray, c: np.ndarray, winner: np.ndarray | None, K: int):
    """``apply_bias`` (core's rule) in one compiled pass over the fresh ``c`` for a bias along its
    last axis; elsewhere core's NumPy code."""
    select = compiled.raw_function(_C_BIAS.get(c.dtype.type, ""))
    N = c.shape[-1]
    if winner is not None:  # the product's own array, written in place: K must fit its dtype
        winner = winner.astype(_index_type(K + 1), copy=False)
    if (
        select is None
        or bias.shape != (N,)
        or bias.dtype != c.dtype
        or not c.flags.c_contiguous
        or (winner is not None and (not winner.flags.c_contiguous or winner.itemsize > 4))
    ):
        return apply_bias(np, semiring.maximises, bias, c, winner, K)
    bias = np.ascontiguousarray(bias)
    rows = c.size // N if N else 0
    status = select(
        *_addresses(c, bias), rows, N, int(semiring.maximises), _address(winner),
        0 if winner is None else winner.itemsize, K,
    )  # fmt: skip
    _check(status, "bias")
    return c, winner


def _matmul(semiring, a: np.ndarray, b: np.ndarray, rounding: str | None, winners: bool, bias=None):
    """The product of ``a`` (..., M, K) and ``b`` ((..., ) K, N); ``bias`` (N,) only with a 2-D ``b``."""
    K = a.shape[-1]
    index_type = _index_type(K)
    batch = a.shape[:-2] if b.ndim == 2 else np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, N = a.shape[-2], b.shape[-1]
    if b.ndim == 2:  # the layer case x @ W: fold a's batch into its rows
        a_rows = a.reshape(math.prod(a.shape[:-1]), K)  # not -1: K may be 0
        if not _packs_transposed(rounding) and _transposed_is_cheaper(a_rows, b):
            c, w = _transposed_product(semiring, a_rows, b, index_type, rounding, winners)
            if bias is not None:
                c, w = _with_bias(semiring, bias, c, w, K)
        else:
            c, w = product(semiring, a_rows, b, index_type, rounding, winners, bias)
        return c.reshape(batch + (M, N)), None if w is None else w.reshape(batch + (M, N))
    a = np.broadcast_to(a, batch + (M, K))
    b = np.broadcast_to(b, batch + (K, N))
    c = np.empty(batch + (M, N), a.dtype)
    winner = np.empty(batch + (M, N), index_type)
    for i in np.ndindex(*batch):
        c[i], winner[i] = product(semiring, a[i], b[i], index_type, rounding)
    return c, winner


@register("numpy", "matmul_vjp")
def matmul_vjp(
    xp, grad, indices, a_shape, b_shape, bias_shape=None, needs=(True, True, True), transposed_b_grad=False
):
    """The compiled scatter-add (float64 sums in the outputs' row-major order), else np.bincount; a
    bias of shape (N,) (N >= 2) in the same pass, else core's :func:`~tropic.core.matmul.bias_vjp`.
    ``transposed_b_grad`` (a layout hint, for 2-D products): ``grad_b`` comes as the transposed view
    of a C-contiguous (N, K) array, the layout of a weight ``W`` that entered as ``W.T``."""
    *batch, M, N = grad.shape
    K = a_shape[-1]
    n_batch = math.prod(batch)
    scatter = _compiled_scatter("matmul", grad, indices)
    fused_bias = scatter is not None and bias_shape is not None and tuple(bias_shape) == (N,) and N >= 2
    grad_bias = None
    if bias_shape is not None and not fused_bias:
        grad_bias, indices = bias_vjp(np, grad, indices, K, bias_shape, needs[2])
    if scatter is not None:
        # The kernel writes both gradients whole; in grad's dtype straight away unless broadcast
        # batches are still to be summed (in float64, below).
        transposed = bool(transposed_b_grad and not batch and needs[1])
        out_t = tuple(a_shape) == tuple(batch) + (M, K) and tuple(b_shape) == tuple(batch) + (K, N)
        dtype = grad.dtype if out_t else np.float64
        grad_a = np.empty(tuple(batch) + (M, K), dtype) if needs[0] else None
        grad_b = None
        if needs[1]:
            grad_b = np.empty((N, K) if transposed else tuple(batch) + (K, N), dtype)
        if fused_bias and needs[2]:
            grad_bias = np.empty(N, grad.dtype)
        threads = get_num_threads() if grad.size * K >= _PARALLEL_PRODUCT_PAIRS else 1
        # The module's own entry point takes the arrays (int8 / int16 winners widened in C), not addresses.
        direct = compiled.entry("scatter_c", "matmul_vjp")
        g, k = _contiguous(grad), np.ascontiguousarray(indices)
        status = direct(
            g, k, grad_a, grad_b, grad_bias, n_batch, M, N, K, transposed, fused_bias, out_t, threads
        )  # fmt: skip
        _check_scatter(status, indices, K + 1 if fused_bias else K)
        if transposed:
            grad_b = grad_b.T  # the same sums, in W's layout
        if out_t:
            return grad_a, grad_b, grad_bias
    else:
        require_winners(np, "indices", indices, K)
        b_idx, i_idx, j_idx = np.indices((n_batch, M, N), sparse=True)
        k = indices.reshape(n_batch, M, N).astype(np.int64)
        valid = k >= 0
        g = grad.reshape(n_batch, M, N)[valid]
        grad_a = grad_b = None
        if needs[0]:
            a_slot = ((b_idx * M + i_idx) * K + k)[valid]
            grad_a = _bincount(a_slot, g, n_batch * M * K, np.float64).reshape(tuple(batch) + (M, K))
        if needs[1]:
            b_slot = ((b_idx * K + k) * N + j_idx)[valid]
            grad_b = _bincount(b_slot, g, n_batch * K * N, np.float64).reshape(tuple(batch) + (K, N))
    # Broadcast batches are summed in float64 too, before the one rounding to the gradient's dtype.
    if grad_a is not None:
        grad_a = sum_to_shape(np, grad_a, tuple(a_shape)).astype(grad.dtype)
    if grad_b is not None:
        grad_b = sum_to_shape(np, grad_b, tuple(b_shape)).astype(grad.dtype)
    return grad_a, grad_b, grad_bias


@register("numpy", "matmul_vjp_pair")
def matmul_vjp_pair(
    xp, grad, winners, shapes, needs, transposed_b_first_grad=False, transposed_b_second_grad=False
):
    """The max-plus-min product's vjp (:func:`tropic.core.mpm._vjp`) in one compiled call for a
    layer's matrices: ``winners`` (2, M, N) are the two products' (stacked), ``shapes`` and ``needs``
    their operands' ``(a, b, bias)`` twice; returns the six gradients, each what :func:`matmul_vjp`
    gives for its product, bit for bit (both products' scatters run in one pool run), or None where
    this does not apply (the operator then makes the two calls)."""
    direct = compiled.entry("scatter_c", "matmul_vjp")
    if direct is None or grad.ndim != 2 or _compiled_scatter("matmul", grad, winners) is None:
        return None
    if not any(needs[:3]) or not any(needs[3:]):
        return None  # one product only (the operator then skips the other, as two calls would)
    M, N = grad.shape
    products = (shapes[:3], shapes[3:])
    for a_shape, b_shape, bias_shape in products:
        if a_shape is None or b_shape is None or len(a_shape) != 2 or len(b_shape) != 2:
            return None
        if tuple(a_shape) != (M, products[0][0][1]) or tuple(b_shape) != (a_shape[1], N):
            return None  # a broadcast operand (its gradient summed over the broadcast)
        if bias_shape is not None and (tuple(bias_shape) != (N,) or N < 2):
            return None  # a bias the scatter does not sum itself
    K = shapes[0][1]
    transposed = (bool(transposed_b_first_grad and needs[1]), bool(transposed_b_second_grad and needs[4]))
    if transposed[0] != transposed[1] and needs[1] and needs[4]:
        return None  # the pass writes both products' gradients of b in one layout
    biased = tuple(bias_shape is not None for _, _, bias_shape in products)
    outputs = []
    for p in range(2):
        need_a, need_b, need_bias = needs[3 * p : 3 * p + 3]
        grad_a = np.empty((M, K), grad.dtype) if need_a else None
        grad_b = np.empty((N, K) if transposed[p] else (K, N), grad.dtype) if need_b else None
        outputs.append((grad_a, grad_b, np.empty(N, grad.dtype) if biased[p] and need_bias else None))
    threads = get_num_threads() if 2 * grad.size * K >= _PARALLEL_PRODUCT_PAIRS else 1
    first, second = (np.ascontiguousarray(winners[p]) for p in range(2))
    layout = transposed[0] or transposed[1]  # (a product whose b is not needed writes no gradient of b)
    status = direct(
        _contiguous(grad), first, *outputs[0], 1, M, N, K, layout, biased[0], True, threads,
        second, *outputs[1], biased[1],
    )  # fmt: skip
    if status == 3:  # a winner out of range: said as the single products' backward says it
        for k, bias in ((first, biased[0]), (second, biased[1])):
            require_winners(np, "indices", k, K + 1 if bias else K)
    _check(status, "gradient")
    gradients: list = []
    for p, (grad_a, grad_b, grad_bias) in enumerate(outputs):  # a transposed grad_b: W's layout
        gradients += [grad_a, grad_b.T if transposed[p] else grad_b, grad_bias]
    return tuple(gradients)


@register("numpy", "morphology")
def morphology(
    xp, semiring, image, weights, support, row_window, col_window, fill, rounding=None, winners=True
):
    """Reduce over the taps of the structuring element, reading the image through the window maps.

    Compiled kernels when built: a van Herk running max for full flat rectangles of more than
    ``_FLAT_RECT_TAPS`` taps (cost per pixel independent of the window), else padding and a tap loop
    per block of images (see :func:`_compiled_taps`); one-row elements on long rows (1-D signals)
    read the image in place (:func:`_compiled_line_taps`); without them the NumPy tap loop. The NaN
    rule is applied afterwards. With ``rounding``, the border value and every sum ``x + w`` are
    rounded to that dtype (a flat element adds nothing: its candidates are the image's own values).
    ``winners=False``: the compiled tap loops skip the winners (None is returned in their place).
    """
    if _float16_through_float32(rounding, image, weights):
        out, winner = morphology(
            xp, semiring, float16_to_float32(image),
            None if weights is None else float16_to_float32(np.asarray(weights)),
            support, row_window, col_window, fill, "float16", winners,
        )  # fmt: skip
        return float32_to_float16(out), winner
    kh, kw = support.shape
    H, W = image.shape[-2:]
    flat = image.reshape(math.prod(image.shape[:-2]), H, W)
    taps = _element_taps(support)[0]
    w = None if weights is None else np.asarray(weights)
    index_type = _index_type(kh * kw)
    if flat.size == 0:  # nothing to compute (and no pixel to pad from)
        return np.empty(image.shape, image.dtype), np.empty(image.shape, index_type)
    if kh == 1 and W >= _LONG_ROW:  # 1-D signals (and very wide images under a one-row element)
        if rounding is None and (w is not None or len(taps) <= _FEW_TAPS):
            result = _compiled_line_taps(semiring, flat, w, taps, col_window, fill, index_type, winners)
            if result is not None:
                out, winner = result
                return out.reshape(image.shape), None if winner is None else winner.reshape(image.shape)
        element = (w, support, col_window)
        return fold_long_rows(np, morphology, semiring, image, *element, fill, rounding, winners)
    padded = None
    if rounding is not None:
        fill = _rounded_scalar(fill, rounding)
        if w is None:  # a flat element adds nothing: no sum to round
            rounding = None
        elif not winners and flat.dtype == np.float32 == w.dtype:
            element = (weights, support, row_window, col_window, fill)  # the fill rounded above
            return _values_rounded_once(morphology(xp, semiring, image, *element, None, False)[0], rounding)
        elif not (flat.dtype == np.float32 and _compiled_rounding()):
            # the sums are rounded one tap at a time, on the NumPy path
            padded = pad(flat, row_window, col_window, fill)
            out, winner = numpy_taps(
                semiring, padded, w, taps, kw, row_window, col_window, H, W, rounder(rounding)
            )
            propagate_nan(padded, w, taps, row_window, col_window, kw, out, winner)
            return out.reshape(image.shape), winner.astype(index_type).reshape(image.shape)
    # (the rounded tap loop always tracks the winners)
    track = winners or rounding is not None
    result = _compiled_taps(
        semiring, flat, w, support, row_window, col_window, fill, index_type, rounding, track
    )
    if result is None:
        padded = pad(flat, row_window, col_window, fill)
        has_nan = _any_nan(padded) or (w is not None and _any_nan(w[support]))
        if rounding is None:
            result = _compiled_rect(semiring, padded, w, support, row_window, col_window, H, W, has_nan)
        if result is None:
            result = numpy_taps(
                semiring, padded, w, taps, kw, row_window, col_window, H, W, rounder(rounding)
            )
        out, winner = result
        # copies: the compiled rectangle's int32 winners are scratch
        winner = winner.astype(index_type) if winners else None
    else:
        out, winner, has_nan = result
    if has_nan:
        if padded is None:
            padded = pad(flat, row_window, col_window, fill)
        propagate_nan(padded, w, taps, row_window, col_window, kw, out, winner)
    return out.reshape(image.shape), None if winner is None else winner.reshape(image.shape)


def _compiled_taps(
    semiring, flat, w, support, row_window, col_window, fill, index_type, rounding=None, winners=True
):
    """Compiled tap loop as ``(out, winner, has_nan)``, or None (no kernel, no taps, or a full flat
    rectangle of more than ``_FLAT_RECT_TAPS`` taps, or of any size where the tap loop is not
    vectorised, which the van Herk kernel does faster). ``rounding`` (float32 images and weights
    holding half-precision values): every weighted sum rounded to that dtype before it compares.
    ``winners=False``: the values only (``winner`` is None).

    The work is cut into blocks (of whole images, or row bands of one image when there are few);
    each task pads its block into a per-thread buffer, small enough to stay in cache for the tap
    loop that follows, and reduces it: one C call runs them all on the task pool (thread_pool.h).
    """
    dtype = flat.dtype.type
    pooled = compiled.raw_function(_C_MORPHOLOGY_POOLED.get(dtype, ""))
    if rounding is not None and dtype is not np.float32:
        pooled = None
    taps, u, v, tap_index = _element_taps(support)
    if pooled is None or not taps:
        return None
    full = len(taps) == row_window.start.size * col_window.start.size
    vectorised = compiled.isa("morphology_c") in ("avx2", "avx512+avx2")
    if w is None and full and (len(taps) > _FLAT_RECT_TAPS or not vectorised):
        if compiled.raw_function(_C_RECT_POOLED.get(dtype, "")) is not None:
            return None
    n, H, W = flat.shape
    kh = row_window.start.size
    # The raw kernels take addresses: every array below is C-contiguous of the kernel's types.
    flat = np.ascontiguousarray(flat)
    tap_row = np.ascontiguousarray(row_window.start[u], dtype=np.int64)
    tap_col = np.ascontiguousarray(col_window.start[v], dtype=np.int64)
    tap_weight = None if w is None else np.ascontiguousarray(w[u, v], dtype=dtype)
    weight_nan = tap_weight is not None and _any_nan(tap_weight)
    row_line = np.ascontiguousarray(row_window.line, dtype=np.int64)
    col_line = np.ascontiguousarray(col_window.line, dtype=np.int64)
    out = np.empty((n, H, W), flat.dtype)
    winner = np.empty((n, H, W), index_type) if winners else None
    threads = get_num_threads() if out.size * len(taps) >= _PARALLEL_CANDIDATES else 1
    blocks = _block_table(n, H, W * len(taps), 4 * threads if threads > 1 else 1, _TASK_CANDIDATES)
    nan = ctypes.c_int(0)
    flat_at, row_at, col_at, tap_row_at, tap_col_at, weight_at, tap_index_at, out_at, winner_at, blocks_at = (
        _addresses(flat, row_line, col_line, tap_row, tap_col, tap_weight, tap_index, out, winner, blocks)
    )
    code = _ROUNDING_CODES[rounding] if rounding else 0
    status = pooled(
        flat_at, H, W, row_at, col_at, col_line.size, col_window.before, fill, kh, tap_row_at, tap_col_at,
        weight_at, tap_index_at, len(taps), int(semiring.maximises), code, out_at, winner_at,
        0 if winner is None else winner.itemsize, blocks_at, len(blocks), ctypes.byref(nan), threads,
    )  # fmt: skip
    _check(status, "morphology")
    return out, winner, weight_nan or bool(nan.value)


# Rows this long under a one-row element (1-D signals) are cut into column bands, or folded.
_LONG_ROW = LONG_ROW
_FEW_TAPS = 16  # flat one-row elements up to this size: the tap loop beats van Herk's copies
# Full flat rectangles of up to this many taps take the vectorised tap loop (a load and a compare per
# tap and vector, no sums), not van Herk's path (its padded copy, flips and some 8 compares a pixel):
# one thread on an AVX-512 Xeon, 3x3 to 9x9, 0.18-0.8x van Herk's time; with AVX2 alone 0.22-0.86x,
# and about even at 11x11 (docs/benchmarks.md, nineteenth session).
_FLAT_RECT_TAPS = 49
_BAND = 1 << 17  # most outputs per column band
_MIN_BAND = 2048  # fewest (a kernel call per band: Python overhead)


def _compiled_line_taps(semiring, flat, w, taps, col_window, fill, index_type, winners=True):
    """A one-row element on long rows as ``(out, winner)``, or None (no kernel, or a NaN to which
    the NaN rule must be applied: the folded path does that). ``winners=False``: ``winner`` is None.

    Each row is cut into column bands; a band whose reads stay inside the row is reduced straight
    from the image, with no padded copy: output ``j`` reads ``row[j + start[t] - before]`` there.
    Only the few outputs at the row's ends, which read the border, go through a padded piece.
    """
    dtype = flat.dtype.type
    taps_kernel = compiled.raw_function(_C_TAPS_STRIDED.get(dtype, ""))
    tap_index = np.array([v for _, v in taps], dtype=np.int32)  # one-row element: the tap is its column
    tap_weight = None if w is None else np.ascontiguousarray(w[0, tap_index], dtype=dtype)
    if taps_kernel is None or (tap_weight is not None and _any_nan(tap_weight)):
        return None
    n, H, W = flat.shape
    rows = np.ascontiguousarray(flat).reshape(n * H, W)
    reads = col_window.start[tap_index].astype(np.int64)  # the padded columns the taps read
    lo, hi = int(reads.min()), int(reads.max())
    tap_col, tap_row = np.ascontiguousarray(reads - lo), np.zeros(len(taps), np.int64)
    shift = lo - col_window.before  # output j's tap t reads row[j + shift + tap_col[t]]
    head = min(W, max(0, -shift))  # outputs [head, tail) read inside the row
    tail = max(head, min(W, W - shift - (hi - lo)))
    out = np.empty((n * H, W), flat.dtype)
    winner = np.empty((n * H, W), index_type) if winners else None
    fixed = (*_addresses(tap_row, tap_col, tap_weight, tap_index), len(taps), int(semiring.maximises))

    def reduce(source: np.ndarray, count: int, width: int, target: int, won: np.ndarray | None) -> None:
        # `count` rows of `source` (each read in full), `width` outputs each, packed at `target`
        pitch = source.shape[-1]
        source_at, won_at = _addresses(source, won)
        status = taps_kernel(source_at, count, 1, pitch, pitch, 1, width, width, *fixed, target, won_at, 1)
        _check(status, "morphology")

    for j0, j1 in ((0, head), (tail, W)):  # the ends, all rows at once
        if j1 > j0:
            line = col_window.line[j0 + lo : j1 + hi]
            piece = np.ascontiguousarray(np.take(rows, np.where(line < 0, 0, line), axis=1))
            piece[:, line < 0] = fill
            if _any_nan(piece):
                return None
            values = np.empty((n * H, j1 - j0), flat.dtype)
            taps_won = np.empty((n * H, j1 - j0), np.int32) if winners else None
            reduce(piece, n * H, j1 - j0, _address(values), taps_won)
            out[:, j0:j1] = values
            if winners:
                winner[:, j0:j1] = taps_won
    threads = get_num_threads() if out.size * len(taps) >= _PARALLEL_CANDIDATES else 1
    band = min(_BAND, max(_MIN_BAND, -(-(tail - head) * n * H // (4 * threads))))
    blocks = [(q, j0, min(j0 + band, tail)) for q in range(n * H) for j0 in range(head, tail, band)]
    nan_seen = [False] * len(blocks)

    def task(t: int) -> None:
        q, j0, j1 = blocks[t]
        source = rows[q, j0 + shift : j1 + shift + hi - lo]
        taps_won = scratch("winner", (j1 - j0,), np.int32) if winners else None
        reduce(source, 1, j1 - j0, _address(out[q, j0:]), taps_won)
        if winners:  # the indices fit index_type
            np.copyto(winner[q, j0:j1], taps_won, casting="unsafe")
        nan_seen[t] = _any_nan(source)

    parallel_tasks(len(blocks), task, threads)
    return None if any(nan_seen) else (out, winner)


def _element_taps(support: np.ndarray) -> tuple:
    """The taps of an element: its true entries ``(u, v)`` in row-major order, their rows ``u`` and
    columns ``v`` (int64) and flat indices ``u * kw + v`` (int32), read-only. Cached by the element's
    bits: a layer or a loop passes the same element every call, and building these took longer than
    a small image's kernel. Elements of more than ``_CACHED_ELEMENT_SIZE`` entries are not kept
    (their tables would hold megabytes; their kernels take far longer than building them)."""
    key = (support.shape, np.ascontiguousarray(support, dtype=bool).tobytes())
    return (_element_taps_of if support.size <= _CACHED_ELEMENT_SIZE else _element_taps_of.__wrapped__)(*key)


_CACHED_ELEMENT_SIZE = 1024


@functools.lru_cache(maxsize=256)
def _element_taps_of(shape: tuple[int, int], bits: bytes):
    u, v = np.nonzero(np.frombuffer(bits, dtype=bool).reshape(shape))
    taps = tuple(zip(u.tolist(), v.tolist(), strict=True))
    u, v = u.astype(np.int64), v.astype(np.int64)
    index = (u * shape[1] + v).astype(np.int32)
    for table in (u, v, index):
        table.flags.writeable = False
    return taps, u, v, index


@functools.lru_cache(maxsize=256)
def _block_table(n: int, H: int, cost_per_row: int, tasks: int, task_candidates: int) -> np.ndarray:
    """:func:`_task_blocks` as the kernels' (blocks, 4) int64 table, read-only; cached (a loop
    calls with the same shapes; callers pass ``_TASK_CANDIDATES`` as it is at the call)."""
    table = np.array(_task_blocks(n, H, cost_per_row, tasks, task_candidates), np.int64).reshape(-1, 4)
    table.flags.writeable = False
    return table


def _task_blocks(
    n: int, H: int, cost_per_row: int, tasks: int, task_candidates: int
) -> list[tuple[int, int, int, int]]:
    """About ``tasks`` blocks ``(b0, b1, i0, i1)`` (images ``b0:b1``, rows ``i0:i1`` of each) that
    cover ``n`` images of ``H`` rows: whole images when there are enough, else bands of rows. No
    block exceeds ``task_candidates`` candidates (``_TASK_CANDIDATES``: its padded copy stays
    cache-sized) unless one row does."""
    if n == 0 or H == 0:
        return []
    max_rows = max(1, task_candidates // max(cost_per_row, 1))
    if H <= max_rows and n >= tasks:
        per = max(1, min(-(-n // tasks), max_rows // H))
        return [(b, min(b + per, n), 0, H) for b in range(0, n, per)]
    bands = min(H, max(-(-tasks // n), -(-H // max_rows)))
    edges = np.linspace(0, H, bands + 1).astype(int)
    return [(b, b + 1, int(i0), int(i1)) for b in range(n) for i0, i1 in itertools.pairwise(edges)]


def parallel_tasks(count: int, run: Callable[[int], None], threads: int) -> None:
    """Run ``run(0) ... run(count - 1)`` on up to ``threads`` threads (``run`` must release the GIL
    for its heavy part, as NumPy and the ctypes kernels do).

    The calling thread works too, and tasks are claimed one at a time, so the call returns as soon
    as every task is done: a helper thread that starts late (its core busy with another process)
    finds nothing left, instead of holding everyone at a barrier for a scheduler time slice, which
    is what a fixed split across an OpenMP team costs on a loaded machine.
    """
    if threads <= 1 or count <= 1:
        for t in range(count):
            run(t)
        return
    claims = itertools.count()  # next() on it is atomic under the GIL
    left = [count]
    lock, finished = threading.Lock(), threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        while (t := next(claims)) < count:
            try:
                run(t)
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    finished.set()

    helpers = min(threads, count) - 1
    pool = _pool(helpers)
    for _ in range(helpers):
        try:
            pool.submit(work)
        except RuntimeError:  # the interpreter is shutting down: this thread does the rest itself
            break
    work()
    # Every task has finished (or failed) before this call returns or raises, so no helper is still
    # writing into an output the caller may free.
    finished.wait()
    if errors:
        raise errors[0]


def _any_nan(x: np.ndarray) -> bool:
    """NaN anywhere in ``x``: ``max`` propagates NaN, needs no boolean temporary and is vectorised."""
    return x.size > 0 and bool(np.isnan(np.maximum.reduce(x, axis=None)))


def pad(flat: np.ndarray, row_window, col_window, fill: float) -> np.ndarray:
    """The images extended by the line maps of the two windows; index -1 reads ``fill``.

    One copy of the image into the middle, then only the border rows and columns are gathered
    (they are few), the columns last so that the corners come out right.
    """
    n, H, W = flat.shape
    top, left = row_window.before, col_window.before
    padded = scratch("padded", (n, row_window.line.size, col_window.line.size), flat.dtype)
    padded[:, top : top + H, left : left + W] = flat
    rows = np.r_[0:top, top + H : padded.shape[1]]
    source = row_window.line[rows]
    padded[:, rows[source >= 0], left : left + W] = flat[:, source[source >= 0], :]
    padded[:, rows[source < 0], left : left + W] = fill
    cols = np.r_[0:left, left + W : padded.shape[2]]
    source = col_window.line[cols]
    padded[:, :, cols[source >= 0]] = padded[:, :, left + source[source >= 0]]
    padded[:, :, cols[source < 0]] = fill
    return padded


def _compiled_rect(semiring, padded, w, support, row_window, col_window, H, W, has_nan):
    """The van Herk kernel's result for a full flat rectangle as (out, int32 winner), or None."""
    n, Hp, Wp = padded.shape
    kh, kw = support.shape
    rect = compiled.raw_function(_C_RECT_POOLED.get(padded.dtype.type, ""))
    if rect is None or w is not None or not support.all() or has_nan:
        return None
    # The rectangle kernel ranks taps by padded position; a dilation's window runs backwards
    # (start[u] = kh - 1 - u), so flip those axes, reduce, and flip the result back.
    flip = tuple(
        axis
        for axis, window in ((1, row_window), (2, col_window))
        if window.start.size > 1 and window.start[0] > window.start[-1]
    )
    source = padded
    if flip:
        source = scratch("flipped", padded.shape, padded.dtype)
        np.copyto(source, np.flip(padded, axis=flip))
    out = scratch("rect", (n, H, W), padded.dtype) if flip else np.empty((n, H, W), padded.dtype)
    winner = scratch("winner", (n, H, W), np.int32)
    maximise = int(semiring.maximises)
    # Blocks of images, or bands of rows (a band of output rows reads kh - 1 more padded rows, which
    # is a sub-image the kernel takes as it is), claimed by the threads one at a time (the C pool).
    threads = get_num_threads() if out.size * _RECT_COST >= _PARALLEL_CANDIDATES else 1
    blocks = _block_table(n, H, W * _RECT_COST, 4 * threads if threads > 1 else 1, _TASK_CANDIDATES)
    source = np.ascontiguousarray(source)
    source_at, out_at, winner_at, blocks_at = _addresses(source, out, winner, blocks)
    status = rect(source_at, Hp, Wp, kh, kw, maximise, out_at, winner_at, blocks_at, len(blocks), threads)
    _check(status, "morphology")
    if flip:
        # .copy(), not ascontiguousarray: a flip of length-1 axes is a contiguous view of scratch
        out, winner = np.flip(out, flip).copy(), np.flip(winner, flip)
    mark_no_winner(out, winner, semiring)
    return out, winner


def numpy_taps(semiring, padded, w, taps, kw, row_window, col_window, H, W, rounding=None):
    """NumPy path: one pass per tap, each reading the flattened padded image as one contiguous
    run of ``H`` padded rows (the ``kw - 1`` extra columns per row are computed and dropped), so
    every pass is a long unit-stride loop. Strict comparisons keep the earliest tap on ties.

    ``rounding``, if given, rounds each tap's sums ``x + w`` in place before they are compared (the
    torch ops' half-precision morphology, computed in float32); flat elements have no sums.
    """
    n, Hp, Wp = padded.shape
    fill_row = np.full((n, 1, Wp), semiring.zero, padded.dtype)  # keeps the last runs inside
    runs = np.concatenate([padded, fill_row], axis=1).reshape(n, -1)
    out = np.full((n, H * Wp), semiring.zero, padded.dtype)
    winner = np.full((n, H * Wp), -1, np.int32)
    scratch = np.empty_like(out)
    better = np.empty(out.shape, bool)
    beats = np.greater if semiring.maximises else np.less  # False for NaN: handled by the caller
    for u, v in taps:
        r, c = row_window.start[u], col_window.start[v]
        view = runs[:, r * Wp + c : r * Wp + c + H * Wp]
        # No absorbing repair needed here: an inf - inf NaN never beats (comparisons with NaN are
        # false) and is not a NaN operand, so it acts as the tropical zero it stands for.
        with np.errstate(invalid="ignore"):
            candidate = view if w is None else np.add(view, w[u, v], out=scratch)
        if rounding is not None and w is not None:
            rounding(candidate)
        beats(candidate, out, out=better)
        np.copyto(out, candidate, where=better)  # not fmax: -0.0 vs 0.0 keeps the earlier tap
        np.copyto(winner, u * kw + v, where=better)
    out = np.ascontiguousarray(out.reshape(n, H, Wp)[:, :, :W])
    winner = np.ascontiguousarray(winner.reshape(n, H, Wp)[:, :, :W])
    return out, winner


def propagate_nan(padded, w, taps, row_window, col_window, kw, out, winner) -> None:
    """NaN dominates: an output with a NaN operand among its candidates is NaN, won by the first
    (``winner`` None: the values only)."""
    H, W = out.shape[-2:]
    decided = np.zeros(out.shape, bool)
    for u, v in taps:
        r, c = row_window.start[u], col_window.start[v]
        is_nan = np.isnan(padded[:, r : r + H, c : c + W])
        if w is not None and np.isnan(w[u, v]):
            is_nan[...] = True
        first = is_nan & ~decided
        out[first] = np.nan
        if winner is not None:
            winner[first] = u * kw + v
        decided |= is_nan


@register("numpy", "morphology_vjp")
def morphology_vjp(xp, grad, indices, image_shape, row_window, col_window, needs=(True, True)):
    rows, cols = row_window.indices, col_window.indices
    kh, kw = rows.shape[1], cols.shape[1]
    H, W = image_shape[-2:]
    scatter = _compiled_scatter("morphology", grad, indices)
    if scatter is not None:  # the image gradient comes back in grad's dtype, each sum rounded once
        grad_image = np.empty(tuple(image_shape), grad.dtype) if needs[0] else None
        grad_weights = np.zeros((kh, kw)) if needs[1] else None
        n = math.prod(image_shape[:-2])
        rows, cols = np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(cols, np.int64)
        # held here: the call takes their addresses; int8 and int16 winners as they are (the tasks
        # widen them image by image, in cache)
        g, k = _contiguous(grad), _scatter_winners(indices, narrow=True)
        threads = get_num_threads() if grad.size * 4 >= _PARALLEL_CANDIDATES else 1
        addresses = _addresses(g, k, rows, cols, grad_image, grad_weights)
        g_at, k_at, rows_at, cols_at, image_at, weights_at = addresses
        status = scatter(
            g_at, k_at, k.itemsize, n, H, W, rows_at, kh, cols_at, kw, image_at, weights_at, threads
        )
        _check_scatter(status, indices, kh * kw)
        return grad_image, _cast(grad_weights, grad.dtype)
    require_winners(np, "indices", indices, kh * kw)
    t = indices.reshape(math.prod(image_shape[:-2]), H, W).astype(np.int64)
    n = t.shape[0]
    u, v = np.divmod(np.maximum(t, 0), kw)
    i_idx, j_idx = np.indices((H, W), sparse=True)
    src_row, src_col = rows[i_idx, u], cols[j_idx, v]
    g = grad.reshape(n, H, W)
    has_winner = t >= 0
    grad_image = grad_weights = None
    if needs[0]:
        inside = has_winner & (src_row >= 0) & (src_col >= 0)
        image_slot = (np.arange(n)[:, None, None] * H + src_row) * W + src_col
        grad_image = _bincount(image_slot[inside], g[inside], n * H * W, grad.dtype).reshape(image_shape)
    if needs[1]:
        grad_weights = _bincount(t[has_winner], g[has_winner], kh * kw, grad.dtype).reshape(kh, kw)
    return grad_image, grad_weights


@register("numpy", "conv2d")
def conv2d(xp, semiring, x, w, geometry, rounding=None, winners=True):
    """The compiled tap loop for stride 1 (:func:`_conv2d_taps`; ``winners=False``: the values only,
    None for the winners), else im2col blocks into :func:`product` (with the winners either way)."""
    if _float16_through_float32(rounding, x, w):
        wide = float16_to_float32(x), float16_to_float32(w)
        y, winner = conv2d(xp, semiring, *wide, geometry, "float16", winners)
        return float32_to_float16(y), winner
    if rounding is not None and not winners and x.dtype == np.float32 == w.dtype:
        return _values_rounded_once(conv2d(xp, semiring, x, w, geometry, None, False)[0], rounding)
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    G, (sh, sw), (ph, pw) = geometry.groups, geometry.stride, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    index_type = _index_type(C_group * kh * kw)
    if math.prod(geometry.out_shape) == 0 or C_group == 0:  # no output, or no candidate: all zero
        return np.full(geometry.out_shape, semiring.zero, x.dtype), np.full(
            geometry.out_shape, -1, index_type
        )
    direct = _conv2d_taps(semiring, x, w, geometry, rounding, winners)
    if direct is not None:
        return direct[0], None if direct[1] is None else direct[1].astype(index_type, copy=False)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=semiring.zero)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw][:, :, :H_out, :W_out]  # (B, C_in, H_out, W_out, kh, kw)
    y = np.empty(geometry.out_shape, x.dtype)
    winner = np.empty(geometry.out_shape, index_type)
    # im2col in bounded blocks: several whole images per block when they fit, else row blocks of one
    # image; a block is (images * rows * W_out, C_group * kh * kw) in (c, u, v) order.
    per_row = W_out * C_group * kh * kw
    n_rows = max(1, min(H_out, _BLOCK_ELEMENTS // per_row))
    n_images = max(1, _BLOCK_ELEMENTS // (per_row * H_out)) if n_rows == H_out else 1
    o_per_group = C_out // G
    for g in range(G):
        w_g = np.ascontiguousarray(w[g * o_per_group : (g + 1) * o_per_group].reshape(o_per_group, -1))
        channels = slice(g * C_group, (g + 1) * C_group)
        outputs = slice(g * o_per_group, (g + 1) * o_per_group)
        for b0 in range(0, B, n_images):
            b = slice(b0, b0 + n_images)
            for r0 in range(0, H_out, n_rows):
                r = slice(r0, r0 + n_rows)
                block = windows[b, channels, r].transpose(0, 2, 3, 1, 4, 5).reshape(-1, w_g.shape[1])
                values, k = product(semiring, block, w_g.T, index_type, rounding)
                shape = (-1, min(n_rows, H_out - r0), W_out, o_per_group)
                y[b, outputs, r] = values.reshape(shape).transpose(0, 3, 1, 2)
                winner[b, outputs, r] = k.reshape(shape).transpose(0, 3, 1, 2)
    return y, winner


def _conv2d_taps(semiring, x: np.ndarray, w: np.ndarray, geometry, rounding, winners=True):
    """A stride-1 convolution on the compiled morphology tap loop, as ``(y, winner)``, the winners in
    the smallest index type of the taps (``winners`` False: ``(y, None)``, the values only); None where
    it does not apply (another stride, no compiled kernel, half-precision rounding on a CPU without
    AVX2 + F16C, a NaN).

    The ``C_group`` padded channels of a group, stacked, are one tall image per batch entry, and the
    taps are the weight's entries in ``(c, u, v)`` order: tap ``(c, u, v)`` reads the stacked image at
    row ``i + c * Hp + u``, column ``j + v``. The tap loop takes candidates in that order and keeps
    the first strict maximum, as the product kernel does over an im2col row, so values and winners
    are those of the im2col path bit for bit (a NaN operand, whose rule is the product's, goes to
    that path). Without the im2col copy, and vectorised along the output rows, it is several times
    faster for the few-channel and depthwise convolutions of morphological networks.
    """
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    G, (ph, pw) = geometry.groups, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    pooled = compiled.raw_function(_C_CONV_POOLED.get(x.dtype.type, ""))
    if rounding is not None and not (x.dtype == np.float32 and _compiled_rounding()):
        pooled = None
    code = _ROUNDING_CODES[rounding] if rounding is not None else 0
    n_taps = C_group * kh * kw
    if geometry.stride != (1, 1) or pooled is None or w.dtype != x.dtype or n_taps >= 2**31 or _any_nan(w):
        return None
    Hp, Wp = H + 2 * ph, W + 2 * pw
    # (B, C_in, Hp, Wp): group g of batch entry b is the tall image (C_group * Hp, Wp) at channel
    # g * C_group, and the next batch entry's is C_in * Hp * Wp elements further.
    # C order (whatever the input's), which the addresses below assume.
    padded = _padded_images(x, ph, pw, semiring.zero)
    if padded is None:  # a NaN in x
        return None
    tap_row, tap_col, tap_index = _conv_taps_table(C_group, kh, kw, Hp)
    weights = np.ascontiguousarray(w.reshape(C_out, n_taps))
    y = np.empty(geometry.out_shape, x.dtype)
    # the winners in the index type: the tasks narrow the tap loop's int32 image by image
    winner = np.empty(geometry.out_shape, _index_type(n_taps)) if winners else None
    per_group = C_out // G
    # Blocks of up to 4 output channels of one group: the kernel reads each image vector once for all.
    blocks = [
        (o, min(4, (o // per_group + 1) * per_group - o))
        for g in range(G)
        for o in range(g * per_group, (g + 1) * per_group, 4)
    ]
    threads = get_num_threads() if y.size * n_taps >= _PARALLEL_CANDIDATES else 1
    # Tasks: (channel block, batch chunk), about 4 per thread.
    chunks = max(1, min(B, -(-4 * threads // len(blocks)))) if threads > 1 else 1
    edges = [B * i // chunks for i in range(chunks + 1)]
    tasks = [(o, oc, b0, b1) for o, oc in blocks for b0, b1 in itertools.pairwise(edges) if b1 > b0]
    table = np.array(tasks, dtype=np.int64)
    padded_at, tap_row_at, tap_col_at, weights_at, tap_index_at, y_at, winner_at, table_at = _addresses(
        padded, tap_row, tap_col, weights, tap_index, y, winner, table
    )
    status = pooled(
        padded_at, C_in, C_group, Hp, Wp, H_out, W_out, C_out, per_group, tap_row_at, tap_col_at, weights_at,
        tap_index_at, n_taps, int(semiring.maximises), code, y_at, winner_at,
        0 if winner is None else winner.itemsize, table_at, len(tasks), threads,
    )  # fmt: skip
    _check(status, "conv2d")
    return y, winner


@functools.lru_cache(maxsize=64)
def _conv_taps_table(C_group: int, kh: int, kw: int, Hp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The convolution's taps in ``(c, u, v)`` order: the stacked image's row ``c * Hp + u`` and
    column ``v`` that tap ``t = (c * kh + u) * kw + v`` reads, and ``t`` itself (read-only, shared
    by the calls of a layer: building them took more than the kernel of a small convolution)."""
    t = np.arange(C_group * kh * kw, dtype=np.int64)
    tables = ((t // (kh * kw)) * Hp + t % (kh * kw) // kw, t % kw, t.astype(np.int32))
    for table in tables:
        table.flags.writeable = False
    return tables


def _padded_images(x: np.ndarray, ph: int, pw: int, fill: float) -> np.ndarray | None:
    """``x`` (B, C, H, W) padded by ``ph`` rows and ``pw`` columns of ``fill``, C-ordered: ``x`` itself
    when it needs neither, else a copy in a :func:`scratch` buffer (the kernels read it; fresh memory
    would cost page faults every call), framed in one compiled pass (NumPy's slice assignments of
    the narrow borders cost more than the copy). None if ``x`` holds a NaN."""
    B, C, H, W = x.shape
    if ph == pw == 0 and x.flags.c_contiguous:
        return None if _any_nan(x) else x
    padded = scratch("conv_padded", (B, C, H + 2 * ph, W + 2 * pw), x.dtype)
    pad = compiled.raw_function(_C_PAD[x.dtype.type])
    row_line, col_line = _frame_lines(H, ph), _frame_lines(W, pw)
    nan = ctypes.c_int(0)
    source = np.ascontiguousarray(x)
    source_at, row_at, col_at, padded_at = _addresses(source, row_line, col_line, padded)
    status = pad(
        source_at, B * C, H, W, row_at, row_line.size, col_at, col_line.size, pw, fill, padded_at,
        ctypes.byref(nan),
    )  # fmt: skip
    _check(status, "padding")
    return None if nan.value else padded


@functools.lru_cache(maxsize=64)
def _frame_lines(n: int, border: int) -> np.ndarray:
    """The line map of an axis of length ``n`` framed by ``border`` positions of fill on each side
    (-1: the fill, as core's constant border; read-only, shared by the calls of a layer)."""
    line = border_index(n, np.arange(-border, n + border), "constant")
    line.flags.writeable = False
    return line


@register("numpy", "conv2d_vjp")
def conv2d_vjp(xp, grad, indices, geometry, needs=(True, True)):
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    scatter = _compiled_scatter("conv2d", grad, indices)
    if scatter is not None:  # grad_x comes back in grad's dtype, each sum rounded once
        grad_x = np.empty(tuple(geometry.x_shape), grad.dtype) if needs[0] else None
        grad_w = accumulator("vjp_w", tuple(geometry.w_shape), grad.size) if needs[1] else None
        sizes = (B, C_out, H_out, W_out, C_in, H, W, C_group, kh, kw, sh, sw, ph, pw, geometry.groups)
        # int8 / int16 winners as they are (the tasks widen an entry's at a time); held here: the call
        # takes their addresses
        g, k = _contiguous(grad), _scatter_winners(indices, narrow=True)
        threads = get_num_threads() if grad.size * 4 >= _PARALLEL_CANDIDATES else 1
        g_at, k_at = _addresses(g, k)
        status = scatter(g_at, k_at, k.itemsize, *sizes, *_addresses(grad_x, grad_w), threads)
        _check_scatter(status, indices, C_group * kh * kw)
        return grad_x, _cast(grad_w, grad.dtype)
    require_winners(np, "indices", indices, C_group * kh * kw)
    t = indices.astype(np.int64)
    has_winner = t >= 0
    c, uv = np.divmod(np.maximum(t, 0), kh * kw)
    u, v = np.divmod(uv, kw)
    b_idx, o_idx, i_idx, j_idx = np.indices(geometry.out_shape, sparse=True)
    channel = (o_idx // (C_out // geometry.groups)) * C_group + c
    row, col = i_idx * sh + u - ph, j_idx * sw + v - pw
    inside = has_winner & (row >= 0) & (row < H) & (col >= 0) & (col < W)
    grad_x = grad_w = None
    if needs[0]:
        x_slot = ((b_idx * C_in + channel) * H + row) * W + col
        grad_x = _bincount(x_slot[inside], grad[inside], B * C_in * H * W, grad.dtype)
        grad_x = grad_x.reshape(geometry.x_shape)
    if needs[1]:
        w_slot = o_idx * (C_group * kh * kw) + t
        grad_w = _bincount(w_slot[has_winner], grad[has_winner], C_out * C_group * kh * kw, grad.dtype)
        grad_w = grad_w.reshape(geometry.w_shape)
    return grad_x, grad_w


@register("numpy", "maxout")
def maxout(xp, grouped):
    """The max over the last axis with NumPy's argmax rule (first NaN, else first maximum; -1 where
    the max is -inf), in one compiled pass where there is one (NumPy's reductions over a few-wide
    last axis cost tens of nanoseconds per group)."""
    pieces = grouped.shape[-1]
    values = np.empty(grouped.shape[:-1], grouped.dtype)
    kernel = compiled.raw_function(_C_MAXOUT.get(grouped.dtype.type, ""))
    if kernel is not None and 0 < pieces < 2**31:
        source = np.ascontiguousarray(grouped)
        won = scratch("maxout_winners", values.shape, np.int32)  # cast to the index dtype below
        source_at, values_at, won_at = _addresses(source, values, won)
        _check(kernel(source_at, values.size, pieces, values_at, won_at), "maxout")
        return values, won.astype(_index_type(pieces))
    winner = np.empty(grouped.shape[:-1], _index_type(pieces))
    select_winner(grouped, MAX_PLUS, values, winner)
    mark_no_winner(values, winner, MAX_PLUS)
    return values, winner


@register("numpy", "maxout_vjp")
def maxout_vjp(xp, grad, indices, pieces):
    """Each output's gradient at its winning piece, (..., m) -> (..., m, pieces), zero elsewhere."""
    from tropic.core.maxout import maxout_vjp_reference

    kernel = compiled.raw_function(_C_MAXOUT_VJP.get(grad.dtype.type, ""))
    if kernel is None:
        return maxout_vjp_reference(np, grad, indices, pieces)
    spread = np.zeros(grad.shape + (pieces,), grad.dtype)
    g, k = _contiguous(grad), _scatter_winners(indices)  # held here: the call takes their addresses
    g_at, k_at, spread_at = _addresses(g, k, spread)
    status = kernel(g_at, k_at, grad.size, pieces, spread_at)
    _check_scatter(status, indices, pieces)
    return spread


def _check_scatter(status: int, indices: np.ndarray, n_candidates: int) -> None:
    """Status 3 of a compiled backward: a winner out of range, reported as core reports it."""
    if status == 3:
        require_winners(np, "indices", indices, n_candidates)
    _check(status, "gradient")


def _compiled_scatter(operator: str, grad: np.ndarray, indices: np.ndarray):
    """The compiled backward of ``operator`` for this dtype (indices that fit int32), or None; it takes
    addresses (:func:`_addresses`), None for a gradient not needed."""
    if indices.dtype.itemsize > 4 or indices.dtype.kind != "i":
        return None
    return compiled.raw_function(_C_VJP[operator].get(grad.dtype.type, ""))


def _cast(x: np.ndarray | None, dtype) -> np.ndarray | None:
    return None if x is None else x.astype(dtype)  # a copy: the accumulators are scratch


def _addresses(*arrays: np.ndarray | None) -> tuple[int | None, ...]:
    """The addresses of the arrays' first elements (``a.ctypes.data``) for the raw C functions
    (None: a NULL pointer); read through the compiled module's buffer-protocol helper, half a
    microsecond each, where ``a.ctypes`` builds a helper object per read (5 us on this project's
    VM, and a morphology's forward and backward pass some fifteen addresses)."""
    read = compiled.entry("scatter_c", "addresses")
    if read is not None:
        return read(*arrays)
    return tuple(None if x is None else x.ctypes.data for x in arrays)


def _address(array: np.ndarray | None) -> int | None:
    return _addresses(array)[0]


def _contiguous(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x)


def _scatter_winners(indices: np.ndarray, narrow: bool = False) -> np.ndarray:
    """The winners as contiguous int32 for the scatter kernels: as they are when they already are
    (``narrow``: also int8 and int16, for a kernel that widens them itself), else converted into a
    :func:`scratch` buffer (the kernels only read it; a fresh array of a large output's size would
    be paid in page faults every backward)."""
    accepted = (np.int8, np.int16, np.int32) if narrow else (np.int32,)
    if indices.dtype.type in accepted and indices.flags.c_contiguous:
        return indices
    converted = scratch("winners_int32", indices.shape, np.int32)
    if indices.dtype.itemsize >= 4:
        # 64-bit (or uint32) winners beyond int32 must not wrap into valid ones: clipped, they stay out
        # of range, the kernel stops with status 3 and _check_scatter names the caller's values
        low = -2 if indices.dtype.kind == "i" else 0
        indices = np.clip(indices, low, 2**31 - 1)
    np.copyto(converted, indices, casting="unsafe")
    return converted


def _bincount(slots: np.ndarray, weights: np.ndarray, length: int, dtype) -> np.ndarray:
    """Deterministic scatter-add (accumulated in float64, then cast to ``dtype``)."""
    return np.bincount(slots.ravel(), weights=weights.ravel(), minlength=length).astype(dtype, copy=False)
