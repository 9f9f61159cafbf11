"""Matrix product (the ordinary, linear one)."""

from __future__ import annotations

from typing import Any

from ..core._array_api import Array
from .tensor import Tensor, operands, record

__all__ = ["matmul"]


def matmul(a: Any, b: Any) -> Tensor:
    """``a @ b`` with the array API's shapes (1-D operands, broadcast batch axes).

    Gradients ``g b^T`` and ``a^T g`` (summed over broadcast batch axes).
    """
    a, b = operands(a, b)
    xp = a.xp
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"matmul needs operands with at least 1 dimension, got shapes {a.shape} and {b.shape}"
        )

    def vjp(g: Array) -> tuple[Array | None, Array | None]:
        # Back to the matrix forms: 1-D a is a row, 1-D b a column.
        a2 = a.data if a.ndim > 1 else xp.reshape(a.data, (1, a.shape[0]))
        b2 = b.data if b.ndim > 1 else xp.reshape(b.data, (b.shape[0], 1))
        g2 = g if b.ndim > 1 else xp.expand_dims(g, axis=-1)
        g2 = g2 if a.ndim > 1 else xp.expand_dims(g2, axis=-2)
        grad_a = grad_b = None
        if a.requires_grad:
            grad_a = g2 @ xp.matrix_transpose(b2)
            grad_a = grad_a if a.ndim > 1 else grad_a[..., 0, :]
        if b.requires_grad:
            grad_b = xp.matrix_transpose(a2) @ g2
            grad_b = grad_b if b.ndim > 1 else grad_b[..., 0]
        return grad_a, grad_b

    return record(a.data @ b.data, (a, b), vjp)
