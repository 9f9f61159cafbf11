"""The torch benchmark (benchmarks/bench_torch.py) runs and times the right computation."""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
bench_torch = importlib.import_module("benchmarks.bench_torch")  # torch is here: fail, not skip


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(bench_torch, "BATCH", 8)
    monkeypatch.setattr(bench_torch, "IN_FEATURES", 16)
    monkeypatch.setattr(bench_torch, "OUT_FEATURES", 12)


@pytest.mark.parametrize("implementation", bench_torch.IMPLEMENTATIONS)
def test_benchmark_class_runs(small, implementation):
    benchmark = bench_torch.TorchMaxplusLayerTraining()
    benchmark.setup(implementation)
    benchmark.time_forward_backward(implementation)
    benchmark.peakmem_forward_backward(implementation)


def test_both_implementations_compute_the_layer_gradients(small):
    grad_x, grad_w = bench_torch.layer_step("tropic")()
    reference_x, reference_w = bench_torch.layer_step("torch_broadcast")()
    # Random normal inputs: unique winners, so both send each gradient to the same place.
    torch.testing.assert_close(grad_x, reference_x)
    torch.testing.assert_close(grad_w, reference_w)
    assert grad_x.shape == (8, 16) and grad_w.shape == (16, 12)


def test_peak_probe_in_a_fresh_process(monkeypatch):
    """The report's memory column: a spawned process builds the step (smoke sizes) and measures it."""
    from benchmarks.common import peak_in_fresh_process
    from tropic.apps.bench import extra_peak_rss_mib

    monkeypatch.setenv("TROPIC_BENCH_SMOKE", "1")  # the child imports the module with tiny sizes
    peak = peak_in_fresh_process("benchmarks.bench_torch", "tropic")
    if extra_peak_rss_mib(lambda: None) is None:  # no peak counter on this system (not Linux, no permission)
        assert peak is None
    else:
        assert 0.0 <= peak < 256.0


@pytest.mark.parametrize("shape", ["8x16x12", "5x7x3"])
def test_torch_and_numpy_layer_steps_give_the_same_gradients(shape):
    """The torch-over-NumPy ratio compares like with like: both steps compute the gradients of
    ``x @ W.T`` with the same kernels, so the same bits."""
    numpy_step, torch_step = bench_torch.numpy_and_torch_layer_steps(shape)
    own_step = bench_torch.own_function_layer_step(shape)  # the floor's hand-written Function
    for step in (torch_step, own_step):
        for got, expected in zip(step(), numpy_step(), strict=True):
            assert got.shape == expected.shape
            assert torch.equal(got, torch.from_numpy(expected))
    batch, n_in, n_out = (int(n) for n in shape.split("x"))
    assert numpy_step()[1].shape == (n_in, n_out)


@pytest.mark.parametrize(
    ("name", "track"),
    [
        ("TorchOverNumpyLayer", "track_torch_over_numpy"),
        ("OwnFunctionOverNumpyLayer", "track_own_function_over_numpy"),
        ("TorchOverOwnFunctionLayer", "track_torch_over_own_function"),
    ],
)
def test_the_ratio_benchmarks_track_a_positive_ratio(name, track):
    benchmark = getattr(bench_torch, name)()
    benchmark.setup("8x16x12")
    assert getattr(benchmark, track)("8x16x12") > 0
