"""tropic.torch.prune: torch.nn.utils.prune-compatible pruning that writes the tropical zero.

Against tropic.nn.pruning (same masks, same pruned weights, same outputs), through torch's own
machinery (``weight_orig`` / ``weight_mask``, hooks, iterative pruning, ``prune.remove``).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import tropic.nn as tn
from tropic.nn import pruning as tprune

from .helpers import assert_identical

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip
prune = importlib.import_module("tropic.torch.prune")
torch_prune = torch.nn.utils.prune

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
F64 = np.float64


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: tn.MaxPlus(6, 5, seed=0, dtype=F64), (4, 6)),
        (lambda: tn.MinPlus(6, 5, seed=0, dtype=F64), (4, 6)),
        (lambda: tn.MaxPlus(6, 5, init="sparse", p=0.5, seed=0, dtype=F64), (4, 6)),
        (lambda: tn.MaxPlusConv2d(2, 3, 3, padding=1, seed=0, dtype=F64), (2, 2, 5, 5)),
        (lambda: tn.MinPlusConv2d(2, 3, 3, padding=1, seed=0, dtype=F64), (2, 2, 5, 5)),
        (lambda: tn.Dilation2d(2, 3, init="normal", seed=0, dtype=F64), (2, 2, 5, 5)),
    ],
)
@pytest.mark.parametrize("amount", [0.3, 7])
def test_l1_unstructured_matches_tropic(layer, shape, amount):
    ref = layer()
    module = tnn.from_tropic(ref)
    name = "structure" if isinstance(ref, tn.Dilation2d) else "weight"
    tprune.l1_unstructured(ref, amount, name=name)
    out = prune.l1_unstructured(module, name, amount=amount)
    assert out is module and torch_prune.is_pruned(module)
    assert isinstance(
        module._forward_pre_hooks[next(iter(module._forward_pre_hooks))], prune.TropicalUnstructured
    )
    assert_identical(getattr(module, name).detach().numpy(), getattr(ref, name).numpy())
    mask = getattr(module, f"{name}_mask")
    assert_identical(mask.numpy() != 0, getattr(ref, f"{name}_mask"))
    x = _x(shape)
    assert_identical(module(torch.from_numpy(x)).detach().numpy(), ref(x).numpy())
    assert prune.sparsity_report(module) == tprune.sparsity_report(ref)


def test_most_negative_weights_go_first_and_gradients_stay_off():
    layer = tnn.MaxPlus(3, 2, bias=False, seed=0, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -2.0, 3.0], [1.0, -1.0, -3.0]]))
    prune.l1_unstructured(layer, "weight", amount=2)
    expected = torch.tensor([[0.5, -torch.inf, 3.0], [1.0, -1.0, -torch.inf]], dtype=torch.float64)
    assert torch.equal(layer.weight, expected)
    minplus = tnn.MinPlus(3, 2, bias=False, seed=0, dtype=torch.float64)
    with torch.no_grad():
        minplus.weight.copy_(torch.tensor([[0.5, -2.0, 3.0], [1.0, -1.0, -3.0]]))
    prune.l1_unstructured(minplus, "weight", amount=2)
    assert minplus.weight[0, 2] == torch.inf and minplus.weight[1, 0] == torch.inf
    # training: the pruned entries get no gradient and stay at the zero after optimiser steps
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(5, 3, dtype=torch.float64)).sum().backward()
        assert layer.weight_orig.grad[0, 1] == 0 and layer.weight_orig.grad[1, 2] == 0
        opt.step()
    assert layer.weight[0, 1] == -torch.inf and layer.weight[1, 2] == -torch.inf


def test_iterative_pruning_keeps_the_tropical_zero_and_remove_makes_it_permanent():
    layer = tnn.MaxPlus(10, 10, seed=0, dtype=torch.float64)
    prune.l1_unstructured(layer, "weight", amount=0.2)
    prune.l1_unstructured(layer, "weight", amount=0.5)  # half of the remaining 80
    hook = next(h for h in layer._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod))
    assert isinstance(hook, prune.TropicalPruningContainer) and len(hook) == 2
    assert int((layer.weight_mask == 0).sum()) == 60
    assert int(torch.isinf(layer.weight).sum()) == 60 and not torch.any(layer.weight == 0)
    # torch's own methods stacked on top also get the tropical zero
    torch_prune.random_unstructured(layer, "weight", amount=0.5)
    assert int(torch.isinf(layer.weight).sum()) == 80
    prune.l1_unstructured(layer, "weight", amount=1)
    assert int(torch.isinf(layer.weight).sum()) == 81
    kept = layer.weight.clone()
    prune.remove(layer, "weight")
    assert not torch_prune.is_pruned(layer) and isinstance(layer.weight, torch.nn.Parameter)
    assert torch.equal(layer.weight, kept)


def test_global_unstructured_matches_tropic():
    refs = [tn.MaxPlus(6, 5, seed=s, dtype=F64) for s in range(3)]
    modules = [tnn.from_tropic(r) for r in refs]
    tprune.global_unstructured([(r, "weight") for r in refs], 0.4)
    prune.global_unstructured([(m, "weight") for m in modules], amount=0.4)
    for r, m in zip(refs, modules, strict=True):
        assert_identical(m.weight.detach().numpy(), r.weight.numpy())
    with pytest.raises(ValueError, match="different algebras"):
        prune.global_unstructured([(modules[0], "weight"), (tnn.MinPlus(3, 2), "weight")], amount=0.1)
    linears = [torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)]
    prune.global_unstructured([(m, "weight") for m in linears], amount=0.5)
    assert sum(int((m.weight == 0).sum()) for m in linears) == 14


def test_linear_weights_and_mpm_use_torch_l1():
    linear = torch.nn.Linear(5, 4)
    prune.l1_unstructured(linear, "weight", amount=0.5)
    assert int((linear.weight == 0).sum()) == 10
    ref = tn.MPM(6, 5, seed=0, dtype=F64)
    module = tnn.from_tropic(ref)
    tprune.l1_unstructured(ref, 12)
    prune.l1_unstructured(module, "weight", amount=12)
    assert_identical(module.weight_mask.numpy() != 0, ref.weight_mask)
    x = _x((4, 6))
    # a pruned MPM entry is the tropical zero of both branches, not a weight equal to 0
    assert_identical(module(torch.from_numpy(x)).detach().numpy(), ref(x).numpy())


def test_pruned_tropic_models_convert_and_round_trip():
    net = tn.Sequential(tn.Linear(6, 5, seed=0, dtype=F64), tn.MaxPlus(5, 4, seed=1, dtype=F64))
    tprune.l1_unstructured(net[0], 0.3)
    tprune.l1_unstructured(net[1], 0.5)
    model = tnn.from_tropic(net)
    assert torch_prune.is_pruned(model[0]) and torch_prune.is_pruned(model[1])
    x = _x((3, 6))
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), net(x).numpy(), rtol=1e-12)
    assert prune.sparsity_report(model) == tprune.sparsity_report(net)
    back = tn.Sequential(tn.Linear(6, 5, seed=9, dtype=F64), tn.MaxPlus(5, 4, seed=9, dtype=F64))
    back.load_state_dict(tnn.tropic_state_dict(model))
    for key, value in net.state_dict().items():
        assert_identical(back.state_dict()[key], value)
    assert_identical(back(x).numpy(), net(x).numpy())


def test_bad_amount_and_zero():
    layer = tnn.MaxPlus(3, 2)
    with pytest.raises(ValueError, match="amount"):
        prune.l1_unstructured(layer, "weight", amount=1.5)
    assert not torch_prune.is_pruned(layer)
    with pytest.raises(ValueError, match="zero"):
        prune.TropicalUnstructured(0.5, zero=0.0)


def test_pruned_erosion_entries_are_absent_not_minus_infinity():
    """An erosion's absent element entry is s = -inf (then -s = +inf is neutral in the min)."""
    layer = tnn.Erosion2d(2, 3, init="normal", seed=0, dtype=torch.float64)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    before = layer(x)
    prune.l1_unstructured(layer, "structure", amount=0.3)
    assert int((layer.structure == -torch.inf).sum()) == 5
    after = layer(x)
    assert torch.isfinite(after).all() and torch.all(after >= before)  # fewer candidates in the min
