"""Operator specs: each tropical operator is declared once, here, and every engine is generated from it.

An :class:`Operator` says what the operator *is* at the level of arrays:

* ``inputs`` and ``params`` are its signature: the arrays it reads (``optional`` ones may be None)
  and its static parameters with their Python types. The PyTorch engine turns that signature into
  the schema of a custom op; nothing else describes it a second time.
* ``run(xp, *inputs, **params)`` computes ``(values, winners)`` on arrays of namespace ``xp``: it
  normalises the arguments (dtype promotion, vector operands, windows, geometry), picks the kernel that
  :mod:`~tropic.core.dispatch` registered for ``xp`` (or the array-API reference) and returns
  arrays of ``xp``. ``winners`` is the integer index of the candidate that decided each output
  (``-1``: none); it is all that a gradient needs.
* ``vjp(xp, grad, winners, shapes, needs, **params)`` is the vector-Jacobian product: one gradient
  per input, each in its input's shape and in ``grad``'s dtype, or None where ``needs`` says the
  gradient is not wanted (and then it is not computed).
* ``jvp(xp, tangents, winners, shapes, **params)`` is the Jacobian-vector product: the tangent of
  each output is the sum of the input tangents read at its winner (0 where there is no winner), so a
  ``-inf`` or NaN output carries the tangent of its winner like any other.
* ``meta(shapes, **params)`` gives ``(values shape, number of candidates)`` without computing
  anything (the winners' dtype is ``index_dtype`` of that number, the values' the promoted dtype):
  the fake kernels of the PyTorch engine are this function.
* ``winners_shape(values shape)``: the winners' shape, a tuple; by default the values' own (an
  operator made of several reductions, such as the max-plus-min product, stacks one set of winners
  per reduction in front).
* ``skips_winners``: ``run`` also takes ``winners=False``, which says the caller will not read the
  winners: its kernels may then skip them (values only, the same bits) and ``run`` returns None for
  them. Engines pass it on when no gradient is recorded and the public call did not ask for indices.
* ``layout_hints(transposed)``, optional: keyword arguments for ``vjp`` given which inputs arrived
  as the transpose of a C-contiguous matrix (a weight ``W`` used as ``W.T``), asking for their
  gradients in that layout; values are unaffected, and a backend may ignore them. Engines whose
  autograd cares about a gradient's memory layout (the torch engine's eager path) pass them.
* ``kernel`` and ``vjp_kernel`` name the backend kernels ``run`` and ``vjp`` call and list their
  parameters; :func:`tropic.core.dispatch.register` refuses a kernel whose parameters differ.

Engines (:mod:`tropic.core.engines`) apply an operator to their own tensors: unwrap, ``run``, wrap,
and record ``vjp`` / ``jvp`` for their autodiff. The public functions (``tropic.maxplus_matmul``
and the others) check the user's arguments, turn them into an operator's inputs and params and hand
them to the engine of the tensors, or run the operator directly on arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OPERATORS", "Operator", "define"]


@dataclass(frozen=True, eq=False)
class Operator:
    """One operator, declared once (see the module docstring for each field)."""

    name: str
    inputs: tuple[str, ...]
    params: tuple[tuple[str, Any], ...]
    run: Callable[..., tuple[Any, Any]]
    vjp: Callable[..., tuple[Any, ...]]
    jvp: Callable[..., Any]
    meta: Callable[..., tuple[tuple[int, ...], int]]
    kernel: tuple[str, tuple[str, ...]] | None = None
    vjp_kernel: tuple[str, tuple[str, ...]] | None = None
    optional: tuple[str, ...] = ()
    skips_winners: bool = False
    layout_hints: Callable[[tuple[bool, ...]], dict[str, Any]] | None = None
    winners_shape: Callable[[tuple[int, ...]], tuple[int, ...]] = tuple
    doc: str = ""

    param_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Computed here, not lazily: torch.compile cannot trace the lock of a cached_property, and a
        # model compiled before any eager call reads this first inside the trace.
        object.__setattr__(self, "param_names", tuple(name for name, _ in self.params))


OPERATORS: dict[str, Operator] = {}
_KERNEL_SIGNATURES: dict[str, tuple[str, ...]] = {}


def define(operator: Operator) -> Operator:
    """Add ``operator`` to the table (once per name) and record its kernels' signatures."""
    if operator.name in OPERATORS:
        raise ValueError(f"operator {operator.name!r} is defined twice")
    OPERATORS[operator.name] = operator
    for kernel in (operator.kernel, operator.vjp_kernel):
        if kernel is not None:
            _KERNEL_SIGNATURES[kernel[0]] = kernel[1]
    return operator


def kernel_signature(name: str) -> tuple[str, ...] | None:
    """The parameter names a backend kernel called ``name`` must take (None: no such kernel)."""
    return _KERNEL_SIGNATURES.get(name)
