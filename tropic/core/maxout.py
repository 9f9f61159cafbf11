"""Maxout: the max over groups of consecutive entries along an axis."""

from __future__ import annotations

import operator
from types import ModuleType

from ._array_api import Array, array_namespace, device, index_dtype
from .checks import positive_int, require_floating, require_integer, require_winners, shape_tuple
from .dispatch import kernel_for
from .engines import arrays, engine_of, run_vjp
from .semiring import MAX_PLUS, reduce_candidates
from .spec import Operator, define


def maxout(x: Array, pieces: int, axis: int = -1, *, return_indices: bool = False):
    """Maxout over groups of ``pieces`` consecutive entries along ``axis``.

    .. math:: y_{\\dots j \\dots} = \\max_{0 \\le p < P} x_{\\dots,\\, j P + p,\\, \\dots},
              \\quad P = \\mathrm{pieces}

    Parameters
    ----------
    x : array
        Real floating point; ``x.shape[axis]`` must be a multiple of ``pieces``.
    pieces : int
        Group size, >= 1.
    axis : int
        The axis that is reduced by a factor ``pieces``.
    return_indices : bool
        Also return the winning ``p`` of every output (lowest on ties, first NaN if any, ``-1`` if
        the whole group is ``-inf``).

    Returns
    -------
    y : array, ``x.shape`` with ``shape[axis]`` divided by ``pieces``
    indices : array (only if ``return_indices``)

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.maxout(np.array([1.0, 5.0, 2.0, -1.0]), 2)
    array([5., 2.])
    """
    engine = engine_of(x)
    xp, params = check(x if engine is None else engine.array(x), pieces, axis)
    if engine is None:
        y, indices = _run(xp, x, **params)
    else:
        y, indices = engine.apply(MAXOUT, (x,), params)
    return (y, indices) if return_indices else y


def check(x: Array, pieces: int, axis: int) -> tuple[ModuleType, dict[str, int]]:
    """The namespace and params of a checked maxout (``axis`` non-negative)."""
    xp = array_namespace(x=x)
    require_floating(xp, "x", x)
    pieces = positive_int("pieces", pieces)
    axis = _check_axis(x.ndim, tuple(x.shape), axis)
    if x.shape[axis] % pieces:
        raise ValueError(f"x.shape[{axis}] = {x.shape[axis]} must be a multiple of pieces = {pieces}")
    return xp, {"pieces": pieces, "axis": axis}


def _run(
    xp: ModuleType, x: Array, *, pieces: int, axis: int, rounding: str | None = None
) -> tuple[Array, Array]:
    # No sums: half-precision operands widened to float32 select exactly as in their own dtype.
    grouped = _grouped(xp, x, pieces, axis)  # (..., m, pieces), the groups on the last axis
    kernel = kernel_for("maxout", xp) or maxout_reference
    y, indices = kernel(xp, grouped)
    return xp.moveaxis(y, -1, axis), xp.moveaxis(indices, -1, axis)


def _vjp(xp, grad, winners, shapes, needs, *, pieces, axis):
    if not needs[0]:
        return (None,)
    return (_spread(xp, grad, winners, tuple(shapes[0]), pieces, axis),)


def _jvp(xp, tangents, winners, shapes, *, pieces, axis):
    """The tangent of each output: ``x``'s at the winning piece (0 where there is none)."""
    (tx,) = tangents
    grouped = _grouped(xp, tx, pieces, axis)  # (..., m, pieces)
    k = xp.moveaxis(xp.astype(winners, xp.int64), axis, -1)
    none = k < 0
    values = xp.take_along_axis(grouped, xp.where(none, xp.zeros_like(k), k)[..., None], axis=-1)[..., 0]
    values = xp.where(none, xp.zeros((), dtype=tx.dtype, device=device(tx)), values)
    return xp.moveaxis(values, -1, axis)


