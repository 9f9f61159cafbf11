"""Reductions: sum, mean, max, min.

``max`` and ``min`` send the gradient of each reduced slice to ONE winner, the lowest (row-major)
index on ties, as the core's tropical operators do (a slice that is all the tropical zero sends
nothing). Only the integer winners are kept for the backward pass.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

from ..core._array_api import Array, device, index_dtype
from .tensor import Tensor, needs_grad, operands, record

__all__ = ["max", "mean", "min", "sum"]


def normalize_axes(axis: int | tuple[int, ...] | None, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """``axis`` (None, an int or a tuple of ints, negative allowed) as sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    bound = builtins.max(ndim, 1)  # a 0-d tensor accepts axis 0 / -1, like NumPy's sum
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int) or not -bound <= a < bound:
            raise ValueError(f"{name} must be None or ints in [{-ndim}, {ndim}), got {axis!r}")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated axes: {axis!r}")
    return tuple(sorted(out)) if ndim else ()


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with the reduced ``axes`` set to 1 (the keepdims shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def sum(x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes if None); the gradient broadcasts ``g`` back over them."""
    (x,) = operands(x)
    xp, shape = x.xp, x.shape
    axes = normalize_axes(axis, x.ndim)
    y = xp.sum(x.data, axis=axes, keepdims=keepdims)

    def vjp(g: Array) -> tuple[Array]:
        return (xp.broadcast_to(xp.reshape(g, _kept_shape(shape, axes)), shape),)

    return record(y, (x,), vjp)


def mean(x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes if None): ``sum / n``."""
    (x,) = operands(x)
    axes = normalize_axes(axis, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    return sum(x, axis=axes, keepdims=keepdims) / float(n)


def max(x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis`` (all axes if None).

    The gradient of each output goes to one winner: the lowest row-major index among the maxima of
    its slice (the first NaN if there is one; none if the slice is all ``-inf``).
    """
    return _extremum(x, axis, keepdims, maximises=True)


def min(x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis`` (all axes if None); the gradient goes to the lowest-index minimum (none if
    the slice is all ``+inf``)."""
    return _extremum(x, axis, keepdims, maximises=False)


def _extremum(x: Any, axis: Any, keepdims: bool, maximises: bool) -> Tensor:
    (x,) = operands(x)
    xp, shape = x.xp, x.shape
    axes = normalize_axes(axis, x.ndim)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    n = math.prod(shape[a] for a in axes)
    if n == 0:
        raise ValueError(f"cannot reduce over zero-size axes {axes} of a tensor of shape {shape}")
    reduce = xp.max if maximises else xp.min
    y = reduce(x.data, axis=axes, keepdims=keepdims)
    if not needs_grad(x):
        return Tensor(y)
    # The reduced axes go last and become one axis of n entries; argmax/argmin give the first
    # occurrence (the lowest row-major index), kept in the smallest integer type that fits.
    perm = kept + axes
    grouped = xp.reshape(xp.permute_dims(x.data, perm), tuple(shape[i] for i in kept) + (n,))
    winners = (xp.argmax if maximises else xp.argmin)(grouped, axis=-1, keepdims=True)
    # A slice that is all the tropical zero (-inf for max, +inf for min) sends nothing, as in core.
    zero = -math.inf if maximises else math.inf
    winners = xp.where(xp.reshape(y, winners.shape) == zero, xp.asarray(-1, dtype=winners.dtype), winners)
    winners = xp.astype(winners, index_dtype(xp, n))

    def vjp(g: Array) -> tuple[Array]:
        g = xp.reshape(g, winners.shape)
        hit = xp.arange(n, dtype=winners.dtype, device=device(g)) == winners  # (..., n) one-hot
        spread = xp.where(hit, g, xp.zeros_like(g))
        permuted = xp.reshape(spread, tuple(shape[i] for i in perm))
        inverse = tuple(perm.index(i) for i in range(len(perm)))
        return (xp.permute_dims(permuted, inverse),)

    return record(y, (x,), vjp)
