"""CuPy kernels for the tropical operators, registered with ``tropic.core.dispatch``.

Each operator gets the already checked and normalised arguments of the core reference it replaces
and returns bitwise the same values and winners (DESIGN.md; the CUDA sources in ``cuda/`` state the
rules they follow). The kernels write int32 winners, narrowed here to core's ``index_dtype``; an
operator with more candidates than int32 holds runs the core reference instead.

Gradients are deterministic: no atomics, every sum runs in float64 in an order fixed by the shapes,
so a run repeats bitwise. The image gradients gather in increasing output order, as the NumPy backend
does, and agree with it bitwise. The product gradients are keyed sums along the rows (columns) of the
output gradient, each line cut into runs of consecutive positions (``cuda/matmul_vjp.cu``,
``layout.vjp_chunking``): O(output) work, and NumPy's flat order wherever a line is one run; runs are
added in a fixed order, equal to NumPy's when the float64 sums are exact (float32 and half-precision
gradients of similar magnitudes) and within float64 rounding before the cast otherwise. The weight
gradients of morphology and conv2d are chunked sums in a fixed tree order (``cuda/sums.cu``), agreeing
with NumPy's likewise. Broadcast batch dimensions of a product's gradient are summed afterwards with
``sum_to_shape``, in float64 before the one rounding to the gradient's dtype, as in NumPy.
"""

from __future__ import annotations

import math

import cupy
import numpy as np

from tropic.core._array_api import index_dtype, sum_to_shape
from tropic.core.checks import require_no_rounding, require_winners
from tropic.core.dispatch import register
from tropic.core.morphology import LONG_ROW, fold_long_rows

from . import layout, module

# The tiled product kernel (shared-memory and register tiles); False: the one-thread-per-output
# reference kernel, which the GPU tests compare it with bitwise.
TILED = True
# The tiled morphology kernel (the tile and its halo staged in shared memory) where the element fits
# (layout.morphology_tiled_fits); False: the one-thread-per-output kernel, for the same comparison.
TILED_MORPHOLOGY = True
# The tiled conv2d kernel (the tiled product's block tile over the implicit unfold of each group) where
# its int32 arithmetic fits (layout.conv_tiled_fits); False: the one-thread-per-output kernel, for the
# same comparison.
TILED_CONV = True


def _fits_int32(*sizes: int) -> bool:
    return all(s <= layout.INT32_MAX for s in sizes)


def _launch(name: str, dtype, total: int, args: tuple) -> None:
    if total <= 0:
        return
    grid, block = layout.launch_size(total)
    module.get_kernel(name, dtype)(grid, block, args)


def _compute_scalar(dtype, value: float):
    """``value`` as the kernels' compute type (double for float64, float otherwise)."""
    return np.float64(value) if np.dtype(dtype) == np.float64 else np.float32(value)


def _winner_out(winner, n_candidates: int, xp):
    return winner.astype(index_dtype(xp, n_candidates), copy=False)


def _int32_indices(xp, indices, n_candidates: int):
    """The winners as contiguous int32, after checking they name candidates (or -1): the kernels
    index gradient slots with them. The check costs a synchronisation; a wrong slot would corrupt
    device memory."""
    require_winners(xp, "indices", indices, n_candidates)
    return cupy.ascontiguousarray(indices, dtype=cupy.int32)


def _upload(dtype, *parts: np.ndarray) -> tuple:
    """The host integer arrays ``parts`` as 1-D device arrays of ``dtype``, in one host-to-device copy
    (each copy is a round trip of its own; these small tables are made per call)."""
    table = cupy.asarray(np.concatenate([np.ravel(p) for p in parts]).astype(dtype, copy=False))
    ends = np.cumsum([p.size for p in parts]).tolist()
    return tuple(table[end - p.size : end] for p, end in zip(parts, ends, strict=True))


@register("cupy", "matmul")
def matmul(xp, semiring, a, b, bias=None, rounding=None, winners=True):
    # The winners are computed whether or not `winners` asks for them (one launch writes both); the
    # bias is core's rule on the product's result.
    require_no_rounding(rounding)
    c, winner = _product(xp, semiring, a, b)
    if bias is None:
        return c, winner
    from tropic.core.matmul import apply_bias

    return apply_bias(xp, semiring.maximises, bias, c, winner, a.shape[-1])


