"""Network operations: softmax, log-softmax, padding, linear 2-D convolution, max pooling."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core._array_api import Array, device
from ..core.checks import pair, positive_int
from ..core.conv import ConvGeometry, conv2d_vjp, maxplus_conv2d
from .tensor import Tensor, needs_grad, operands, record

__all__ = ["conv2d", "log_softmax", "max_pool2d", "pad", "softmax"]


def _axis(axis: int, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"axis must be an int in [{-ndim}, {ndim}), got {axis!r}")
    return axis % ndim


def _shifted(xp: Any, x: Array, axis: int) -> Array:
    """``x - max(x)`` along ``axis``; a slice that is all ``-inf`` is shifted by 0 (stays ``-inf``)."""
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    return x - m


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """``x - log(sum(exp(x)))`` along ``axis``, computed after subtracting the maximum.

    Gradient ``g - softmax(x) sum(g)``.
    """
    (x,) = operands(x)
    xp = x.xp
    axis = _axis(axis, x.ndim)
    s = _shifted(xp, x.data, axis)
    y = s - xp.log(xp.sum(xp.exp(s), axis=axis, keepdims=True))
    return record(y, (x,), lambda g: (g - xp.exp(y) * xp.sum(g, axis=axis, keepdims=True),))


def softmax(x: Any, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis`` (after subtracting the maximum).

    Gradient ``y (g - sum(g y))``.
    """
    (x,) = operands(x)
    xp = x.xp
    axis = _axis(axis, x.ndim)
    e = xp.exp(_shifted(xp, x.data, axis))
    y = e / xp.sum(e, axis=axis, keepdims=True)
    return record(y, (x,), lambda g: (y * (g - xp.sum(g * y, axis=axis, keepdims=True)),))


def _pad_widths(pad_width: Any, ndim: int) -> list[tuple[int, int]]:
    try:
        widths = np.broadcast_to(np.asarray(pad_width), (ndim, 2))
    except ValueError:
        raise ValueError(
            f"pad_width must be an int, (before, after) or one (before, after) per axis ({ndim}), "
            f"got {pad_width!r}"
        ) from None
    if widths.dtype.kind not in "iu" or (widths < 0).any():
        raise ValueError(f"pad_width must hold non-negative ints, got {pad_width!r}")
    return [(int(b), int(a)) for b, a in widths.tolist()]


def pad(x: Any, pad_width: Any, mode: str = "constant", value: float = 0.0) -> Tensor:
    """``x`` padded like ``numpy.pad`` (``pad_width``: int, (before, after), or one pair per axis).

    ``mode="constant"`` fills with ``value``; ``mode="edge"`` repeats the border entries, which then
    also receive the gradients of their copies.
    """
    (x,) = operands(x)
    xp = x.xp
    widths = _pad_widths(pad_width, x.ndim)
    if mode not in ("constant", "edge"):
        raise ValueError(f"mode must be 'constant' or 'edge', got {mode!r}")
    if mode == "edge" and any(n == 0 and (b or a) for n, (b, a) in zip(x.shape, widths, strict=True)):
        raise ValueError(f"mode='edge' cannot pad an empty axis, got shape {x.shape}")
    inner = tuple(slice(b, b + n) for n, (b, _) in zip(x.shape, widths, strict=True))
    shape = tuple(n + b + a for n, (b, a) in zip(x.shape, widths, strict=True))
    if mode == "constant":
        y = xp.full(shape, value, dtype=x.dtype, device=x.device)
        y[inner] = x.data
        return record(y, (x,), lambda g: (g[inner],))
    y = x.data
    for axis, (b, a) in enumerate(widths):
        n = y.shape[axis]
        index = np.clip(np.arange(-b, n + a), 0, n - 1)
        y = xp.take(y, xp.asarray(index, device=x.device), axis=axis)

    def vjp(g: Array) -> tuple[Array]:
        # Axis by axis: keep the inner part and add the padded copies onto the border entries.
        for axis, (b, a) in enumerate(widths):
            head = (slice(None),) * axis
            n = g.shape[axis] - b - a
            out = xp.asarray(g[(*head, slice(b, b + n), ...)], copy=True)
            if b:
                first = (*head, slice(0, 1), ...)
                out[first] = out[first] + xp.sum(g[(*head, slice(0, b), ...)], axis=axis, keepdims=True)
            if a:
                last = (*head, slice(n - 1, n), ...)
                out[last] = out[last] + xp.sum(g[(*head, slice(b + n, None), ...)], axis=axis, keepdims=True)
            g = out
        return (g,)

    return record(y, (x,), vjp)


def _columns(xp: Any, x: Array, geometry: ConvGeometry) -> Array:
    """im2col, channels first: (B, Cin, H, W) -> (Cin, kh * kw, B, H_out, W_out), zero padding.

    This layout makes the convolution one matrix product per group, (Cout/G, K) @ (K, B H_out W_out).
    """
    B, C, H, W = geometry.x_shape
    _, _, kh, kw = geometry.w_shape
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    _, _, Ho, Wo = geometry.out_shape
    x = xp.permute_dims(x, (1, 0, 2, 3))
    if ph or pw:
        padded = xp.zeros((C, B, H + 2 * ph, W + 2 * pw), dtype=x.dtype, device=device(x))
        padded[:, :, ph : ph + H, pw : pw + W] = x
        x = padded
    taps = [
        x[:, :, u : u + sh * (Ho - 1) + 1 : sh, v : v + sw * (Wo - 1) + 1 : sw]
        for u in range(kh)
        for v in range(kw)
    ]
    return xp.stack(taps, axis=1)