def _meta(shapes, *, pieces, axis):
    shape = tuple(shapes[0])
    pieces = positive_int("pieces", pieces)
    axis = _check_axis(len(shape), shape, axis)
    if shape[axis] % pieces:
        raise ValueError(f"x.shape[{axis}] = {shape[axis]} must be a multiple of pieces = {pieces}")
    return shape[:axis] + (shape[axis] // pieces,) + shape[axis + 1 :], pieces


MAXOUT = define(
    Operator(
        name="maxout",
        inputs=("x",),
        params=(("pieces", int), ("axis", int)),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        kernel=("maxout", ("xp", "grouped")),
        vjp_kernel=("maxout_vjp", ("xp", "grad", "indices", "pieces")),
    )
)


def maxout_vjp(grad: Array, indices: Array, x_shape: tuple[int, ...], pieces: int, axis: int = -1) -> Array:
    """Vector-Jacobian product of :func:`maxout`:
    ``dL/dx[..., j * pieces + p, ...] = g[..., j, ...] [indices[..., j, ...] = p]``."""
    raw_grad, raw_indices = arrays(grad, indices)
    xp = array_namespace(grad=raw_grad, indices=raw_indices)
    require_floating(xp, "grad", raw_grad)
    require_integer(xp, "indices", raw_indices)
    x_shape = shape_tuple("x_shape", x_shape, 1)
    pieces = positive_int("pieces", pieces)
    axis = _check_axis(len(x_shape), x_shape, axis)
    if x_shape[axis] % pieces:
        raise ValueError(f"x_shape[{axis}] = {x_shape[axis]} must be a multiple of pieces = {pieces}")
    out_shape = x_shape[:axis] + (x_shape[axis] // pieces,) + x_shape[axis + 1 :]
    for name, a in (("grad", grad), ("indices", indices)):
        if tuple(a.shape) != out_shape:
            raise ValueError(f"{name} must have the output shape {out_shape}, got {tuple(a.shape)}")
    return run_vjp(MAXOUT, grad, indices, (x_shape,), (True,), {"pieces": pieces, "axis": axis})[0]


def _spread(xp: ModuleType, grad: Array, indices: Array, x_shape: tuple, pieces: int, axis: int) -> Array:
    """Each output's gradient at its winning piece, in ``x``'s shape."""
    grad, indices = xp.moveaxis(grad, axis, -1), xp.moveaxis(indices, axis, -1)
    kernel = kernel_for("maxout_vjp", xp) or maxout_vjp_reference
    spread = kernel(xp, grad, indices, pieces)  # (..., m, pieces)
    moved = grad.shape[:-1] + (x_shape[axis],)
    return xp.moveaxis(xp.reshape(spread, moved), -1, axis)


def maxout_vjp_reference(xp: ModuleType, grad: Array, indices: Array, pieces: int) -> Array:
    """Reference vjp on the grouped layout: ``grad`` and ``indices`` (..., m) -> (..., m, pieces)."""
    require_winners(xp, "indices", indices, pieces)
    # One broadcast comparison, not one pass per piece (wide groups made that loop dominate).
    hit = xp.arange(pieces, dtype=indices.dtype, device=device(grad)) == indices[..., None]
    return xp.where(hit, grad[..., None], xp.zeros_like(grad)[..., None])


def maxout_reference(xp: ModuleType, grouped: Array) -> tuple[Array, Array]:
    """Reference kernel: ``grouped`` (..., m, pieces) -> max over the last axis, with winners."""
    pieces = grouped.shape[-1]
    candidates = ((p, grouped[..., p], None) for p in range(pieces))
    return reduce_candidates(
        xp,
        MAX_PLUS,
        candidates,
        tuple(grouped.shape[:-1]),
        grouped.dtype,
        index_dtype(xp, pieces),
        device(grouped),
    )


def _grouped(xp: ModuleType, x: Array, pieces: int, axis: int) -> Array:
    moved = xp.moveaxis(x, axis, -1)
    return xp.reshape(moved, tuple(moved.shape[:-1]) + (moved.shape[-1] // pieces, pieces))


def _check_axis(ndim: int, shape: tuple[int, ...], axis: int) -> int:
    try:
        index = operator.index(axis) if not isinstance(axis, bool) else None
    except TypeError:
        index = None
    if index is None or not -ndim <= index < ndim:
        raise ValueError(f"axis must be an int in [{-ndim}, {ndim}) for x of shape {shape}, got {axis!r}")
    return index % ndim
