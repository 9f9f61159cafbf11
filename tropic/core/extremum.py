"""Elementwise ``maximum`` and ``minimum`` with tropic's tie rule: the tropical sum of two arrays.

``maximum(a, b)`` has NumPy's values (``np.maximum``: NaN propagates; on a tie, ``b``'s value, which
decides the sign of a zero) and sends the gradient to ``b`` only where ``b > a``, else to ``a``: the
first operand wins ties (``torch.maximum`` would split a tie in halves). This is the rule the layers
use for a bias that competes with a product (``max(b, x W^T)``: ties go to the bias).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ._array_api import Array, array_namespace, device, sum_to_shape
from .checks import require_floating, require_same_device
from .engines import engine_of
from .semiring import MAX_PLUS, MIN_PLUS, Semiring
from .spec import Operator, define

__all__ = ["maximum", "minimum"]


def maximum(a: Array, b: Array, *, return_indices: bool = False):
    """Elementwise ``max(a, b)`` (broadcasting), the gradient to ``b`` where ``b > a``, else to ``a``.

    .. math:: y = \\max(a, b), \\qquad \\frac{\\partial y}{\\partial b} = [b > a], \\quad
              \\frac{\\partial y}{\\partial a} = 1 - [b > a]

    Parameters
    ----------
    a, b : array or tensor
        Real floating point, one library (arrays, ``tropic.autodiff`` or torch tensors), broadcastable.
    return_indices : bool
        Also return the winner: ``1`` where ``b > a``, else ``0`` (int8).

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.maximum(np.array([1.0, 2.0, 0.0]), np.array([3.0, 2.0, -0.0]))
    array([ 3.,  2., -0.])
    """
    return _extremum(MAX_PLUS, a, b, return_indices)


def minimum(a: Array, b: Array, *, return_indices: bool = False):
    """Elementwise ``min(a, b)``, the gradient to ``b`` where ``b < a``, else to ``a`` (see
    :func:`maximum`)."""
    return _extremum(MIN_PLUS, a, b, return_indices)


def _extremum(semiring: Semiring, a: Array, b: Array, return_indices: bool):
    engine = engine_of(a, b)
    raw_a, raw_b = (a, b) if engine is None else (engine.array(a), engine.array(b))
    xp = check(raw_a, raw_b)
    params = {"maximise": semiring.maximises}
    if engine is None:
        values, winners = _run(xp, a, b, **params)
    else:
        values, winners = engine.apply(EXTREMUM, (a, b), params)
    return (values, winners) if return_indices else values


def check(a: Array, b: Array) -> ModuleType:
    """The namespace of two operands that are real floating, on one device, and broadcast."""
    xp = array_namespace(a=a, b=b)
    require_floating(xp, "a", a)
    require_floating(xp, "b", b)
    require_same_device(a=a, b=b)
    try:
        np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    except ValueError:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"a and b must broadcast, got shapes {shapes}") from None
    return xp


def select(xp: ModuleType, maximise: bool, a: Array, b: Array) -> tuple[Array, Array]:
    """``(values, b_wins)`` of ``max(a, b)`` (``min``) with the rule above; ``a`` and ``b`` of one
    dtype, broadcast against each other."""
    a_better = (a > b) if maximise else (a < b)
    values = xp.where(a_better | xp.isnan(a), a, b)
    b_wins = (b > a) if maximise else (b < a)
    return values, b_wins


def _run(
    xp: ModuleType, a: Array, b: Array, *, maximise: bool, rounding: str | None = None
) -> tuple[Array, Array]:
    # No sums: half-precision operands widened to float32 select exactly as in their own dtype.
    dtype = xp.result_type(a.dtype, b.dtype)
    a, b = xp.astype(a, dtype, copy=False), xp.astype(b, dtype, copy=False)
    values, b_wins = select(xp, maximise, a, b)
    return values, xp.astype(b_wins, xp.int8)


def _vjp(xp, grad, winners, shapes, needs, *, maximise):
    a_shape, b_shape = shapes
    zero = xp.zeros((), dtype=grad.dtype, device=device(grad))
    b_wins = winners == 1
    grad_a = sum_to_shape(xp, xp.where(b_wins, zero, grad), a_shape) if needs[0] else None
    grad_b = sum_to_shape(xp, xp.where(b_wins, grad, zero), b_shape) if needs[1] else None
    return grad_a, grad_b


def _jvp(xp, tangents, winners, shapes, *, maximise):
    ta, tb = tangents
    zero = xp.zeros((), dtype=(ta if ta is not None else tb).dtype, device=device(winners))
    b_wins = winners == 1
    out = zero
    if ta is not None:
        out = xp.where(b_wins, zero, ta)
    if tb is not None:
        out = out + xp.where(b_wins, tb, zero)
    return xp.broadcast_to(out, tuple(winners.shape)) if out.shape != winners.shape else out


def _meta(shapes, *, maximise):
    try:
        return tuple(np.broadcast_shapes(*shapes)), 2
    except ValueError:
        raise ValueError(f"a and b must broadcast, got shapes {shapes[0]} and {shapes[1]}") from None


EXTREMUM = define(
    Operator(
        name="extremum",
        inputs=("a", "b"),
        params=(("maximise", bool),),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        doc=maximum.__doc__ or "",
    )
)
