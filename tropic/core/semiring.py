"""The two tropical semirings and the reference reduction every operator is built on.

max-plus: ``a ⊕ b = max(a, b)``, ``a ⊗ b = a + b``, zero ``-inf``, one ``0``.
min-plus: ``a ⊕ b = min(a, b)``, ``a ⊗ b = a + b``, zero ``+inf``, one ``0``.

Conventions (DESIGN.md), fixed here once for every operator and backend:

* The tropical zero absorbs: ``zero ⊗ x = zero`` for every non-NaN ``x``, including the opposite
  infinity, where IEEE addition would give NaN (``-inf + inf``). This keeps ``I ⊗ A = A`` true for
  matrices holding infinities.
* NaN dominates: a candidate with a NaN operand is NaN and an output with a NaN candidate is NaN.
* The winner (``argmax`` for max-plus, ``argmin`` for min-plus) is the lowest candidate index that
  attains the result; for a NaN result it is the lowest NaN candidate; when every candidate is the
  tropical zero there is no winner and the index is ``-1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ._array_api import Array


@dataclass(frozen=True)
class Semiring:
    """A tropical semiring: which way ⊕ selects and what its zero is."""

    name: str
    maximises: bool

    @property
    def zero(self) -> float:
        """The ⊕-neutral, ⊗-absorbing element (``-inf`` for max-plus, ``+inf`` for min-plus)."""
        return -math.inf if self.maximises else math.inf

    @property
    def dual(self) -> Semiring:
        return MIN_PLUS if self.maximises else MAX_PLUS

    def better(self, xp: ModuleType, x: Array, y: Array) -> Array:
        """``x`` strictly beats ``y`` (so ties keep the earlier candidate)."""
        return xp.greater(x, y) if self.maximises else xp.less(x, y)

    def multiply(self, xp: ModuleType, x: Array, w: Array) -> Array:
        """Tropical product ``x ⊗ w = x + w`` with the zero absorbing and NaN propagating."""
        with np.errstate(invalid="ignore"):  # inf - inf: repaired just below
            total = x + w
        zero = self.zero
        absorbed = ((x == zero) & ~xp.isnan(w)) | ((w == zero) & ~xp.isnan(x))
        return xp.where(absorbed, xp.asarray(zero, dtype=total.dtype), total)


MAX_PLUS = Semiring("max-plus", maximises=True)
MIN_PLUS = Semiring("min-plus", maximises=False)


def reduce_candidates(
    xp: ModuleType,
    semiring: Semiring,
    candidates: Iterable[tuple[int, Array, Array | None]],
    out_shape: tuple[int, ...],
    dtype: object,
    index_type: object,
    device: object = None,
) -> tuple[Array, Array]:
    """Reference tropical sum ``⊕_k x_k ⊗ w_k`` over candidates, with its winner.

    ``candidates`` yields ``(k, x_k, w_k)`` in increasing ``k`` (the index reported as the winner;
    candidates that are not part of the operator, such as positions outside a footprint, are simply
    not yielded). ``x_k`` and ``w_k`` broadcast to ``out_shape``; ``w_k`` may be None (plain ⊕ of
    ``x_k``, as in maxout). Returns ``(values, winner)``; ``winner`` follows the
    conventions of this module. One loop, elementwise, in the caller's array library: this is the
    definition every fast path is tested against, not a fast path itself.
    """
    best = xp.full(out_shape, semiring.zero, dtype=dtype, device=device)
    winner = xp.full(out_shape, -1, dtype=index_type, device=device)
    seen_nan = xp.zeros(out_shape, dtype=xp.bool, device=device)
    for k, x, w in candidates:
        value = x if w is None else semiring.multiply(xp, x, w)
        value = xp.broadcast_to(xp.astype(value, dtype), out_shape)
        is_nan = xp.isnan(value)
        take = ~seen_nan & (is_nan | semiring.better(xp, value, best))
        best = xp.where(take, value, best)
        winner = xp.where(take, xp.asarray(k, dtype=index_type, device=device), winner)
        seen_nan = seen_nan | is_nan
    # Candidates that are all the zero never beat the initial zero: their winner stays -1.
    return best, winner
