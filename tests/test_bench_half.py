"""benchmarks/bench_half.py runs every case in every dtype (smoke sizes) and tracks its ratios."""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
bench_half = importlib.import_module("benchmarks.bench_half")


@pytest.fixture
def small(monkeypatch):
    for name, value in dict(M=7, K=9, N=5, BATCH=2, CHANNELS=3, SIDE=6, IMAGE=8).items():
        monkeypatch.setattr(bench_half, name, value)


@pytest.mark.parametrize("dtype", bench_half.DTYPES)
@pytest.mark.parametrize("case", bench_half.CASES)
def test_every_case_runs(small, case, dtype):
    benchmark = bench_half.HalfPrecision()
    benchmark.setup(case, dtype)
    benchmark.time_operator(case, dtype)


def test_ratios_are_tracked(small):
    ratios = bench_half.HalfPrecisionRatios()
    ratios.setup("product")
    assert ratios.track_float16_over_float32("product") > 0
    assert ratios.track_bfloat16_over_float32("product") > 0


def test_the_narrow_dtypes_compute_in_their_own_precision(small):
    """The timed calls return the narrow dtype (no silent float32 result)."""
    import tropic

    for dtype in (torch.float16, torch.bfloat16):
        a, b = torch.randn(7, 9).to(dtype), torch.randn(9, 5).to(dtype)
        assert tropic.maxplus_matmul(a, b).dtype == dtype
