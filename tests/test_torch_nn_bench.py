"""The Dilation2d benchmark (benchmarks/bench_torch_nn.py) runs, and its three implementations
compute the same dilation and gradients (small sizes)."""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
bench = importlib.import_module("benchmarks.bench_torch_nn")  # torch is here: fail, not skip


@pytest.fixture
def small(monkeypatch):
    for name, value in (("BATCH", 2), ("CHANNELS", 3), ("HEIGHT", 9), ("WIDTH", 8), ("KERNEL", 3)):
        monkeypatch.setattr(bench, name, value)


@pytest.mark.parametrize("implementation", bench.IMPLEMENTATIONS)
def test_benchmark_class_runs(small, implementation):
    if implementation == "kornia":
        pytest.importorskip("kornia")
    benchmark = bench.TorchDilation2dLayerTraining()
    benchmark.setup(implementation)
    benchmark.time_forward_backward(implementation)
    benchmark.peakmem_forward_backward(implementation)


def test_tropic_and_unfold_compute_the_same_layer(small):
    y, gx, gs = bench.layer_step("tropic")()
    y_ref, gx_ref, gs_ref = bench.layer_step("torch_unfold")()
    assert torch.equal(y, y_ref)  # max and + are exact
    torch.testing.assert_close(gx, gx_ref)  # gradient sums in another order
    torch.testing.assert_close(gs, gs_ref)
    assert y.shape == (2, 3, 9, 8) and gs.shape == (3, 3, 3)


def test_kornia_computes_the_same_dilation_with_a_shared_element(small):
    kornia = pytest.importorskip("kornia")
    from tropic.torch import nn as tnn

    x = torch.randn(2, 3, 9, 8)
    se = torch.randn(3, 3)
    layer = tnn.Dilation2d(3, 3)
    with torch.no_grad():
        layer.structure.copy_(se.expand(3, 3, 3))
    expected = kornia.morphology.dilation(x, torch.ones(3, 3), structuring_element=se)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
