"""Tropical 3-D convolutions, the layer form: ``maxplus_conv3d`` and ``minplus_conv3d``.

One operator spec of its own (``conv3d``), computed with the 2-D operator's kernels on a folded
problem: output depth ``z`` of batch entry ``b`` is the 2-D image ``(b, z)`` whose channel
``c * kd + a`` is input channel ``c`` at depth ``z s_d + a - p_d`` (the tropical zero on the padding),
convolved with ``w`` reshaped to ``(Cout, C_g kd, kh, kw)``. That reshape keeps the flat order: the 2-D
candidate index ``((c * kd + a) * kh + u) * kw + v`` *is* the 3-D one, so values, winners (lowest index
on ties, the first NaN in flat order) and the zero's absorption are the 2-D kernel's own, bitwise, on
every backend that has one, and the gradients are its vjp's, folded back along the depth.

The folded input holds ``kd / s_d`` times the input's slices: it is built for a chunk of output depths
at a time, so that it stays within the input's size (or a few million elements for small inputs).
"""

from __future__ import annotations

from typing import Any

from ._array_api import Array, array_namespace, device, index_dtype, scatter_add
from .checks import (
    ints,
    positive_int,
    require_floating,
    require_ndim,
    require_same_device,
)
from .conv import ConvGeometry, checked_conv_vjp, conv2d_reference, conv2d_vjp_reference
from .dispatch import kernel_for
from .engines import engine_of
from .semiring import MAX_PLUS, MIN_PLUS
from .spec import Operator, define

__all__ = ["CONV3D", "Conv3dGeometry", "conv3d_vjp", "maxplus_conv3d", "minplus_conv3d"]

_FOLD_ELEMENTS = 1 << 22  # the folded input of one 2-D call may always be this large


def maxplus_conv3d(
    x: Array,
    w: Array,
    stride: int | tuple[int, int, int] = 1,
    padding: int | tuple[int, int, int] = 0,
    groups: int = 1,
    *,
    return_indices: bool = False,
):
    """Max-plus 3-D convolution (correlation orientation, like ``conv3d``).

    .. math:: y_{b,o,z,i,j} = \\max_{c,a,u,v} \\; x_{b,\\,g(o) C_g + c,\\; z s_d + a - p_d,\\;
              i s_h + u - p_h,\\; j s_w + v - p_w} + w_{o,c,a,u,v}

    where ``C_g = Cin / groups`` input channels belong to output channel ``o``'s group ``g(o)``.

    Parameters
    ----------
    x : array or tensor, shape (B, Cin, D, H, W)
    w : array or tensor, shape (Cout, Cin // groups, kd, kh, kw)
        Real floating point, same library and device; dtypes promote. NumPy, CuPy and other
        array-API arrays, ``tropic.autodiff`` tensors and torch tensors (the last two differentiable).
    stride : int or (int, int, int)
        Step between output positions, >= 1.
    padding : int or (int, int, int)
        Slices/rows/columns added on each side, filled with the tropical zero (``-inf``), >= 0.
    groups : int
        ``Cin`` and ``Cout`` must both be divisible by it.
    return_indices : bool
        Also return the winner: flat index ``((c * kd + a) * kh + u) * kw + v`` into ``w[o]``,
        lowest on ties, ``-1`` if every candidate is ``-inf``.

    Returns
    -------
    y : array, shape (B, Cout, D_out, H_out, W_out), ``D_out = (D + 2 p_d - kd) // s_d + 1`` and
        likewise for the other two axes
    indices : array (only if ``return_indices``)

    Examples
    --------
    >>> import numpy as np, tropic
    >>> x = np.arange(8.0).reshape(1, 1, 2, 2, 2)
    >>> tropic.maxplus_conv3d(x, np.zeros((1, 1, 2, 1, 1)))
    array([[[[[4., 5.],
              [6., 7.]]]]])
    """
    return _tropical_conv3d(True, x, w, stride, padding, groups, return_indices)


def minplus_conv3d(
    x: Array,
    w: Array,
    stride: int | tuple[int, int, int] = 1,
    padding: int | tuple[int, int, int] = 0,
    groups: int = 1,
    *,
    return_indices: bool = False,
):
    """Min-plus 3-D convolution: :func:`maxplus_conv3d` with ``min`` and ``+inf`` padding.

    .. math:: y_{b,o,z,i,j} = \\min_{c,a,u,v} \\; x_{b,\\,g(o) C_g + c,\\; z s_d + a - p_d,\\;
              i s_h + u - p_h,\\; j s_w + v - p_w} + w_{o,c,a,u,v}
    """
    return _tropical_conv3d(False, x, w, stride, padding, groups, return_indices)


