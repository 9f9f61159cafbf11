"""The model training steps of ``tropic bench --models`` and benchmarks/bench_models.py (issue 15):
the papers' plain-torch formulation is the same network as tropic's, the linear counterpart has the
same shapes and no tropical layer, and the report runs."""

from __future__ import annotations

import importlib
import os

import pytest

torch = pytest.importorskip("torch")

from tropic.apps import model_steps  # noqa: E402
from tropic.apps.bench import main as bench_main  # noqa: E402
from tropic.torch import nn as tnn  # noqa: E402


@pytest.mark.parametrize("name", model_steps.MODELS)
def test_paper_formulation_is_the_same_network(name):
    """Same loss and, to rounding, the same gradient of every parameter (random continuous inputs:
    unique winners, so both formulations send each gradient to the same entry)."""
    model, x, target, loss_function = model_steps.build(name, "tropic", quick=True)
    paper = model_steps.paper_model(model)
    assert not any(isinstance(m, tnn.TorchLayer) for m in paper.modules())
    losses = []
    for net in (model, paper):
        loss = loss_function(net(x), target)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    pairs = list(zip(model.parameters(), paper.parameters(), strict=True))
    assert pairs
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape
        torch.testing.assert_close(theirs.grad, ours.grad, rtol=1e-4, atol=1e-5)


def test_sparse_weights_become_the_reference_constant():
    model, *_ = model_steps.build("sparse-morph", "tropic", quick=True)
    paper = model_steps.paper_model(model)
    ours, theirs = model[2].weight, paper[2].weight
    assert torch.isneginf(ours).any()
    assert torch.equal(torch.isneginf(ours), theirs == model_steps.PAPER_ZERO)
    assert torch.equal(ours[torch.isfinite(ours)], theirs[torch.isfinite(ours)])


@pytest.mark.parametrize("name", model_steps.MODELS)
def test_linear_counterpart_has_the_shapes_and_no_tropical_layer(name):
    model, x, target, loss_function = model_steps.build(name, "tropic", quick=True)
    linear, *_ = model_steps.build(name, "linear", quick=True)
    assert not any(isinstance(m, tnn.TorchLayer) for m in linear.modules())
    assert any(isinstance(m, torch.nn.ReLU) for m in linear.modules())
    assert linear(x).shape == model(x).shape
    assert torch.isfinite(loss_function(linear(x), target))


@pytest.mark.parametrize("implementation", model_steps.IMPLEMENTATIONS)
def test_training_step_updates_the_parameters(implementation):
    step = model_steps.training_step("mpm", implementation, quick=True)
    first, second = step(), step()
    assert first == first and second == second  # finite, not NaN
    assert first != second  # Adam moved the parameters between the two forwards


def test_unsupported_layers_are_refused():
    with pytest.raises(NotImplementedError, match="groups=1"):
        model_steps.paper_model(torch.nn.Sequential(tnn.MaxPlusConv2d(2, 2, 3, groups=2, seed=0)))
    with pytest.raises(NotImplementedError, match="Dilation2d"):
        model_steps.paper_model(tnn.Dilation2d(2, 3, seed=0))
    with pytest.raises(ValueError, match="model must be one of"):
        model_steps.build("resnet", "tropic")
    with pytest.raises(ValueError, match="implementation must be one of"):
        model_steps.build("mpm", "keras")


def test_cli_prints_every_model_three_ways(monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    import tropic.apps.bench as bench

    monkeypatch.setattr(bench, "peak_in_fresh_process", lambda module, name, implementation, quick: 2.0)
    chart = tmp_path / "models.png"
    assert bench_main(["--models", "--quick", "--repeat", "1", "--quiet", "--plot", str(chart)]) == 0
    out = capsys.readouterr().out
    for name in model_steps.MODELS:
        for implementation in model_steps.IMPLEMENTATIONS:
            assert any(line.split()[:2] == [name, implementation] for line in out.splitlines())
    assert out.count("(= tropic)") == len(model_steps.MODELS)
    assert "differs" not in out
    assert chart.stat().st_size > 1000


def test_peak_memory_in_a_fresh_process():
    from tropic.apps.bench import peak_in_fresh_process

    peak = peak_in_fresh_process("tropic.apps.model_steps", "sparse-morph", "paper", True)
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("no resettable peak-RSS counter here (Linux /proc/self/clear_refs)")
    assert isinstance(peak, float) and peak >= 0.0  # measured, not "unavailable"


def test_asv_benchmarks_run_at_smoke_sizes(monkeypatch):
    bench_models = importlib.import_module("benchmarks.bench_models")
    monkeypatch.setattr(bench_models, "SMOKE", True)
    step = bench_models.ModelTrainingStep()
    step.setup("rmpm", "tropic")
    step.time_training_step("rmpm", "tropic")
    ratios = bench_models.ModelStepRatios()
    ratios.setup("sparse-morph")
    assert ratios.track_tropic_over_paper("sparse-morph") > 0
    assert ratios.track_tropic_over_linear("sparse-morph") > 0