def _product(xp, semiring, a, b):
    *_, M, K = a.shape
    N = b.shape[-1]
    if index_dtype(xp, K) == xp.int64 or not _fits_int32(M, N):
        from tropic.core.matmul import matmul_reference

        return matmul_reference(xp, semiring, a, b)
    batch = tuple(np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2])))
    if b.ndim == 2 and a.ndim > 2:  # the layer case x @ W: fold a's batch into its rows
        c, winner = _product(xp, semiring, a.reshape(math.prod(a.shape[:-1]), K), b)
        return c.reshape(batch + (M, N)), winner.reshape(batch + (M, N))
    a_c, b_c = cupy.ascontiguousarray(a), cupy.ascontiguousarray(b)
    n_batch = math.prod(batch)
    a_off, b_off = _upload(
        np.int64,
        layout.batch_offsets(tuple(a.shape[:-2]), batch, M * K),
        layout.batch_offsets(tuple(b.shape[:-2]), batch, K * N),
    )
    c = cupy.empty((n_batch, M, N), a.dtype)
    winner = cupy.empty((n_batch, M, N), cupy.int32)
    maximise = np.int32(semiring.maximises)
    if n_batch * M * N:
        if TILED and layout.tiled_fits(M):
            kernel = module.get_kernel("tropic_matmul_tiled", a.dtype)
            for p0 in range(0, n_batch, layout.GRID_YZ):
                grid = layout.tile_grid(M, N, n_batch - p0)
                args = (a_c, b_c, a_off[p0:], b_off[p0:], c[p0:], winner[p0:])
                kernel(grid, (layout.TILE_THREADS,), args + (np.int32(M), np.int32(K), np.int32(N), maximise))
        else:
            args = (a_c, b_c, a_off, b_off, c, winner, np.int64(n_batch), np.int32(M), np.int32(K))
            _launch("tropic_matmul", a.dtype, n_batch * M * N, args + (np.int32(N), maximise))
    shape = batch + (M, N)
    return c.reshape(shape), _winner_out(winner, K, xp).reshape(shape)


@register("cupy", "matmul_vjp")
def matmul_vjp(
    xp, grad, indices, a_shape, b_shape, bias_shape=None, needs=(True, True, True), transposed_b_grad=False
):
    # transposed_b_grad is a layout hint of the CPU engine's: ignored here (the values are the same).
    grad_bias = None
    if bias_shape is not None:  # core's rule: the bias's winners give its gradient, then drop out
        from tropic.core.matmul import bias_vjp

        grad_bias, indices = bias_vjp(xp, grad, indices, a_shape[-1], bias_shape, needs[2])
    return (*_product_vjp(xp, grad, indices, a_shape, b_shape, needs[:2]), grad_bias)


def _product_vjp(xp, grad, indices, a_shape, b_shape, needs):
    *batch, M, N = grad.shape
    K = a_shape[-1]
    batch = tuple(batch)
    n_batch = math.prod(batch)
    g, winner = cupy.ascontiguousarray(grad), _int32_indices(xp, indices, K)
    if tuple(a_shape) != batch + (M, K) or tuple(b_shape) != batch + (K, N):
        # Broadcast batches are summed in float64 too, before the one rounding (as the NumPy backend).
        g = g.astype(cupy.float64, copy=False)
    # dL/da sums along the rows of g (lines (p, i), positions j), dL/db along its columns.
    grad_a = grad_b = None
    if needs[0]:
        grad_a = _line_sums(g, winner, n_batch, M, N, K, rows=True).reshape(batch + (M, K))
        grad_a = sum_to_shape(xp, grad_a, tuple(a_shape)).astype(grad.dtype, copy=False)
    if needs[1]:
        grad_b = _line_sums(g, winner, n_batch, M, N, K, rows=False).reshape(batch + (K, N))
        grad_b = sum_to_shape(xp, grad_b, tuple(b_shape)).astype(grad.dtype, copy=False)
    return grad_a, grad_b


def _line_sums(g, winner, n_batch: int, M: int, N: int, K: int, rows: bool):
    """``out[p, i, k] = sum_j g[p, i, j] [winner = k]`` (``rows``) or ``out[p, k, j] = sum_i ...``,
    flat, by the keyed line sums of ``cuda/matmul_vjp.cu``."""
    per_batch, positions = (M, N) if rows else (N, M)
    line_step, position_step = (N, 1) if rows else (1, N)
    out_line_step, key_step = (K, 1) if rows else (1, N)
    lines = n_batch * per_batch
    out = cupy.zeros(n_batch * per_batch * K, g.dtype)
    if lines * K == 0 or positions == 0:
        return out
    chunks, chunk_size = layout.vjp_chunking(lines, positions, K)
    partial = cupy.zeros(chunks * lines * K, cupy.float64)
    i32 = np.int32
    args = (g, winner, partial, np.int64(lines), i32(per_batch), np.int64(M * N), i32(line_step))
    args += (i32(position_step), i32(positions), i32(K), i32(chunks), i32(chunk_size))
    _launch("tropic_matmul_vjp_scatter", g.dtype, lines * chunks, args)
    args = (partial, out, np.int64(lines), i32(per_batch), i32(out_line_step), i32(key_step), i32(K))
    _launch("tropic_matmul_vjp_finish", g.dtype, lines * K, args + (i32(chunks),))
    return out