def conv3d_vjp(
    grad: Array,
    indices: Array,
    x_shape: tuple[int, int, int, int, int],
    w_shape: tuple[int, int, int, int, int],
    stride: int | tuple[int, int, int] = 1,
    padding: int | tuple[int, int, int] = 0,
    groups: int = 1,
) -> tuple[Array, Array]:
    """Vector-Jacobian product of :func:`maxplus_conv3d` / :func:`minplus_conv3d`.

    With ``(c*, a*, u*, v*)`` the winner of ``y[b, o, z, i, j]``, its gradient goes to
    ``x[b, g(o) C_g + c*, z s_d + a* - p_d, i s_h + u* - p_h, j s_w + v* - p_w]`` (nothing if that is
    padding) and to ``w[o, c*, a*, u*, v*]``; outputs without a winner send nothing.

    Returns ``(grad_x, grad_w)`` of shapes ``x_shape`` and ``w_shape``.
    """
    return checked_conv_vjp(CONV3D, Conv3dGeometry, grad, indices, x_shape, w_shape, stride, padding, groups)


class Conv3dGeometry:
    """Checked shapes of a grouped, strided, padded 3-D convolution, and the 2-D convolution of one
    depth tap (``plane``: the output depth folded into the batch)."""

    ndim = 5  # of x and w

    def __init__(self, x_shape: tuple, w_shape: tuple, stride: Any, padding: Any, groups: Any):
        for name, shape, layout in (
            ("x_shape", x_shape, "B, Cin, D, H, W"),
            ("w_shape", w_shape, "Cout, Cin // groups, kd, kh, kw"),
        ):
            if len(shape) != 5:
                raise ValueError(f"{name} must have 5 dimensions ({layout}), got {tuple(shape)}")
        self.stride = ints("stride", stride, 3, 1)
        self.padding = ints("padding", padding, 3, 0)
        self.groups = positive_int("groups", groups)
        B, C_in, D, H, W = x_shape
        C_out, C_group, kd, kh, kw = w_shape
        if C_in % self.groups or C_out % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide both the input channels (x.shape[1]={C_in}) and the "
                f"output channels (w.shape[0]={C_out})"
            )
        if C_group != C_in // self.groups:
            raise ValueError(
                f"w.shape[1] must be x.shape[1] // groups = {C_in // self.groups}, got w of shape "
                f"{tuple(w_shape)}"
            )
        padded = tuple(n + 2 * p for n, p in zip((D, H, W), self.padding, strict=True))
        kernel = (kd, kh, kw)
        if min(kernel) < 1 or any(k > n for k, n in zip(kernel, padded, strict=True)):
            raise ValueError(f"the kernel {kernel} must fit the padded input {padded}")
        D_out, H_out, W_out = ((n - k) // s + 1 for n, k, s in zip(padded, kernel, self.stride, strict=True))
        self.x_shape, self.w_shape = tuple(x_shape), tuple(w_shape)
        self.out_shape = (B, C_out, D_out, H_out, W_out)
        self.kernel_size = kernel
        self.n_candidates = C_group * kd * kh * kw
        # Output depths per 2-D call: the folded input (kd slices per output depth) stays within the
        # input's size, or _FOLD_ELEMENTS for small inputs.
        per_depth = B * C_in * kd * H * W
        budget = max(B * C_in * D * H * W, _FOLD_ELEMENTS)
        self.depth_chunk = max(1, min(D_out, budget // per_depth if per_depth else D_out))

    def chunks(self) -> list[tuple[int, int]]:
        """Ranges ``[z0, z1)`` of output depths computed by one 2-D call each."""
        D_out, n = self.out_shape[2], self.depth_chunk
        return [(z0, min(z0 + n, D_out)) for z0 in range(0, D_out, n)]

    def plane(self, depths: int) -> ConvGeometry:
        """The 2-D convolution of ``depths`` output depths: each ``(b, z)`` an image whose channel
        ``c * kd + a`` is input channel ``c`` at depth ``z s_d + a - p_d``, by ``w`` reshaped to
        ``(Cout, C_g kd, kh, kw)``."""
        B, C_in, _, H, W = self.x_shape
        C_out, C_group, kd, kh, kw = self.w_shape
        return ConvGeometry(
            (B * depths, C_in * kd, H, W),
            (C_out, C_group * kd, kh, kw),
            self.stride[1:],
            self.padding[1:],
            self.groups,
        )

    def source_depth(self, a: int, z0: int, z1: int) -> list[int]:
        """Input slice read by depth tap ``a`` for each output depth in ``[z0, z1)`` (``-1``: padding)."""
        D, (s, p) = self.x_shape[2], (self.stride[0], self.padding[0])
        return [z * s + a - p if 0 <= z * s + a - p < D else -1 for z in range(z0, z1)]


def _tropical_conv3d(maximise, x, w, stride, padding, groups, return_indices):
    engine = engine_of(x, w)
    raw_x, raw_w = (x, w) if engine is None else (engine.array(x), engine.array(w))
    xp = array_namespace(x=raw_x, w=raw_w)
    require_floating(xp, "x", raw_x)
    require_floating(xp, "w", raw_w)
    require_ndim("x", raw_x, 5, "B, Cin, D, H, W")
    require_ndim("w", raw_w, 5, "Cout, Cin // groups, kd, kh, kw")
    require_same_device(x=raw_x, w=raw_w)
    geometry = Conv3dGeometry(tuple(raw_x.shape), tuple(raw_w.shape), stride, padding, groups)
    params = {
        "stride": list(geometry.stride),
        "padding": list(geometry.padding),
        "groups": geometry.groups,
        "maximise": maximise,
    }
    if engine is None:
        y, indices = _run(xp, x, w, **params)
    else:
        y, indices = engine.apply(CONV3D, (x, w), params)
    return (y, indices) if return_indices else y


def _run(xp, x, w, *, stride, padding, groups, maximise, rounding=None):
    geometry = Conv3dGeometry(tuple(x.shape), tuple(w.shape), stride, padding, groups)
    semiring = MAX_PLUS if maximise else MIN_PLUS
    dtype = xp.result_type(x.dtype, w.dtype)
    x, w = xp.astype(x, dtype, copy=False), xp.astype(w, dtype, copy=False)
    B, C_in, _, H, W = geometry.x_shape
    C_out, C_group, kd, kh, kw = geometry.w_shape
    _, _, _, H_out, W_out = geometry.out_shape
    s, p = geometry.stride[0], geometry.padding[0]
    kernel = kernel_for("conv2d", xp) or conv2d_reference
    # (B, D + 2p, Cin, H, W): depth next to the batch, padded with the tropical zero.
    slices = xp.permute_dims(x, (0, 2, 1, 3, 4))
    if p:
        fill = xp.full((B, p, C_in, H, W), semiring.zero, dtype=dtype, device=device(x))
        slices = xp.concat([fill, slices, fill], axis=1)
    # w[o, c, a, u, v] is w2[o, c * kd + a, u, v]: the 3-D flat index is the 2-D one.
    w2 = xp.reshape(w, (C_out, C_group * kd, kh, kw))
    values, winners = [], []
    for z0, z1 in geometry.chunks():
        plane = geometry.plane(z1 - z0)
        # folded[b, z, c, a] = padded x[b, c, z * s + a]: channel c * kd + a of a batch of images.
        taps = [slices[:, z0 * s + a : (z1 - 1) * s + a + 1 : s, ...] for a in range(kd)]
        folded = xp.reshape(xp.stack(taps, axis=3), plane.x_shape)
        y, k = kernel(xp, semiring, folded, w2, plane, rounding)
        values.append(xp.reshape(y, (B, z1 - z0, C_out, H_out, W_out)))
        winners.append(xp.reshape(k, (B, z1 - z0, C_out, H_out, W_out)))
    y = values[0] if len(values) == 1 else xp.concat(values, axis=1)
    k = winners[0] if len(winners) == 1 else xp.concat(winners, axis=1)
    k = xp.astype(k, index_dtype(xp, geometry.n_candidates), copy=False)
    return xp.permute_dims(y, (0, 2, 1, 3, 4)), xp.permute_dims(k, (0, 2, 1, 3, 4))


def _vjp(xp, grad, winners, shapes, needs, *, stride, padding, groups, maximise):
    """The 2-D vjp kernel on the folded problem of each chunk of output depths; ``x``'s gradient of
    channel ``c * kd + a`` goes back to the depth slices tap ``a`` read."""
    geometry = Conv3dGeometry(tuple(shapes[0]), tuple(shapes[1]), stride, padding, groups)
    B, C_in, D, H, W = geometry.x_shape
    kd = geometry.kernel_size[0]
    kernel = kernel_for("conv2d_vjp", xp) or conv2d_vjp_reference
    grad_by_depth = xp.permute_dims(grad, (0, 2, 1, 3, 4))
    winners_by_depth = xp.permute_dims(winners, (0, 2, 1, 3, 4))
    grad_x = grad_w = None
    for z0, z1 in geometry.chunks():
        plane = geometry.plane(z1 - z0)
        g = xp.reshape(grad_by_depth[:, z0:z1, ...], plane.out_shape)
        k = xp.reshape(winners_by_depth[:, z0:z1, ...], plane.out_shape)
        gx, gw = kernel(xp, g, k, plane, (bool(needs[0]), bool(needs[1])))
        if needs[0]:
            gx = xp.reshape(gx, (B, z1 - z0, C_in, kd, H, W))
            for a in range(kd):
                depth = geometry.source_depth(a, z0, z1)
                part = scatter_add(xp, gx[:, :, :, a, ...], depth, D, axis=1)
                grad_x = part if grad_x is None else grad_x + part
        if needs[1]:
            grad_w = gw if grad_w is None else grad_w + gw
    if needs[0]:
        grad_x = xp.astype(xp.permute_dims(grad_x, (0, 2, 1, 3, 4)), grad.dtype)
    if needs[1]:
        grad_w = xp.astype(xp.reshape(grad_w, geometry.w_shape), grad.dtype)
    return grad_x, grad_w


def _jvp(xp, tangents, winners, shapes, *, stride, padding, groups, maximise):
    """The tangent of ``y[b, o, z, i, j]``: ``x``'s at the voxel its winner ``(c, a, u, v)`` read (0 on
    the padding) plus ``w``'s at ``w[o, c, a, u, v]``."""
    tx, tw = tangents
    geometry = Conv3dGeometry(tuple(shapes[0]), tuple(shapes[1]), stride, padding, groups)
    B, C_in, D, H, W = geometry.x_shape
    C_out, C_group, kd, kh, kw = geometry.w_shape
    (sd, sh, sw), (pd, ph, pw) = geometry.stride, geometry.padding
    _, _, D_out, H_out, W_out = geometry.out_shape
    dev = device(winners)
    known = tx if tx is not None else tw
    zero = xp.zeros((), dtype=known.dtype, device=dev)
    t = xp.astype(winners, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    out = xp.zeros(tuple(winners.shape), dtype=known.dtype, device=dev)

    def axis(n: int, position: int) -> Array:
        shape = [1] * 5
        shape[position] = n
        return xp.reshape(xp.arange(n, dtype=xp.int64, device=dev), tuple(shape))

    if tx is not None:
        c, rest = t // (kd * kh * kw), t % (kd * kh * kw)
        a, uv = rest // (kh * kw), rest % (kh * kw)
        depth = axis(D_out, 2) * sd + a - pd
        row = axis(H_out, 3) * sh + uv // kw - ph
        col = axis(W_out, 4) * sw + uv % kw - pw
        channel = (axis(C_out, 1) // (C_out // geometry.groups)) * C_group + c
        inside = (depth >= 0) & (depth < D) & (row >= 0) & (row < H) & (col >= 0) & (col < W)
        flat = (((axis(B, 0) * C_in + channel) * D + depth) * H + row) * W + col
        flat = xp.where(inside, flat, xp.zeros_like(flat))
        values = xp.reshape(xp.take(xp.reshape(tx, (-1,)), xp.reshape(flat, (-1,))), tuple(t.shape))
        out = out + xp.where(inside, values, zero)
    if tw is not None:
        flat = axis(C_out, 1) * geometry.n_candidates + t
        out = out + xp.reshape(xp.take(xp.reshape(tw, (-1,)), xp.reshape(flat, (-1,))), tuple(t.shape))
    return xp.where(none, zero, out)


def _meta(shapes, *, stride, padding, groups, maximise):
    for name, shape, layout in (
        ("x", shapes[0], "B, Cin, D, H, W"),
        ("w", shapes[1], "Cout, Cin // groups, kd, kh, kw"),
    ):
        if len(shape) != 5:
            raise ValueError(f"{name} must have 5 dimensions ({layout}), got shape {tuple(shape)}")
    geometry = Conv3dGeometry(tuple(shapes[0]), tuple(shapes[1]), stride, padding, groups)
    return geometry.out_shape, geometry.n_candidates


CONV3D = define(
    Operator(
        name="conv3d",
        inputs=("x", "w"),
        params=(("stride", "int[]"), ("padding", "int[]"), ("groups", int), ("maximise", bool)),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
    )
)
