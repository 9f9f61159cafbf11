"""The tropical operators with gradients: the core's forward (``return_indices=True``) and its vjp.

Forward passes run the core's public functions; with a gradient to come they also return the
integer winners, and only those (plus shapes) are kept for the backward pass, which is the core's
``*_vjp`` function. There is no second implementation of a tropical operator here.
"""

from __future__ import annotations

from typing import Any

from ..core import conv as _conv
from ..core import matmul as _matmul
from ..core import maxout as _maxout
from ..core import morphology as _morphology
from ..core._array_api import Array
from .tensor import Tensor, needs_grad, operands, record

__all__ = [
    "dilation",
    "erosion",
    "maxout",
    "maxplus_conv2d",
    "maxplus_matmul",
    "minplus_conv2d",
    "minplus_matmul",
]


def _tropical(forward: Any, vjp: Any, parents: tuple[Tensor, ...], *args: Any, **kwargs: Any) -> Tensor:
    """Run ``forward(*data, *args, **kwargs)``; with a tape, keep its winners for ``vjp(g, winners)``."""
    data = tuple(p.data for p in parents)
    if not needs_grad(*parents):
        return Tensor(forward(*data, *args, **kwargs))
    out, indices = forward(*data, *args, return_indices=True, **kwargs)
    return record(out, parents, lambda g: vjp(g, indices))


def _matmul_op(forward: Any, a: Any, b: Any) -> Tensor:
    a, b = operands(a, b)
    a_shape, b_shape = a.shape, b.shape
    return _tropical(forward, lambda g, idx: _matmul.matmul_vjp(g, idx, a_shape, b_shape), (a, b))


def maxplus_matmul(a: Any, b: Any) -> Tensor:
    """Max-plus product ``c[..., i, j] = max_k a[..., i, k] + b[..., k, j]`` (see
    :func:`tropic.maxplus_matmul`); the gradient of ``c[i, j]`` goes to its winning ``a[i, k*]`` and
    ``b[k*, j]`` (:func:`tropic.matmul_vjp`)."""
    return _matmul_op(_matmul.maxplus_matmul, a, b)


def minplus_matmul(a: Any, b: Any) -> Tensor:
    """Min-plus product ``c[..., i, j] = min_k a[..., i, k] + b[..., k, j]``; gradient to the argmin."""
    return _matmul_op(_matmul.minplus_matmul, a, b)


def _morphology_op(forward: Any, vjp: Any, x: Any, structure: Any, mode: str) -> Tensor:
    x, s = operands(x, structure)
    x_shape, s_shape = x.shape, s.shape
    return _tropical(forward, lambda g, idx: vjp(g, idx, x_shape, s_shape, mode=mode), (x, s), mode=mode)


def dilation(x: Any, structure: Any, mode: str = "neutral") -> Tensor:
    """Grey-level dilation ``(f ⊕ s)(p) = max_y f(p - y) + s(y)`` on the last two axes (see
    :func:`tropic.dilation`); gradients to ``x`` and ``structure`` (:func:`tropic.dilation_vjp`)."""
    return _morphology_op(_morphology.dilation, _morphology.dilation_vjp, x, structure, mode)


def erosion(x: Any, structure: Any, mode: str = "neutral") -> Tensor:
    """Grey-level erosion ``(f ⊖ s)(p) = min_y f(p + y) - s(y)`` on the last two axes (see
    :func:`tropic.erosion`); gradients to ``x`` and ``structure`` (:func:`tropic.erosion_vjp`)."""
    return _morphology_op(_morphology.erosion, _morphology.erosion_vjp, x, structure, mode)


def _conv2d(forward: Any, x: Any, w: Any, stride: Any, padding: Any, groups: int) -> Tensor:
    x, w = operands(x, w)
    x_shape, w_shape = x.shape, w.shape

    def vjp(g: Array, idx: Array) -> tuple[Array, Array]:
        return _conv.conv2d_vjp(g, idx, x_shape, w_shape, stride, padding, groups)

    return _tropical(forward, vjp, (x, w), stride, padding, groups)


def maxplus_conv2d(
    x: Any, w: Any, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, groups: int = 1
) -> Tensor:
    """Max-plus convolution ``y[b,o,i,j] = max_{c,u,v} x[b, c, i s + u - p, j s + v - p] + w[o,c,u,v]``
    (see :func:`tropic.maxplus_conv2d`); gradients to the winners (:func:`tropic.conv2d_vjp`)."""
    return _conv2d(_conv.maxplus_conv2d, x, w, stride, padding, groups)


def minplus_conv2d(
    x: Any, w: Any, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, groups: int = 1
) -> Tensor:
    """Min-plus convolution (:func:`tropic.minplus_conv2d`); gradients to the winners."""
    return _conv2d(_conv.minplus_conv2d, x, w, stride, padding, groups)


def maxout(x: Any, pieces: int, axis: int = -1) -> Tensor:
    """Maxout ``y[.., j, ..] = max_p x[.., j pieces + p, ..]`` (see :func:`tropic.maxout`); gradient
    to the winning piece (:func:`tropic.maxout_vjp`)."""
    (x,) = operands(x)
    x_shape = x.shape
    return _tropical(
        _maxout.maxout,
        lambda g, idx: (_maxout.maxout_vjp(g, idx, x_shape, pieces, axis),),
        (x,),
        pieces,
        axis,
    )
