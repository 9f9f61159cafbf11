"""benchmarks/bench_conv.py's pair-rate cases: each call computes its case, counted in candidate pairs."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

bench_conv = importlib.import_module("benchmarks.bench_conv")


@pytest.mark.parametrize("winners", [False, True])
@pytest.mark.parametrize("case", ["product", *bench_conv.PAIR_RATE_CASES])
def test_pair_counts_are_the_candidates_of_each_output(monkeypatch, case, winners):
    """pairs = outputs x candidates per output (x + w entering a max), from the result's own shape."""
    small = {
        "conv x64x1x28x28 w6x1x5x5": ("conv", ((2, 1, 7, 6), (3, 1, 5, 5), 2)),
        "dilation 8x16x64x64 3x3": ("dilation", ((2, 3, 9, 8), 3)),
    }
    monkeypatch.setattr(bench_conv, "PAIR_RATE_CASES", {**bench_conv.PAIR_RATE_CASES, **small})
    monkeypatch.setattr(bench_conv, "PRODUCT_SIDE", 6)
    run, pairs = bench_conv.pair_rate_call(case, winners)
    result = run()
    values, found = result if winners else (result, None)
    if case == "product":
        candidates = 6
    else:
        kind, shape = bench_conv.PAIR_RATE_CASES[case]
        candidates = int(np.prod(shape[1][1:])) if kind == "conv" else shape[1] ** 2
    assert pairs == values.size * candidates
    assert (found is not None) == winners


def test_the_ratio_is_a_positive_time_ratio(monkeypatch):
    monkeypatch.setattr(bench_conv, "PRODUCT_SIDE", 8)
    small = {"dilation 8x16x64x64 5x5": ("dilation", ((2, 2, 8, 8), 5))}
    monkeypatch.setattr(bench_conv, "PAIR_RATE_CASES", small)
    assert bench_conv.per_pair_time_over_product("dilation 8x16x64x64 5x5", True, repeat=1) > 0


@pytest.mark.parametrize("case", ["conv x64x1x28x28 w6x1x5x5", "dilation 8x16x64x64 3x3"])
def test_the_backward_call_gives_both_gradients_of_its_case(monkeypatch, case):
    small = {
        "conv x64x1x28x28 w6x1x5x5": ("conv", ((2, 1, 7, 6), (3, 1, 5, 5), 2)),
        "dilation 8x16x64x64 3x3": ("dilation", ((2, 3, 9, 8), 3)),
    }
    monkeypatch.setattr(bench_conv, "PAIR_RATE_CASES", small)
    kind, shape = small[case]
    gradients = bench_conv.backward_call(case)()
    if kind == "conv":
        assert [g.shape for g in gradients] == [shape[0], shape[1]]
    else:
        assert [g.shape for g in gradients] == [shape[0], (shape[1], shape[1])]
    assert all(np.isfinite(g).all() and g.any() for g in gradients)
    assert bench_conv.backward_over_forward(case, repeat=1) > 0
