"""NumPy kernels for the tropical operators, registered with ``tropic.core.dispatch``.

One idea serves every operator: gather a bounded block of candidate sums ``x_k + w_k`` with the
candidates ``k`` on the last, contiguous axis, then let ``np.argmax`` / ``np.argmin`` (vectorised
along the last axis, first occurrence on ties, first NaN if any: exactly the tie and NaN rules of
``tropic.core.semiring``) pick the winner. Blocks hold at most ``_BLOCK_ELEMENTS`` candidates, so
memory stays O(output) however large the reduction. The results are bitwise those of the core
reference kernels (the tests check it); the gradients are scatter-adds with ``np.bincount``.
"""

from __future__ import annotations

import numpy as np

from tropic.core.dispatch import register
from tropic.core.semiring import MAX_PLUS

_BLOCK_ELEMENTS = 1 << 18  # candidates per block: 1 MiB of float32, cache-sized


def tropical_add(x: np.ndarray, w: np.ndarray, semiring) -> np.ndarray:
    """``x + w`` (broadcast) with the tropical zero absorbing, as ``Semiring.multiply``.

    IEEE gives NaN only for ``inf + -inf``; that needs an infinity of each sign, so the rare
    repair pass runs only when the operands hold both.
    """
    with np.errstate(invalid="ignore"):  # inf - inf: repaired just below
        total = np.add(x, w)
    if _has_inf(x, +1) and _has_inf(w, -1) or _has_inf(x, -1) and _has_inf(w, +1):
        spurious = np.isnan(total) & ~np.isnan(x) & ~np.isnan(w)
        total[spurious] = semiring.zero
    return total


def select_winner(candidates: np.ndarray, semiring, index_type) -> tuple[np.ndarray, np.ndarray]:
    """⊕-reduce the last axis: values and winners (``-1`` where every candidate is the zero)."""
    if candidates.shape[-1] == 0:
        shape = candidates.shape[:-1]
        return np.full(shape, semiring.zero, candidates.dtype), np.full(shape, -1, index_type)
    pick = np.argmax if semiring.maximises else np.argmin
    winner = pick(candidates, axis=-1)
    values = np.take_along_axis(candidates, winner[..., None], axis=-1)[..., 0]
    winner = winner.astype(index_type)
    winner[values == semiring.zero] = -1
    return values, winner