@register("cupy", "morphology")
def morphology(
    xp, semiring, image, weights, support, row_window, col_window, fill, rounding=None, winners=True
):
    # The winners are computed whether or not `winners` asks for them (the same launch writes both).
    require_no_rounding(rounding)
    kh, kw = support.shape
    H, W = image.shape[-2:]
    if kh == 1 and W >= LONG_ROW:  # 1-D signals: one row would leave the grid's other dimensions idle
        element = (weights, support, col_window)
        return fold_long_rows(xp, morphology, semiring, image, *element, fill, rounding, True)
    if index_dtype(xp, kh * kw) == xp.int64:
        from tropic.core.morphology import morphology_reference

        return morphology_reference(xp, semiring, image, weights, support, row_window, col_window, fill)
    n = math.prod(image.shape[:-2])
    flat = cupy.ascontiguousarray(image)
    u, v = np.nonzero(support)  # row-major: increasing flat index u * kw + v
    lines_and_taps = (row_window.line, col_window.line, row_window.start[u], col_window.start[v], u * kw + v)
    tables = _upload(np.int32, *lines_and_taps)
    lines, taps = tables[:2], tables[2:]
    if weights is None:
        tap_weight, has_weight = cupy.empty(1, image.dtype), 0
    else:  # gathered by the flat tap indices
        tap_weight, has_weight = cupy.ascontiguousarray(weights.reshape(-1)[taps[2]]), 1
    out = cupy.empty(image.shape, image.dtype)
    winner = cupy.empty(image.shape, cupy.int32)
    element = (tap_weight, np.int32(u.size), np.int32(has_weight))
    rule = (_compute_scalar(image.dtype, fill), np.int32(semiring.maximises))
    # The tile's halo holds k - 1 rows and columns: only for windows whose taps read within them
    # (not the flattened planes or folded signals of N-D morphology, whose taps are offsets).
    compact = int(row_window.start.max()) < kh and int(col_window.start.max()) < kw
    if TILED_MORPHOLOGY and compact and layout.morphology_tiled_fits(H, kh, kw):
        if n * H * W:
            kernel = module.get_kernel("tropic_morphology_tiled", image.dtype)
            planes = (flat.reshape(n, H, W), out.reshape(n, H, W), winner.reshape(n, H, W))
            shape = (np.int32(kh), np.int32(kw))
            for p0 in range(0, n, layout.GRID_YZ):
                grid = layout.morphology_tile_grid(H, W, n - p0)
                args = tuple(x[p0:] for x in planes) + (np.int32(H), np.int32(W), *lines, *taps, *element)
                kernel(grid, (layout.MORPH_THREADS,), args + shape + rule)
    else:
        args = (flat, out, winner, np.int64(n), np.int32(H), np.int32(W), *lines, *taps, *element, *rule)
        _launch("tropic_morphology", image.dtype, n * H * W, args)
    return out, _winner_out(winner, kh * kw, xp)


def _tap_sums(g, winner, B: int, planes: int, S: int, taps: int, dtype):
    """``out[o, t] = sum_{b, s} g[b, o, s] [winner[b, o, s] = t]`` (cuda/sums.cu), shape (planes, taps)."""
    keys = planes * taps
    out = cupy.zeros((planes, taps), dtype)
    if keys == 0 or B * S == 0:
        return out
    chunks, chunk_size = layout.chunking(B * S, keys)
    partial = cupy.empty((keys, chunks), cupy.float64)
    grid = (min(chunks, layout.GRID_YZ), min(keys, layout.GRID_YZ))
    sizes = (np.int64(B), np.int64(planes), np.int64(S), np.int32(taps), np.int32(chunks))
    sizes += (np.int64(chunk_size),)
    module.get_kernel("tropic_tap_partials", dtype)(grid, (layout.SUM_THREADS,), (g, winner, partial, *sizes))
    _launch("tropic_tap_finish", dtype, keys, (partial, out, np.int64(keys), np.int32(chunks)))
    return out


