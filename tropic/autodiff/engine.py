"""``tropic.autodiff`` as an engine of tropic's operators (:mod:`tropic.core.engines`).

Given :class:`~tropic.autodiff.Tensor` operands, a public operator (``tropic.maxplus_matmul`` and
the others) lands here: the operator's spec runs on the arrays under the tensors (so the backend
kernels of those arrays serve it), the values come back as a Tensor that records the spec's
vector-Jacobian product, which computes only the gradients of operands that require one.
"""

from __future__ import annotations

from typing import Any

from ..core._array_api import Array
from ..core.spec import Operator
from .tensor import Tensor, needs_grad, operands, record

__all__ = ["RUNS_LATER_NODES_FIRST", "apply", "array", "vjp", "wrap"]

# Tensor.backward walks a depth-first order in which, of two operations on one result, the earlier
# recorded one's vjp runs first
RUNS_LATER_NODES_FIRST = False


def array(x: Any) -> Array:
    """The array under ``x`` (a Tensor, or a plain array passed beside Tensors)."""
    return x.data if isinstance(x, Tensor) else x


def wrap(x: Array) -> Tensor:
    """A constant Tensor (no gradient) holding ``x``."""
    return Tensor(x)


def apply(
    operator: Operator, inputs: tuple[Any, ...], params: dict[str, Any], winners: bool = True
) -> tuple[Tensor, Tensor | None]:
    """``(values, winners)`` of ``operator`` as Tensors; the values record its vjp.

    Arrays and Python scalars among ``inputs`` are constants; None marks an optional input left out.
    ``winners=False`` (the caller will not read them): with nothing to record, an operator that
    ``skips_winners`` runs without them, and None is returned in their place.
    """
    given = operands(*(x for x in inputs if x is not None))
    position = iter(given)
    tensors = tuple(None if x is None else next(position) for x in inputs)
    xp = given[0].xp
    arrays = tuple(None if t is None else t.data for t in tensors)
    if not winners and operator.skips_winners and not needs_grad(*given):
        values, _ = operator.run(xp, *arrays, **params, winners=False)
        return Tensor(values), None
    values, winners = operator.run(xp, *arrays, **params)
    shapes = tuple(None if t is None else t.shape for t in tensors)

    def vjp(grad: Array) -> tuple[Array | None, ...]:
        needs = tuple(t is not None and t.requires_grad for t in tensors)
        grads = operator.vjp(xp, grad, winners, shapes, needs, **params)
        return tuple(g for g, t in zip(grads, tensors, strict=True) if t is not None)

    return record(values, given, vjp), Tensor(winners)


def vjp(
    operator: Operator, grad: Any, winners: Any, shapes: tuple, needs: tuple, params: dict[str, Any]
) -> tuple[Tensor | None, ...]:
    """``operator``'s vjp of Tensors (as constants: a vjp of a vjp is not recorded here)."""
    g, k = array(grad), array(winners)
    grads = operator.vjp(operands(g)[0].xp, g, k, shapes, needs, **params)
    return tuple(None if x is None else Tensor(x) for x in grads)
