"""Elementwise operations with their derivatives; binary ones broadcast like the array API."""

from __future__ import annotations

import numbers
from typing import Any

from ..core._array_api import Array
from .tensor import Tensor, operands, record

__all__ = [
    "abs",
    "add",
    "clamp",
    "div",
    "exp",
    "log",
    "mul",
    "neg",
    "pow",
    "relu",
    "sigmoid",
    "softplus",
    "sqrt",
    "sub",
    "tanh",
    "where",
]


def add(a: Any, b: Any) -> Tensor:
    """``a + b``; gradients ``g`` to both (summed back over broadcast axes)."""
    a, b = operands(a, b)
    return record(a.data + b.data, (a, b), lambda g: (g, g))


def sub(a: Any, b: Any) -> Tensor:
    """``a - b``; gradients ``g`` and ``-g``."""
    a, b = operands(a, b)
    return record(a.data - b.data, (a, b), lambda g: (g, -g))


def mul(a: Any, b: Any) -> Tensor:
    """``a * b``; gradients ``g b`` and ``g a``."""
    a, b = operands(a, b)
    return record(a.data * b.data, (a, b), lambda g: (g * b.data, g * a.data))


def div(a: Any, b: Any) -> Tensor:
    """``a / b``; gradients ``g / b`` and ``-g a / b^2``."""
    a, b = operands(a, b)
    return record(
        a.data / b.data,
        (a, b),
        lambda g: (g / b.data, -(g * a.data) / (b.data * b.data) if b.requires_grad else None),
    )


def neg(x: Any) -> Tensor:
    """``-x``; gradient ``-g``."""
    (x,) = operands(x)
    return record(-x.data, (x,), lambda g: (-g,))


def pow(x: Any, exponent: float) -> Tensor:
    """``x ** p`` for a scalar ``p``; gradient ``g p x^(p-1)``."""
    if not isinstance(exponent, numbers.Real) or isinstance(exponent, bool):
        raise TypeError(f"exponent must be a real number (int or float), got {type(exponent).__name__}")
    exponent = int(exponent) if isinstance(exponent, numbers.Integral) else float(exponent)
    (x,) = operands(x)
    if exponent == 2:  # exact and cheaper than the general power
        return record(x.data * x.data, (x,), lambda g: (g * (2 * x.data),))
    return record(x.data**exponent, (x,), lambda g: (g * (exponent * x.data ** (exponent - 1)),))


def exp(x: Any) -> Tensor:
    """``e^x``; gradient ``g e^x``."""
    (x,) = operands(x)
    y = x.xp.exp(x.data)
    return record(y, (x,), lambda g: (g * y,))


def log(x: Any) -> Tensor:
    """Natural logarithm; gradient ``g / x`` (``inf`` at 0, as the math says)."""
    (x,) = operands(x)
    return record(x.xp.log(x.data), (x,), lambda g: (g / x.data,))


def sqrt(x: Any) -> Tensor:
    """Square root; gradient ``g / (2 sqrt(x))`` (``inf`` at 0)."""
    (x,) = operands(x)
    y = x.xp.sqrt(x.data)
    return record(y, (x,), lambda g: (g / (2 * y),))


def abs(x: Any) -> Tensor:
    """``|x|``; gradient ``g sign(x)``, 0 at ``x = 0``."""
    (x,) = operands(x)
    return record(x.xp.abs(x.data), (x,), lambda g: (g * x.xp.sign(x.data),))


def relu(x: Any) -> Tensor:
    """``max(x, 0)``; gradient ``g [x > 0]`` (0 at ``x = 0``). NaN propagates."""
    (x,) = operands(x)
    xp = x.xp
    zero = xp.zeros((), dtype=x.dtype, device=x.device)
    return record(xp.maximum(x.data, zero), (x,), lambda g: (xp.where(x.data > 0, g, xp.zeros_like(g)),))


def tanh(x: Any) -> Tensor:
    """Hyperbolic tangent; gradient ``g (1 - tanh(x)^2)``."""
    (x,) = operands(x)
    y = x.xp.tanh(x.data)
    return record(y, (x,), lambda g: (g * (1 - y * y),))


def _sigmoid(xp: Any, x: Array) -> Array:
    # exp of a non-positive number only: no overflow for large |x|.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid(x: Any) -> Tensor:
    """Logistic function ``1 / (1 + e^{-x})`` (stable for large ``|x|``); gradient ``g s (1 - s)``."""
    (x,) = operands(x)
    y = _sigmoid(x.xp, x.data)
    return record(y, (x,), lambda g: (g * (y * (1 - y)),))


def softplus(x: Any) -> Tensor:
    """``log(1 + e^x)``, computed as ``max(x, 0) + log1p(e^{-|x|})``; gradient ``g sigmoid(x)``."""
    (x,) = operands(x)
    xp = x.xp
    zero = xp.zeros((), dtype=x.dtype, device=x.device)
    y = xp.maximum(x.data, zero) + xp.log1p(xp.exp(-xp.abs(x.data)))
    return record(y, (x,), lambda g: (g * _sigmoid(xp, x.data),))


def clamp(x: Any, min: Any = None, max: Any = None) -> Tensor:
    """``x`` limited to ``[min, max]``: ``minimum(maximum(x, min), max)``.

    The bounds are constants (scalars or arrays; None: no bound). The gradient passes where
    ``min <= x <= max`` (bounds included, so a value exactly at a bound still learns) and is 0
    outside.
    """
    for name, bound in (("min", min), ("max", max)):
        if isinstance(bound, Tensor) and bound.requires_grad:
            raise TypeError(f"clamp's {name} is a constant; use maximum/minimum for a learnable bound")
    (x,) = operands(x)
    xp = x.xp
    lo = None if min is None else operands(x, min)[1].data
    hi = None if max is None else operands(x, max)[1].data
    y = x.data if lo is None else xp.maximum(x.data, lo)
    y = y if hi is None else xp.minimum(y, hi)

    def vjp(g: Array) -> tuple[Array]:
        # The mask is rebuilt here rather than kept: x is alive in the graph anyway.
        inside = None if lo is None else x.data >= lo
        if hi is not None:
            inside = x.data <= hi if inside is None else inside & (x.data <= hi)
        return (g if inside is None else xp.where(inside, g, xp.zeros_like(g)),)

    return record(y, (x,), vjp)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` else ``b``; gradients ``g`` masked by ``condition`` and by its negation.

    ``condition`` is a boolean array or a Tensor (used as a constant).
    """
    cond = condition.data if isinstance(condition, Tensor) else condition
    a, b = operands(a, b)
    xp = a.xp
    if not xp.isdtype(cond.dtype, "bool"):
        raise TypeError(f"condition must be a boolean array, got dtype {cond.dtype}")

    def vjp(g: Array) -> tuple[Array, Array]:
        zeros = xp.zeros_like(g)
        return xp.where(cond, g, zeros), xp.where(cond, zeros, g)

    return record(xp.where(cond, a.data, b.data), (a, b), vjp)
