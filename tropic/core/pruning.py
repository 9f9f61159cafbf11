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

__all__ = ["keep_mask", "pruning_score"]


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
