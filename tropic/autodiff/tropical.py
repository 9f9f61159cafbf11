"""The tropical operators on Tensors: tropic's own public functions, which accept Tensors.

``tropic.maxplus_matmul`` and the others take :class:`~tropic.autodiff.Tensor` operands as they take
arrays (:mod:`tropic.autodiff.engine` runs them and records their vjp); these names only make sure
that plain arrays and scalars become Tensors first, so that the result is always a Tensor. There is
no second implementation of a tropical operator here.
"""

from __future__ import annotations

from typing import Any

from ..core import conv as _conv
from ..core import extremum as _extremum
from ..core import matmul as _matmul
from ..core import maxout as _maxout
from ..core import morphology as _morphology
from .tensor import Tensor, operands

__all__ = [
    "dilation",
    "erosion",
    "maximum",
    "maxout",
    "maxplus_conv2d",
    "maxplus_matmul",
    "minimum",
    "minplus_conv2d",
    "minplus_matmul",
]


def maxplus_matmul(a: Any, b: Any, bias: Any = None) -> Tensor:
    """Max-plus product ``c[..., i, j] = max(bias[j], max_k a[..., i, k] + b[..., k, j])`` (see
    :func:`tropic.maxplus_matmul`); the gradient of ``c[i, j]`` goes to its winner."""
    a, b, *rest = operands(a, b, *(() if bias is None else (bias,)))
    return _matmul.maxplus_matmul(a, b, bias=rest[0] if rest else None)


def minplus_matmul(a: Any, b: Any, bias: Any = None) -> Tensor:
    """Min-plus product ``c[..., i, j] = min(bias[j], min_k a[..., i, k] + b[..., k, j])``; gradient
    to the argmin."""
    a, b, *rest = operands(a, b, *(() if bias is None else (bias,)))
    return _matmul.minplus_matmul(a, b, bias=rest[0] if rest else None)


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise ``max(a, b)`` with broadcasting; the gradient goes to ``b`` where ``b > a``, else
    to ``a`` (so ``a`` wins ties): :func:`tropic.maximum`."""
    return _extremum.maximum(*operands(a, b))


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise ``min(a, b)``; the gradient goes to ``b`` where ``b < a``, else to ``a``."""
    return _extremum.minimum(*operands(a, b))


def dilation(x: Any, structure: Any, mode: str = "neutral", **kwargs: Any) -> Tensor:
    """Grey-level dilation ``(f ⊕ s)(p) = max_y f(p - y) + s(y)`` over ``axes`` (default the last
    two; ``origin=``, ``axes=`` as :func:`tropic.dilation`); gradients to ``x`` and ``structure``."""
    return _morphology.dilation(*operands(x, structure), mode=mode, **kwargs)


def erosion(x: Any, structure: Any, mode: str = "neutral", **kwargs: Any) -> Tensor:
    """Grey-level erosion ``(f ⊖ s)(p) = min_y f(p + y) - s(y)`` over ``axes`` (default the last
    two; as :func:`tropic.erosion`); gradients to ``x`` and ``structure``."""
    return _morphology.erosion(*operands(x, structure), mode=mode, **kwargs)


def maxplus_conv2d(
    x: Any, w: Any, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, groups: int = 1
) -> Tensor:
    """Max-plus convolution ``y[b,o,i,j] = max_{c,u,v} x[b, c, i s + u - p, j s + v - p] + w[o,c,u,v]``
    (see :func:`tropic.maxplus_conv2d`); gradients to the winners."""
    return _conv.maxplus_conv2d(*operands(x, w), stride, padding, groups)


def minplus_conv2d(
    x: Any, w: Any, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, groups: int = 1
) -> Tensor:
    """Min-plus convolution (:func:`tropic.minplus_conv2d`); gradients to the winners."""
    return _conv.minplus_conv2d(*operands(x, w), stride, padding, groups)


def maxout(x: Any, pieces: int, axis: int = -1) -> Tensor:
    """Maxout ``y[.., j, ..] = max_p x[.., j pieces + p, ..]`` (see :func:`tropic.maxout`); gradient
    to the winning piece."""
    return _maxout.maxout(*operands(x), pieces, axis)
