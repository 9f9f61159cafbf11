"""``count=`` of the sparse max-plus initialisation is the exact number of finite weights (issue 18,
item 12), so the budget-matched comparison of ``tropic reproduce hybrid`` is exact."""

from __future__ import annotations

import numpy as np
import pytest

import tropic.nn as nn
from tropic.nn import init


@pytest.mark.parametrize("shape", [(512, 512), (64, 64), (7, 3), (4, 5, 3, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_is_the_exact_number_of_finite_weights(shape, seed):
    size = int(np.prod(shape))
    for count in sorted({1, 2, size // 3 or 1, size}):
        w = init.sparse_maxplus(shape, seed, count=count)
        assert w.shape == shape and np.isfinite(w).sum() == count, (shape, count)
        assert np.all(np.isfinite(w) | np.isneginf(w))
    assert np.isposinf(init.sparse_maxplus(shape, seed, count=1, zero=np.inf)).sum() == size - 1


def test_count_keeps_entries_uniformly_at_random():
    """Every entry is kept with probability count / size, as with p: over 400 draws of 3 of 12
    entries, each entry is kept 100 times on average (binomial sd about 8.7)."""
    kept = sum(np.isfinite(init.sparse_maxplus((3, 4), seed, count=3)) for seed in range(400))
    assert kept.sum() == 1200 and np.all(np.abs(kept - 100) < 5 * 8.7), kept


def test_count_values_and_errors():
    assert np.isfinite(init.sparse_maxplus((3, 4), 0, count=100)).all()  # more than the size: all kept
    assert np.array_equal(init.sparse_maxplus((3, 4), 0, count=5.0), init.sparse_maxplus((3, 4), 0, count=5))
    assert np.isfinite(init.sparse_maxplus((3, 4), 0, count=np.int64(5))).sum() == 5
    for count, error, match in [
        (0, ValueError, "count must be > 0"),
        (-3, ValueError, "count must be > 0"),
        (2.5, ValueError, "whole number"),
        (float("nan"), ValueError, "whole number"),
        (True, TypeError, "count must be an int"),
        ("8", TypeError, "count must be an int"),
    ]:
        with pytest.raises(error, match=match):
            init.sparse_maxplus((3, 4), 0, count=count)


def test_layers_and_heads_hold_exactly_count_finite_weights():
    layer = nn.MaxPlus(512, 512, init="sparse", count=1024, seed=0)
    assert np.isfinite(layer.weight.data).sum() == 1024
    for hidden in (8, 64):
        head = nn.dmnn_models.hybrid_head(16, hidden, 10, init="sparse", seed=3)
        assert np.isfinite(head[2].weight.data).sum() == 2 * hidden


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hybrid_reproduction_budgets_are_matched_exactly(seed):
    """The dense max-plus head, pruned to the sparse layer's budget, keeps exactly as many head
    weights as the Sparse-Morph head (they differed by about 1.5% when count was an expected count)."""
    from tropic.apps.reproduce import hybrid

    front, hidden = 32, 64
    sparse = hybrid.build("sparse", 64, front, hidden, seed)
    dense = hybrid.prune(hybrid.build("dense", 64, front, hidden, seed), "dense", 0.0, 0.0, hidden)
    assert (
        hybrid.kept_weights(sparse) == hybrid.kept_weights(dense) == front * hidden + 2 * hidden + hidden * 10
    )
