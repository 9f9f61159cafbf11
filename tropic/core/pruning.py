"""The tropical pruning score: which weights a magnitude pruning removes first.

A weight is removed by setting it to its tropical zero (``-inf`` in a max-plus layer: it never wins
the max again; ``+inf`` in a min-plus layer; ``0`` in a linear layer). The entries that matter least
go first: the smallest ``w`` of a max-plus weight (it wins the max least often), the largest ``w`` of a
min-plus weight, the smallest ``|w|`` of a linear weight. Written against the array API, so that
``tropic.nn.pruning`` (NumPy and CuPy arrays) and ``tropic.torch.prune`` (tensors) rank the same
weights the same way.
"""

from __future__ import annotations

import math
from types import ModuleType

from ._array_api import Array

__all__ = ["keep_mask", "keep_rows", "pruning_score", "saliency", "saliency_score"]


def pruning_score(xp: ModuleType, w: Array, zero: float, mask: Array | None = None) -> Array:
    """The score of every entry of ``w`` (float64, flat), lowest pruned first.

    .. math:: \\mathrm{score}(w) = \\begin{cases} |w| & \\text{zero} = 0 \\\\ w & \\text{zero} = -\\infty
              \\\\ -w & \\text{zero} = +\\infty \\end{cases}

    Entries already removed (equal to a tropical zero, or False in ``mask``) score ``-inf``: they stay
    removed and are counted first. A linear weight equal to 0 ranks first but is not forced out.
    """
    w = xp.reshape(xp.astype(w, xp.float64), (-1,))
    if zero == 0.0:
        scores, dead = xp.abs(w), xp.zeros(w.shape, dtype=xp.bool)
    elif zero == -math.inf:
        scores, dead = w, w == -math.inf
    elif zero == math.inf:
        scores, dead = -w, w == math.inf
    else:
        raise ValueError(f"cannot prune a parameter whose zero is {zero!r}")
    if mask is not None:
        dead = dead | ~xp.reshape(xp.astype(mask, xp.bool), (-1,))
    return xp.where(dead, xp.asarray(-math.inf, dtype=xp.float64), scores)


def keep_mask(xp: ModuleType, scores: Array, count: int) -> Array:
    """Flat keep mask: the ``count`` lowest ``scores`` (stable order) are removed, and so is every
    entry scored ``-inf`` (a mask only shrinks)."""
    rank = xp.argsort(xp.argsort(scores, stable=True), stable=True)  # each entry's place in that order
    return (rank >= count) & (scores != -math.inf)


def saliency(xp: ModuleType, grad: Array, w: Array) -> Array:
    """SNIP's connection sensitivity of one batch, ``|g ⊙ w|`` in float64 (Lee et al. 2019).

    ``s(w) = |dL/dc| at c = 1 = |dL/dw * w|`` for a mask ``c`` multiplying ``w`` (``w * c``).
    Entries at an infinite value (a tropical zero: the connection does not exist) have no
    sensitivity: 0, not ``0 * inf``.
    """
    w = xp.astype(w, xp.float64)
    product = xp.abs(xp.astype(grad, xp.float64) * xp.where(xp.isfinite(w), w, xp.zeros_like(w)))
    return xp.where(xp.isfinite(w), product, xp.zeros_like(w))


def saliency_score(xp: ModuleType, scores: Array, w: Array, zero: float, mask: Array | None = None) -> Array:
    """Accumulated saliencies as a flat float64 pruning score (lowest pruned first), with the entries
    already removed (equal to an infinite ``zero``, or False in ``mask``) at ``-inf``, as
    :func:`pruning_score`. Saliencies of every algebra compare: one ranking may mix them."""
    scores = xp.reshape(xp.astype(scores, xp.float64), (-1,))
    dead = xp.zeros(scores.shape, dtype=xp.bool)
    if math.isinf(zero):
        dead = xp.reshape(w, (-1,)) == zero
    if mask is not None:
        dead = dead | ~xp.reshape(xp.astype(mask, xp.bool), (-1,))
    return xp.where(dead, xp.asarray(-math.inf, dtype=xp.float64), scores)


def keep_rows(xp: ModuleType, keep: Array, scores: Array, shape: tuple[int, ...]) -> Array:
    """``keep`` (flat) with at least one entry kept in every row (the last axis of ``shape``): a row
    left empty keeps its best-scored live entry (the lowest index among equals). A 1-D parameter
    keeps every live entry. Rows with no live entry stay empty."""
    live = scores != -math.inf
    if len(shape) < 2:
        return keep | live
    rows = xp.reshape(scores, (-1, shape[-1]))
    best = xp.argmax(rows, axis=1)  # first maximum: the lowest index among equals
    chosen = xp.reshape(xp.arange(shape[-1]), (1, -1)) == xp.reshape(best, (-1, 1))
    empty = ~xp.any(xp.reshape(keep, rows.shape), axis=1)
    rescue = chosen & xp.reshape(empty, (-1, 1)) & xp.reshape(live, rows.shape)
    return keep | xp.reshape(rescue, (-1,))