@register("cupy", "morphology_vjp")
def morphology_vjp(xp, grad, indices, image_shape, row_window, col_window, needs=(True, True)):
    rows, cols = row_window.indices, col_window.indices
    kh, kw = rows.shape[1], cols.shape[1]
    H, W = image_shape[-2:]
    n = math.prod(image_shape[:-2])
    g, winner = cupy.ascontiguousarray(grad), _int32_indices(xp, indices, kh * kw)
    grad_image = grad_weights = None
    if needs[0]:
        inverse = _upload(np.int32, *layout.inverse_lines(rows, H), *layout.inverse_lines(cols, W))
        grad_image = cupy.empty(tuple(image_shape), grad.dtype)
        args = (g, winner, grad_image, np.int64(n), np.int32(H), np.int32(W))
        args += (*inverse, np.int32(kw))
        _launch("tropic_morphology_vjp_image", grad.dtype, n * H * W, args)
    if needs[1]:
        grad_weights = _tap_sums(g, winner, n, 1, H * W, kh * kw, grad.dtype).reshape(kh, kw)
    return grad_image, grad_weights


def _conv_sizes(geometry) -> tuple:
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    sizes = (B, C_in, H, W, C_out, C_group, kh, kw, sh, sw, ph, pw, geometry.groups, H_out, W_out)
    return tuple(np.int32(s) for s in sizes)


@register("cupy", "conv2d")
def conv2d(xp, semiring, x, w, geometry, rounding=None, winners=True):
    # The winners are computed whether or not `winners` asks for them (one launch writes both).
    require_no_rounding(rounding)
    C_out, C_group, kh, kw = geometry.w_shape
    n_candidates = C_group * kh * kw
    if index_dtype(xp, n_candidates) == xp.int64 or not _fits_int32(*geometry.x_shape, *geometry.out_shape):
        from tropic.core.conv import conv2d_reference

        return conv2d_reference(xp, semiring, x, w, geometry)
    x_c, w_c = cupy.ascontiguousarray(x), cupy.ascontiguousarray(w)
    y = cupy.empty(geometry.out_shape, x.dtype)
    winner = cupy.empty(geometry.out_shape, cupy.int32)
    sizes, maximise = _conv_sizes(geometry), np.int32(semiring.maximises)
    shapes = (geometry.x_shape, geometry.w_shape, geometry.out_shape, geometry.padding, geometry.groups)
    if TILED_CONV and layout.conv_tiled_fits(*shapes):
        if y.size:
            # Each group's weights as the K x per_group matrix W_g^T: wt (groups, K, per_group).
            groups = geometry.groups
            wt = cupy.ascontiguousarray(w_c.reshape(groups, C_out // groups, n_candidates).transpose(0, 2, 1))
            B, _, H_out, W_out = geometry.out_shape
            grid = layout.conv_tile_grid(B, H_out, W_out, C_out // groups, groups)
            kernel = module.get_kernel("tropic_conv2d_tiled", x.dtype)
            kernel(grid, (layout.TILE_THREADS,), (x_c, wt, y, winner, *sizes, maximise))
    else:
        args = (x_c, w_c, y, winner, *sizes, maximise)
        _launch("tropic_conv2d", x.dtype, math.prod(geometry.out_shape), args)
    return y, _winner_out(winner, n_candidates, xp)


@register("cupy", "conv2d_vjp")
def conv2d_vjp(xp, grad, indices, geometry, needs=(True, True)):
    B, C_out, H_out, W_out = geometry.out_shape
    _, C_group, kh, kw = geometry.w_shape
    g, winner = cupy.ascontiguousarray(grad), _int32_indices(xp, indices, C_group * kh * kw)
    grad_x = grad_w = None
    if needs[0]:
        grad_x = cupy.empty(geometry.x_shape, grad.dtype)
        _launch("tropic_conv2d_vjp_x", grad.dtype, grad_x.size, (g, winner, grad_x, *_conv_sizes(geometry)))
    if needs[1]:
        grad_w = _tap_sums(g, winner, B, C_out, H_out * W_out, C_group * kh * kw, grad.dtype)
        grad_w = grad_w.reshape(geometry.w_shape)
    return grad_x, grad_w


@register("cupy", "maxout")
def maxout(xp, grouped):
    pieces = grouped.shape[-1]
    rows = math.prod(grouped.shape[:-1])
    x = cupy.ascontiguousarray(grouped)
    y = cupy.empty(grouped.shape[:-1], grouped.dtype)
    winner = cupy.empty(grouped.shape[:-1], cupy.int32)
    _launch("tropic_maxout", grouped.dtype, rows, (x, y, winner, np.int64(rows), np.int32(pieces)))
    return y, _winner_out(winner, pieces, xp)


@register("cupy", "maxout_vjp")
def maxout_vjp(xp, grad, indices, pieces):
    rows = math.prod(grad.shape)
    g, winner = cupy.ascontiguousarray(grad), _int32_indices(xp, indices, pieces)
    out = cupy.empty(tuple(grad.shape) + (pieces,), grad.dtype)
    args = (g, winner, out, np.int64(rows), np.int32(pieces))
    _launch("tropic_maxout_vjp", grad.dtype, rows * pieces, args)
    return out