def _col2im(xp: Any, cols: Array, geometry: ConvGeometry) -> Array:
    """Adjoint of :func:`_columns`: (Cin, kh * kw, B, H_out, W_out) summed back into (B, Cin, H, W)."""
    B, C, H, W = geometry.x_shape
    _, _, kh, kw = geometry.w_shape
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    _, _, Ho, Wo = geometry.out_shape
    out = xp.zeros((C, B, H + 2 * ph, W + 2 * pw), dtype=cols.dtype, device=device(cols))
    for u in range(kh):
        for v in range(kw):
            rows, columns = slice(u, u + sh * (Ho - 1) + 1, sh), slice(v, v + sw * (Wo - 1) + 1, sw)
            out[:, :, rows, columns] = out[:, :, rows, columns] + cols[:, u * kw + v, :, :, :]
    return xp.permute_dims(out[:, :, ph : ph + H, pw : pw + W], (1, 0, 2, 3))


def conv2d(
    x: Any,
    w: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
) -> Tensor:
    """Linear 2-D convolution (cross-correlation, like ``torch.nn.functional.conv2d``).

    .. math:: y_{b,o,i,j} = \\mathrm{bias}_o + \\sum_{c,u,v} x_{b,\\, g(o) C_g + c,\\, i s_h + u - p_h,\\,
              j s_w + v - p_w} \\, w_{o,c,u,v}

    with zero padding. ``x`` (B, Cin, H, W), ``w`` (Cout, Cin // groups, kh, kw), ``bias`` (Cout,).
    Computed as im2col + one matrix product per group; the columns are rebuilt in the backward pass
    instead of kept.
    """
    x, w = operands(x, w)
    parents: tuple[Tensor, ...] = (x, w)
    xp = x.xp
    geometry = ConvGeometry(x.shape, w.shape, stride, padding, groups)
    B = x.shape[0]
    C_out, C_group, kh, kw = w.shape
    G = geometry.groups
    _, _, Ho, Wo = geometry.out_shape
    K, N = C_group * kh * kw, B * Ho * Wo

    def cols_of(data: Array) -> Array:  # (G, K, N)
        return xp.reshape(_columns(xp, data, geometry), (G, K, N))

    w3 = xp.reshape(w.data, (G, C_out // G, K))
    y = xp.reshape(w3 @ cols_of(x.data), (C_out, B, Ho, Wo))
    y = xp.permute_dims(y, (1, 0, 2, 3))
    if bias is not None:
        bias = operands(x, bias)[1]
        if bias.shape != (C_out,):
            raise ValueError(f"bias must have shape ({C_out},), got {bias.shape}")
        y = y + xp.reshape(bias.data, (1, C_out, 1, 1))
        parents = (x, w, bias)

    def vjp(g: Array) -> list[Array | None]:
        g3 = xp.reshape(xp.permute_dims(g, (1, 0, 2, 3)), (G, C_out // G, N))
        grads: list[Array | None] = [None, None, None]
        if w.requires_grad:
            grads[1] = xp.reshape(g3 @ xp.matrix_transpose(cols_of(x.data)), w.shape)
        if x.requires_grad:
            grad_cols = xp.matrix_transpose(w3) @ g3  # (G, K, N)
            grads[0] = _col2im(xp, xp.reshape(grad_cols, (G * C_group, kh * kw, B, Ho, Wo)), geometry)
        if len(parents) == 3:
            grads[2] = xp.sum(g, axis=(0, 2, 3))
        return grads[: len(parents)]

    return record(y, parents, vjp)


def max_pool2d(
    x: Any, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None
) -> Tensor:
    """Max pooling over ``kernel_size`` windows of the last two axes of ``x`` (B, C, H, W), no padding.

    The gradient of each window goes to one winner, the lowest row-major offset on ties. This is the
    max-plus convolution with a zero structuring element per channel (``groups = C``), so it reuses
    :func:`tropic.maxplus_conv2d` and :func:`tropic.conv2d_vjp`.
    """
    (x,) = operands(x)
    xp = x.xp
    if x.ndim != 4:
        raise ValueError(f"x must have 4 dimensions (B, C, H, W), got shape {x.shape}")
    kh, kw = pair("kernel_size", kernel_size, 1)
    stride = (kh, kw) if stride is None else pair("stride", stride, 1)
    C = positive_int("x.shape[1] (channels)", x.shape[1])
    w = xp.zeros((C, 1, kh, kw), dtype=x.dtype, device=x.device)  # zero element per channel
    if not needs_grad(x):
        return Tensor(maxplus_conv2d(x.data, w, stride, 0, C))
    y, indices = maxplus_conv2d(x.data, w, stride, 0, C, return_indices=True)
    x_shape, w_shape = x.shape, w.shape
    return record(y, (x,), lambda g: (conv2d_vjp(g, indices, x_shape, w_shape, stride, 0, C)[0],))
