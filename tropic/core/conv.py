"""Tropical convolutions, the layer form: ``maxplus_conv2d`` and ``minplus_conv2d``, and their 1-D
forms ``maxplus_conv1d`` and ``minplus_conv1d`` (the 2-D operator with a unit height)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ._array_api import Array, array_namespace, device, gather_or_fill, index_dtype, scatter_add
from .checks import (
    ints,
    pair,
    positive_int,
    require_floating,
    require_integer,
    require_ndim,
    require_no_rounding,
    require_same_device,
    require_winners,
    shape_tuple,
)
from .dispatch import kernel_for
from .engines import arrays, engine_of, run_vjp
from .semiring import MAX_PLUS, MIN_PLUS, Semiring, reduce_candidates
from .spec import Operator, define


def maxplus_conv2d(
    x: Array,
    w: Array,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    *,
    return_indices: bool = False,
):
    """Max-plus 2-D convolution (correlation orientation, like ``conv2d``).

    .. math:: y_{b,o,i,j} = \\max_{c,u,v} \\; x_{b,\\,g(o) C_g + c,\\; i s_h + u - p_h,\\; j s_w + v - p_w}
              + w_{o,c,u,v}

    where ``C_g = Cin / groups`` input channels belong to output channel ``o``'s group ``g(o)``.

    Parameters
    ----------
    x : array or tensor, shape (B, Cin, H, W)
    w : array or tensor, shape (Cout, Cin // groups, kh, kw)
        Real floating point, same library and device; dtypes promote. NumPy, CuPy and other
        array-API arrays, ``tropic.autodiff`` tensors and torch tensors (the last two differentiable).
    stride : int or (int, int)
        Step between output positions, >= 1.
    padding : int or (int, int)
        Rows/columns added on each side, filled with the tropical zero (``-inf``), >= 0.
    groups : int
        ``Cin`` and ``Cout`` must both be divisible by it.
    return_indices : bool
        Also return the winner: flat index ``(c * kh + u) * kw + v`` into ``w[o]``, lowest on ties,
        ``-1`` if every candidate is ``-inf``.

    Returns
    -------
    y : array, shape (B, Cout, (H + 2 p_h - kh) // s_h + 1, (W + 2 p_w - kw) // s_w + 1)
    indices : array (only if ``return_indices``)

    Examples
    --------
    >>> import numpy as np, tropic
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> tropic.maxplus_conv2d(x, np.zeros((1, 1, 2, 2)))
    array([[[[4., 5.],
             [7., 8.]]]])
    """
    return _tropical_conv2d(MAX_PLUS, x, w, stride, padding, groups, return_indices)


def minplus_conv2d(
    x: Array,
    w: Array,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    *,
    return_indices: bool = False,
):
    """Min-plus 2-D convolution: :func:`maxplus_conv2d` with ``min`` and ``+inf`` padding.

    .. math:: y_{b,o,i,j} = \\min_{c,u,v} \\; x_{b,\\,g(o) C_g + c,\\; i s_h + u - p_h,\\; j s_w + v - p_w}
              + w_{o,c,u,v}
    """
    return _tropical_conv2d(MIN_PLUS, x, w, stride, padding, groups, return_indices)


def maxplus_conv1d(
    x: Array,
    w: Array,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] = 0,
    groups: int = 1,
    *,
    return_indices: bool = False,
):
    """Max-plus 1-D convolution (correlation orientation, like ``conv1d``).

    .. math:: y_{b,o,i} = \\max_{c,v} \\; x_{b,\\,g(o) C_g + c,\\; i s + v - p} + w_{o,c,v}

    where ``C_g = Cin / groups`` input channels belong to output channel ``o``'s group ``g(o)``. It is
    :func:`maxplus_conv2d` of ``x[:, :, None, :]`` and ``w[:, :, None, :]`` (a unit height): same
    kernels, tie rule and derivatives, on every backend and engine.

    Parameters
    ----------
    x : array or tensor, shape (B, Cin, L)
    w : array or tensor, shape (Cout, Cin // groups, k)
        Real floating point, same library and device; dtypes promote. NumPy, CuPy and other
        array-API arrays, ``tropic.autodiff`` tensors and torch tensors (the last two differentiable).
    stride : int or (int,)
        Step between output positions, >= 1.
    padding : int or (int,)
        Positions added on each side, filled with the tropical zero (``-inf``), >= 0.
    groups : int
        ``Cin`` and ``Cout`` must both be divisible by it.
    return_indices : bool
        Also return the winner: flat index ``c * k + v`` into ``w[o]``, lowest on ties, ``-1`` if
        every candidate is ``-inf``.

    Returns
    -------
    y : array, shape (B, Cout, (L + 2 p - k) // s + 1)
    indices : array (only if ``return_indices``)

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.maxplus_conv1d(np.array([[[0.0, 3.0, 1.0, 2.0]]]), np.array([[[0.0, -1.0]]]))
    array([[[2., 3., 1.]]])
    """
    return _tropical_conv1d(MAX_PLUS, x, w, stride, padding, groups, return_indices)


def minplus_conv1d(
    x: Array,
    w: Array,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] = 0,
    groups: int = 1,
    *,
    return_indices: bool = False,
):
    """Min-plus 1-D convolution: :func:`maxplus_conv1d` with ``min`` and ``+inf`` padding.

    .. math:: y_{b,o,i} = \\min_{c,v} \\; x_{b,\\,g(o) C_g + c,\\; i s + v - p} + w_{o,c,v}
    """
    return _tropical_conv1d(MIN_PLUS, x, w, stride, padding, groups, return_indices)


def _tropical_conv1d(semiring, x, w, stride, padding, groups, return_indices):
    """The 1-D convolution as the 2-D one of ``(B, Cin, 1, L)`` by ``(Cout, Cin // groups, 1, k)``;
    winners ``(c * 1 + 0) * k + v = c * k + v`` need no translation."""
    engine = engine_of(x, w)
    raw_x, raw_w = (x, w) if engine is None else (engine.array(x), engine.array(w))
    xp = array_namespace(x=raw_x, w=raw_w)
    require_ndim("x", raw_x, 3, "B, Cin, L")
    require_ndim("w", raw_w, 3, "Cout, Cin // groups, k")
    (s,), (p,) = ints("stride", stride, 1, 1), ints("padding", padding, 1, 0)
    groups = positive_int("groups", groups)
    (B, C_in, L), (C_out, C_group, k) = tuple(raw_x.shape), tuple(raw_w.shape)
    if C_in % groups or C_out % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels (x.shape[1]={C_in}) and the "
            f"output channels (w.shape[0]={C_out})"
        )
    if C_group != C_in // groups:
        raise ValueError(
            f"w.shape[1] must be x.shape[1] // groups = {C_in // groups}, got w of shape "
            f"{(C_out, C_group, k)}"
        )
    if k < 1 or L + 2 * p < k:
        raise ValueError(f"the kernel (length {k}) must fit the padded input (length {L + 2 * p})")

    def reshape(t: Any, shape: tuple[int, ...]) -> Any:
        # the engines' tensors reshape differentiably with their own method (torch.compile traces it)
        return xp.reshape(t, shape) if engine is None else t.reshape(shape)

    x4, w4 = reshape(x, (B, C_in, 1, L)), reshape(w, (C_out, C_group, 1, k))
    y, indices = _tropical_conv2d(semiring, x4, w4, (1, s), (0, p), groups, True)
    out_shape = (B, C_out, (L + 2 * p - k) // s + 1)
    y = reshape(y, out_shape)
    return (y, reshape(indices, out_shape)) if return_indices else y


def conv2d_vjp(
    grad: Array,
    indices: Array,
    x_shape: tuple[int, int, int, int],
    w_shape: tuple[int, int, int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
) -> tuple[Array, Array]:
    """Vector-Jacobian product of :func:`maxplus_conv2d` / :func:`minplus_conv2d`.

    With ``(c*, u*, v*)`` the winner of ``y[b, o, i, j]``, its gradient goes to
    ``x[b, g(o) C_g + c*, i s_h + u* - p_h, j s_w + v* - p_w]`` (nothing if that is padding) and to
    ``w[o, c*, u*, v*]``; outputs without a winner send nothing.

    Returns ``(grad_x, grad_w)`` of shapes ``x_shape`` and ``w_shape``.
    """
    return checked_conv_vjp(CONV2D, ConvGeometry, grad, indices, x_shape, w_shape, stride, padding, groups)


def checked_conv_vjp(operator, geometry_type, grad, indices, x_shape, w_shape, stride, padding, groups):
    """A public ``conv*_vjp``: the arguments checked against ``geometry_type`` (its ``ndim``-axis
    shapes), then ``operator``'s vjp of arrays or of an engine's tensors."""
    raw_grad, raw_indices = arrays(grad, indices)
    xp = array_namespace(grad=raw_grad, indices=raw_indices)
    require_floating(xp, "grad", raw_grad)
    require_integer(xp, "indices", raw_indices)
    ndim = geometry_type.ndim
    x_shape, w_shape = shape_tuple("x_shape", x_shape, ndim=ndim), shape_tuple("w_shape", w_shape, ndim=ndim)
    geometry = geometry_type(x_shape, w_shape, stride, padding, groups)
    for name, a in (("grad", grad), ("indices", indices)):
        if tuple(a.shape) != geometry.out_shape:
            raise ValueError(f"{name} must have the output shape {geometry.out_shape}, got {tuple(a.shape)}")
    params = {
        "stride": list(geometry.stride),
        "padding": list(geometry.padding),
        "groups": geometry.groups,
        "maximise": True,  # the vjp is the same for both
    }
    return run_vjp(operator, grad, indices, (x_shape, w_shape), (True, True), params)


class ConvGeometry:
    """Checked shapes of a grouped, strided, padded 2-D convolution."""

    ndim = 4  # of x and w

    def __init__(self, x_shape: tuple, w_shape: tuple, stride: Any, padding: Any, groups: Any):
        for name, shape, layout in (
            ("x_shape", x_shape, "B, Cin, H, W"),
            ("w_shape", w_shape, "Cout, Cin // groups, kh, kw"),
        ):
            if len(shape) != 4:
                raise ValueError(f"{name} must have 4 dimensions ({layout}), got {shape}")
        self.stride = pair("stride", stride, 1)
        self.padding = pair("padding", padding, 0)
        self.groups = positive_int("groups", groups)
        B, C_in, H, W = x_shape
        C_out, C_group, kh, kw = w_shape
        if C_in % groups or C_out % groups:
            raise ValueError(
                f"groups={groups} must divide both the input channels (x.shape[1]={C_in}) and the "
                f"output channels (w.shape[0]={C_out})"
            )
        if C_group != C_in // groups:
            raise ValueError(
                f"w.shape[1] must be x.shape[1] // groups = {C_in // groups}, got w of shape {w_shape}"
            )
        (sh, sw), (ph, pw) = self.stride, self.padding
        H_out, W_out = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        if H_out < 1 or W_out < 1 or min(kh, kw) < 1:
            raise ValueError(
                f"the kernel ({kh}, {kw}) must fit the padded input ({H + 2 * ph}, {W + 2 * pw})"
            )
        self.x_shape, self.w_shape = x_shape, w_shape
        self.out_shape = (B, C_out, H_out, W_out)
        self.kernel_size = (kh, kw)

    def source_rows(self, u: int) -> np.ndarray:
        """Input row read by candidate row ``u`` for each output row (``-1``: padding)."""
        return self._source(u, 0)

    def source_cols(self, v: int) -> np.ndarray:
        return self._source(v, 1)

    def _source(self, offset: int, axis: int) -> np.ndarray:
        n_out, n_in = self.out_shape[2 + axis], self.x_shape[2 + axis]
        p = np.arange(n_out) * self.stride[axis] + offset - self.padding[axis]
        return np.where((p >= 0) & (p < n_in), p, -1)


def conv2d_reference(
    xp: ModuleType,
    semiring: Semiring,
    x: Array,
    w: Array,
    geometry: ConvGeometry,
    rounding: str | None = None,
    winners: bool = True,
) -> tuple[Array, Array]:
    """Reference kernel: one candidate ``(c, u, v)`` at a time, all groups and channels at once (the
    winners whatever ``winners`` says)."""
    require_no_rounding(rounding)
    B, C_in, _, _ = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    G = geometry.groups
    x5 = xp.reshape(x, (B, G, C_group) + tuple(x.shape[2:]))
    w5 = xp.reshape(w, (G, C_out // G, C_group, kh, kw))
    fill = semiring.zero

    def candidates():
        for c in range(C_group):
            for u in range(kh):
                rows = gather_or_fill(xp, x5[:, :, c, ...], geometry.source_rows(u), -2, fill)
                for v in range(kw):
                    patch = gather_or_fill(xp, rows, geometry.source_cols(v), -1, fill)
                    weight = w5[:, :, c, u, v][None, :, :, None, None]
                    yield (c * kh + u) * kw + v, patch[:, :, None, ...], weight

    out_shape = (B, G, C_out // G) + geometry.out_shape[2:]
    y, indices = reduce_candidates(
        xp, semiring, candidates(), out_shape, x.dtype, index_dtype(xp, C_group * kh * kw), device(x)
    )
    return xp.reshape(y, geometry.out_shape), xp.reshape(indices, geometry.out_shape)


def conv2d_vjp_reference(
    xp: ModuleType,
    grad: Array,
    indices: Array,
    geometry: ConvGeometry,
    needs: tuple[bool, bool] = (True, True),
) -> tuple[Array | None, Array | None]:
    """Reference vjp: per candidate, mask the gradient, sum it per group and scatter it to ``x``."""
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    G = geometry.groups
    _, _, H_out, W_out = geometry.out_shape
    require_winners(xp, "indices", indices, C_group * kh * kw)
    grad5 = xp.reshape(grad, (B, G, C_out // G, H_out, W_out))
    indices5 = xp.reshape(indices, (B, G, C_out // G, H_out, W_out))
    zeros = xp.zeros_like(grad5)
    grad_w = []
    grad_x_channels = []
    for c in range(C_group):
        grad_xc = xp.zeros((B, G, H, W), dtype=grad.dtype, device=device(grad))
        for u in range(kh):
            for v in range(kw):
                contribution = xp.where(indices5 == (c * kh + u) * kw + v, grad5, zeros)
                grad_w.append(xp.sum(contribution, axis=(0, 3, 4)))  # (G, C_out // G)
                per_group = xp.sum(contribution, axis=2)  # (B, G, H_out, W_out)
                spread = scatter_add(xp, per_group, geometry.source_rows(u), H, axis=-2)
                grad_xc = grad_xc + scatter_add(xp, spread, geometry.source_cols(v), W, axis=-1)
        grad_x_channels.append(grad_xc)
    grad_x = xp.reshape(xp.stack(grad_x_channels, axis=2), (B, C_in, H, W))
    grad_w = xp.stack(grad_w, axis=-1)  # (G, C_out // G, C_group * kh * kw)
    grad_w = xp.reshape(grad_w, (C_out, C_group, kh, kw))
    return (grad_x if needs[0] else None), (grad_w if needs[1] else None)


def _tropical_conv2d(semiring, x, w, stride, padding, groups, return_indices):
    engine = engine_of(x, w)
    raw_x, raw_w = (x, w) if engine is None else (engine.array(x), engine.array(w))
    xp, geometry = check(raw_x, raw_w, stride, padding, groups)
    params = {
        "stride": list(geometry.stride),
        "padding": list(geometry.padding),
        "groups": geometry.groups,
        "maximise": semiring.maximises,
    }
    if engine is None:
        y, indices = _run(xp, x, w, **params, winners=return_indices)
    else:
        y, indices = engine.apply(CONV2D, (x, w), params, winners=return_indices)
    return (y, indices) if return_indices else y


def check(x: Array, w: Array, stride: Any, padding: Any, groups: Any) -> tuple[ModuleType, ConvGeometry]:
    """The namespace and geometry of a convolution's checked arguments."""
    xp = array_namespace(x=x, w=w)
    require_floating(xp, "x", x)
    require_floating(xp, "w", w)
    require_ndim("x", x, 4, "B, Cin, H, W")
    require_ndim("w", w, 4, "Cout, Cin // groups, kh, kw")
    require_same_device(x=x, w=w)
    return xp, ConvGeometry(tuple(x.shape), tuple(w.shape), stride, padding, groups)


def _run(xp, x, w, *, stride, padding, groups, maximise, rounding=None, winners=True):
    """``(y, winners)``; ``winners=False``: the caller will not read them (a kernel may skip them)."""
    geometry = ConvGeometry(tuple(x.shape), tuple(w.shape), stride, padding, groups)
    dtype = xp.result_type(x.dtype, w.dtype)
    x, w = xp.astype(x, dtype, copy=False), xp.astype(w, dtype, copy=False)
    kernel = kernel_for("conv2d", xp) or conv2d_reference
    return kernel(xp, MAX_PLUS if maximise else MIN_PLUS, x, w, geometry, rounding, winners)


def _vjp(xp, grad, winners, shapes, needs, *, stride, padding, groups, maximise):
    geometry = ConvGeometry(tuple(shapes[0]), tuple(shapes[1]), stride, padding, groups)
    kernel = kernel_for("conv2d_vjp", xp) or conv2d_vjp_reference
    return kernel(xp, grad, winners, geometry, tuple(needs))


def _jvp(xp, tangents, winners, shapes, *, stride, padding, groups, maximise):
    """The tangent of ``y[b, o, i, j]``: ``x``'s at the pixel its winner ``(c, u, v)`` read (0 on the
    padding) plus ``w``'s at ``w[o, c, u, v]``."""
    tx, tw = tangents
    geometry = ConvGeometry(tuple(shapes[0]), tuple(shapes[1]), stride, padding, groups)
    B, C_in, H, W = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    dev = device(winners)
    known = tx if tx is not None else tw
    zero = xp.zeros((), dtype=known.dtype, device=dev)
    t = xp.astype(winners, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    out = xp.zeros(tuple(winners.shape), dtype=known.dtype, device=dev)

    def axis(n: int, shape: tuple[int, ...]) -> Array:
        return xp.reshape(xp.arange(n, dtype=xp.int64, device=dev), shape)

    if tx is not None:
        c, uv = t // (kh * kw), t % (kh * kw)
        row = axis(H_out, (1, 1, H_out, 1)) * sh + uv // kw - ph
        col = axis(W_out, (1, 1, 1, W_out)) * sw + uv % kw - pw
        channel = (axis(C_out, (1, C_out, 1, 1)) // (C_out // geometry.groups)) * C_group + c
        inside = (row >= 0) & (row < H) & (col >= 0) & (col < W)
        flat = ((axis(B, (B, 1, 1, 1)) * C_in + channel) * H + row) * W + col
        flat = xp.where(inside, flat, xp.zeros_like(flat))
        values = xp.reshape(xp.take(xp.reshape(tx, (-1,)), xp.reshape(flat, (-1,))), tuple(t.shape))
        out = out + xp.where(inside, values, zero)
    if tw is not None:
        flat = axis(C_out, (1, C_out, 1, 1)) * (C_group * kh * kw) + t
        out = out + xp.reshape(xp.take(xp.reshape(tw, (-1,)), xp.reshape(flat, (-1,))), tuple(t.shape))
    return xp.where(none, zero, out)


def _meta(shapes, *, stride, padding, groups, maximise):
    for name, shape, layout in (
        ("x", shapes[0], "B, Cin, H, W"),
        ("w", shapes[1], "Cout, Cin // groups, kh, kw"),
    ):
        if len(shape) != 4:
            raise ValueError(f"{name} must have 4 dimensions ({layout}), got shape {tuple(shape)}")
    geometry = ConvGeometry(tuple(shapes[0]), tuple(shapes[1]), stride, padding, groups)
    _, C_group, kh, kw = geometry.w_shape
    return geometry.out_shape, C_group * kh * kw


CONV2D = define(
    Operator(
        name="conv2d",
        inputs=("x", "w"),
        params=(("stride", "int[]"), ("padding", "int[]"), ("groups", int), ("maximise", bool)),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        skips_winners=True,
        kernel=("conv2d", ("xp", "semiring", "x", "w", "geometry", "rounding", "winners")),
        vjp_kernel=("conv2d_vjp", ("xp", "grad", "indices", "geometry", "needs")),
    )
)
