"""Shape operations: reshape, axis permutations, inserting/removing axes, joining, indexing."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

from ..core._array_api import Array, scatter_add
from .reductions import normalize_axes
from .tensor import Tensor, operands, record

__all__ = [
    "concatenate",
    "expand_dims",
    "flip",
    "getitem",
    "permute_dims",
    "reshape",
    "squeeze",
    "stack",
    "transpose",
]


def reshape(x: Any, shape: int | Sequence[int]) -> Tensor:
    """``x`` with a new shape of the same size (one entry may be -1); gradient reshaped back."""
    (x,) = operands(x)
    xp, old = x.xp, x.shape
    shape = (operator.index(shape),) if isinstance(shape, int) else tuple(operator.index(n) for n in shape)
    return record(xp.reshape(x.data, shape), (x,), lambda g: (xp.reshape(g, old),))


def permute_dims(x: Any, axes: Sequence[int]) -> Tensor:
    """Axes reordered: output axis ``i`` is input axis ``axes[i]``; gradient permuted back."""
    (x,) = operands(x)
    xp = x.xp
    given = tuple(axes)
    axes = tuple(operator.index(a) % x.ndim if -x.ndim <= operator.index(a) < x.ndim else -1 for a in given)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"axes must be a permutation of range({x.ndim}), got {given}")
    inverse = tuple(axes.index(i) for i in range(x.ndim))
    return record(xp.permute_dims(x.data, axes), (x,), lambda g: (xp.permute_dims(g, inverse),))


def transpose(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    """:func:`permute_dims`, with all axes reversed when ``axes`` is None (a matrix's transpose)."""
    (x,) = operands(x)
    return permute_dims(x, tuple(reversed(range(x.ndim))) if axes is None else axes)


def expand_dims(x: Any, axis: int = 0) -> Tensor:
    """``x`` with a new axis of length 1 at position ``axis`` (of the result)."""
    (x,) = operands(x)
    ndim = x.ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim}) for a result of {ndim} dimensions, got {axis}")
    axis %= ndim
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x: Any, axis: int | tuple[int, ...] | None = None) -> Tensor:
    """``x`` without the given length-1 axes (all length-1 axes if None)."""
    (x,) = operands(x)
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axes(axis, x.ndim)
        if any(x.shape[a] != 1 for a in axes):
            raise ValueError(f"can only squeeze axes of length 1, got axis={axis!r} for shape {x.shape}")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Tensors joined along an existing ``axis``; each gets its slice of the gradient back."""
    tensors = operands(*tensors)
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    xp = tensors[0].xp
    ndim = tensors[0].ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim}), got {axis}")
    axis %= ndim
    bounds = np.cumsum([0] + [t.shape[axis] for t in tensors]).tolist()

    def vjp(g: Array) -> list[Array]:
        head = (slice(None),) * axis
        return [g[(*head, slice(lo, hi), ...)] for lo, hi in itertools.pairwise(bounds)]

    return record(xp.concat([t.data for t in tensors], axis=axis), tensors, vjp)


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Tensors of one shape joined along a new ``axis``; each gets its slice of the gradient back."""
    tensors = operands(*tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    xp = tensors[0].xp
    ndim = tensors[0].ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim}), got {axis}")
    axis %= ndim

    def vjp(g: Array) -> list[Array]:
        head = (slice(None),) * axis
        return [g[(*head, i, ...)] for i in range(len(tensors))]

    return record(xp.stack([t.data for t in tensors], axis=axis), tensors, vjp)


def _is_basic(key: tuple[Any, ...]) -> bool:
    return all(
        k is None or k is Ellipsis or isinstance(k, slice) or (isinstance(k, int) and not isinstance(k, bool))
        for k in key
    )


def getitem(x: Any, key: Any) -> Tensor:
    """``x[key]`` for basic indices (ints, slices, None, ``...``), integer arrays and boolean masks.

    The gradient is scattered back into zeros of ``x``'s shape; entries selected more than once
    receive the sum of their gradients.
    """
    (x,) = operands(x)
    xp = x.xp
    key = key if isinstance(key, tuple) else (key,)
    key = tuple(k.data if isinstance(k, Tensor) else k for k in key)
    shape, dtype, dev = x.shape, x.dtype, x.device

    def vjp(g: Array) -> tuple[Array]:
        out = xp.zeros(shape, dtype=dtype, device=dev)
        if _is_basic(key):
            # Our own array: no caller's data is touched. The axes that None inserted have length
            # 1; the array API's setitem takes no None, so they are dropped from key and g.
            if any(k is None for k in key):
                target = tuple(k for k in key if k is not None)
                out[target] = xp.reshape(g, tuple(out[target].shape))
            else:
                out[key] = g
        elif isinstance(out, np.ndarray):
            np.add.at(out, key, g)  # sums repeated indices
        elif array_api_compat.is_cupy_array(out):
            import cupyx

            cupyx.scatter_add(out, key, g)
        else:
            # Flat positions of the selected entries, then one scatter-add over them.
            size = math.prod(shape)
            positions = xp.reshape(xp.arange(size, dtype=xp.int64, device=dev), shape)[key]
            flat = scatter_add(xp, xp.reshape(g, (-1,)), xp.reshape(positions, (-1,)), size, axis=0)
            out = xp.reshape(flat, shape)
        return (out,)

    return record(x.data[key], (x,), vjp)


def flip(x: Any, axis: int | Sequence[int]) -> Tensor:
    """``x`` reversed along ``axis`` (an int or a sequence of ints); the gradient is flipped back."""
    (x,) = operands(x)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    key = [slice(None)] * x.ndim
    for a in axes:
        key[a % x.ndim] = slice(None, None, -1)
    return getitem(x, tuple(key))