def matmul_rows(semiring, a: np.ndarray, b_t: np.ndarray, index_type) -> tuple[np.ndarray, np.ndarray]:
    """``c[i, j] = ⊕_k a[i, k] ⊗ b_t[j, k]`` for 2-D ``a`` (M, K) and ``b_t`` (N, K)."""
    (M, K), N = a.shape, b_t.shape[0]
    c = np.empty((M, N), a.dtype)
    winner = np.empty((M, N), index_type)
    cols = max(1, min(N, _BLOCK_ELEMENTS // max(K, 1)))
    rows = max(1, min(M, _BLOCK_ELEMENTS // max(K * cols, 1)))
    for j0 in range(0, N, cols):
        b_block = b_t[None, j0 : j0 + cols, :]
        for i0 in range(0, M, rows):
            sums = tropical_add(a[i0 : i0 + rows, None, :], b_block, semiring)
            c[i0 : i0 + rows, j0 : j0 + cols], winner[i0 : i0 + rows, j0 : j0 + cols] = select_winner(
                sums, semiring, index_type
            )
    return c, winner


def _has_inf(x: np.ndarray, sign: int) -> bool:
    return bool(np.any(x == sign * np.inf))


def _index_type(n_candidates: int):
    from tropic.core._array_api import index_dtype

    return index_dtype(np, n_candidates)


@register("numpy", "matmul")
def matmul(xp, semiring, a: np.ndarray, b: np.ndarray):
    K = a.shape[-1]
    index_type = _index_type(K)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, N = a.shape[-2], b.shape[-1]
    if b.ndim == 2:  # the layer case x @ W: fold a's batch into its rows
        c, w = matmul_rows(semiring, a.reshape(-1, K), np.ascontiguousarray(b.T), index_type)
        return c.reshape(batch + (M, N)), w.reshape(batch + (M, N))
    a = np.broadcast_to(a, batch + (M, K))
    b_t = np.swapaxes(np.broadcast_to(b, batch + (K, N)), -1, -2)
    c = np.empty(batch + (M, N), a.dtype)
    winner = np.empty(batch + (M, N), index_type)
    for i in np.ndindex(*batch):
        c[i], winner[i] = matmul_rows(semiring, a[i], np.ascontiguousarray(b_t[i]), index_type)
    return c, winner


@register("numpy", "matmul_vjp")
def matmul_vjp(xp, grad, indices, a_shape, b_shape):
    from tropic.core._array_api import sum_to_shape

    *batch, M, N = grad.shape
    K = a_shape[-1]
    n_batch = int(np.prod(batch, dtype=np.int64))
    b_idx, i_idx, j_idx = np.indices((n_batch, M, N), sparse=True)
    k = indices.reshape(n_batch, M, N).astype(np.int64)
    valid = k >= 0
    g = grad.reshape(n_batch, M, N)[valid]
    a_slot = ((b_idx * M + i_idx) * K + k)[valid]
    b_slot = ((b_idx * K + k) * N + j_idx)[valid]
    grad_a = _bincount(a_slot, g, n_batch * M * K, grad.dtype).reshape(tuple(batch) + (M, K))
    grad_b = _bincount(b_slot, g, n_batch * K * N, grad.dtype).reshape(tuple(batch) + (K, N))
    return sum_to_shape(np, grad_a, tuple(a_shape)), sum_to_shape(np, grad_b, tuple(b_shape))


@register("numpy", "morphology")
def morphology(xp, semiring, image, weights, support, rows, cols, fill):
    kh, kw = support.shape
    index_type = _index_type(kh * kw)
    taps = np.flatnonzero(support)  # candidates in increasing flat index
    u, v = np.divmod(taps, kw)
    *batch, H, W = image.shape
    flat = image.reshape(-1, H, W)
    # One extra row and column hold the border value, so index -1 reads `fill`.
    extended = np.full((flat.shape[0], H + 1, W + 1), fill, image.dtype)
    extended[:, :H, :W] = flat
    tap_rows, tap_cols = rows[:, u], cols[:, v]  # (H, T), (W, T)
    tap_weights = None if weights is None else np.ascontiguousarray(weights.reshape(-1)[taps])
    out = np.empty(flat.shape, image.dtype)
    winner = np.empty(flat.shape, index_type)
    per_row = W * len(taps)
    n_rows = max(1, min(H, _BLOCK_ELEMENTS // max(per_row, 1)))
    n_images = max(1, _BLOCK_ELEMENTS // max(per_row * H, 1)) if n_rows == H else 1
    for b0 in range(0, flat.shape[0], n_images):
        for r0 in range(0, H, n_rows):
            r = slice(r0, r0 + n_rows)
            window = extended[b0 : b0 + n_images][:, tap_rows[r][:, None, :], tap_cols[None, :, :]]
            if tap_weights is not None:
                window = tropical_add(window, tap_weights, semiring)
            values, tap = select_winner(window, semiring, index_type)
            out[b0 : b0 + n_images, r] = values
            winner[b0 : b0 + n_images, r] = np.where(tap >= 0, taps[np.maximum(tap, 0)], -1)
    return out.reshape(image.shape), winner.reshape(image.shape)


@register("numpy", "morphology_vjp")
def morphology_vjp(xp, grad, indices, image_shape, rows, cols):
    kh, kw = rows.shape[1], cols.shape[1]
    H, W = image_shape[-2:]
    t = indices.reshape(-1, H, W).astype(np.int64)
    n = t.shape[0]
    u, v = np.divmod(np.maximum(t, 0), kw)
    i_idx, j_idx = np.indices((H, W), sparse=True)
    src_row, src_col = rows[i_idx, u], cols[j_idx, v]
    g = grad.reshape(n, H, W)
    has_winner = t >= 0
    inside = has_winner & (src_row >= 0) & (src_col >= 0)
    image_slot = (np.arange(n)[:, None, None] * H + src_row) * W + src_col
    grad_image = _bincount(image_slot[inside], g[inside], n * H * W, grad.dtype)
    grad_weights = _bincount(t[has_winner], g[has_winner], kh * kw, grad.dtype)
    return grad_image.reshape(image_shape), grad_weights.reshape(kh, kw)


@register("numpy", "conv2d")
def conv2d(xp, semiring, x, w, geometry):
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    G, (sh, sw), (ph, pw) = geometry.groups, geometry.stride, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    index_type = _index_type(C_group * kh * kw)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=semiring.zero)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw][:, :, :H_out, :W_out]  # (B, C_in, H_out, W_out, kh, kw)
    y = np.empty(geometry.out_shape, x.dtype)
    winner = np.empty(geometry.out_shape, index_type)
    per_row = W_out * C_group * kh * kw
    n_rows = max(1, min(H_out, _BLOCK_ELEMENTS // per_row))
    o_per_group = C_out // G
    for g in range(G):
        w_g = np.ascontiguousarray(w[g * o_per_group : (g + 1) * o_per_group].reshape(o_per_group, -1))
        channels = slice(g * C_group, (g + 1) * C_group)
        for b in range(B):
            for r0 in range(0, H_out, n_rows):
                r = slice(r0, r0 + n_rows)
                # im2col of a block of output rows: (rows * W_out, C_group * kh * kw), (c, u, v) order.
                block = windows[b, channels, r].transpose(1, 2, 0, 3, 4).reshape(-1, w_g.shape[1])
                values, k = matmul_rows(semiring, block, w_g, index_type)
                shape = (-1, W_out, o_per_group)
                y[b, g * o_per_group : (g + 1) * o_per_group, r] = values.reshape(shape).transpose(2, 0, 1)
                winner[b, g * o_per_group : (g + 1) * o_per_group, r] = k.reshape(shape).transpose(2, 0, 1)
    return y, winner


@register("numpy", "conv2d_vjp")
def conv2d_vjp(xp, grad, indices, geometry):
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    t = indices.astype(np.int64)
    has_winner = t >= 0
    c, uv = np.divmod(np.maximum(t, 0), kh * kw)
    u, v = np.divmod(uv, kw)
    b_idx, o_idx, i_idx, j_idx = np.indices(geometry.out_shape, sparse=True)
    channel = (o_idx // (C_out // geometry.groups)) * C_group + c
    row, col = i_idx * sh + u - ph, j_idx * sw + v - pw
    inside = has_winner & (row >= 0) & (row < H) & (col >= 0) & (col < W)
    x_slot = ((b_idx * C_in + channel) * H + row) * W + col
    w_slot = o_idx * (C_group * kh * kw) + t
    grad_x = _bincount(x_slot[inside], grad[inside], B * C_in * H * W, grad.dtype)
    grad_w = _bincount(w_slot[has_winner], grad[has_winner], C_out * C_group * kh * kw, grad.dtype)
    return grad_x.reshape(geometry.x_shape), grad_w.reshape(geometry.w_shape)


@register("numpy", "maxout")
def maxout(xp, grouped):
    return select_winner(grouped, MAX_PLUS, _index_type(grouped.shape[-1]))


def _bincount(slots: np.ndarray, weights: np.ndarray, length: int, dtype) -> np.ndarray:
    """Deterministic scatter-add (accumulated in float64, then cast to ``dtype``)."""
    return np.bincount(slots.ravel(), weights=weights.ravel(), minlength=length).astype(dtype, copy=False)
