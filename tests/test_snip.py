"""SNIP pruning (the DMNN paper's Table 3): connection sensitivity ``sum_b |dL_b/dw * w|`` over a few
batches, one global ranking over parameters of every algebra, pruned entries at each parameter's
zero; on tropic's engine and on torch, with the same masks for the same model and data.

The expected scores are computed here from the gradients' closed form (a linear layer under the
loss ``sum(out * t)`` has ``dL/dW = t^T x``), not from tropic's autodiff; integer data keep every
sum exact, so both engines rank identical numbers.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import tropic.nn as tn
from tropic.core.pruning import keep_rows
from tropic.nn import pruning as tprune

from .helpers import assert_identical

F64 = np.float64


def _weighted_sum(out, t):
    return (out * t).sum()


def _batches(rng, count, n_in, n_out, batch=4):
    return [
        (rng.integers(-3, 4, (batch, n_in)).astype(F64), rng.integers(-2, 3, (batch, n_out)).astype(F64))
        for _ in range(count)
    ]


def test_scores_are_the_connection_sensitivity_of_a_linear_layer():
    rng = np.random.default_rng(0)
    layer = tn.Linear(5, 3, seed=1, dtype=F64)
    layer.weight.data[...] = rng.integers(-4, 5, (3, 5))
    layer.bias.data[...] = rng.integers(-4, 5, 3)
    w, b = layer.weight.data.copy(), layer.bias.data.copy()
    batches = _batches(rng, 3, 5, 3)
    weight_score = sum(np.abs((t.T @ x) * w) for x, t in batches)
    bias_score = sum(np.abs(t.sum(axis=0) * b) for x, t in batches)
    scores = np.concatenate([weight_score.ravel(), bias_score])
    count = 7
    order = np.argsort(scores, kind="stable")  # the lowest go first, the lowest index among equals
    keep = np.ones(scores.size, bool)
    keep[order[:count]] = False
    tprune.snip(layer, batches, _weighted_sum, count)
    assert_identical(layer.weight_mask, keep[:15].reshape(3, 5))
    assert_identical(layer.bias_mask, keep[15:])
    assert_identical(layer.weight.data, np.where(keep[:15].reshape(3, 5), w, 0.0))
    assert layer.weight.grad is None and layer.bias.grad is None


def test_pruned_entries_take_each_algebras_zero_and_dead_ones_count_first():
    rng = np.random.default_rng(2)
    net = tn.Sequential(
        tn.MaxPlus(4, 4, seed=0, dtype=F64),
        tn.MinPlus(4, 4, seed=1, dtype=F64),
        tn.Linear(4, 2, seed=2, dtype=F64),
    )
    net[0].weight.data[0, :] = -np.inf  # a row with no connection: 4 entries already removed
    tprune.snip(net, _batches(rng, 2, 4, 2), _weighted_sum, 0.5)
    total = sum(p.size for p in net.parameters())
    masks = [m for _, m in net.named_buffers() if m is not None]
    assert sum(int((~m).sum()) for m in masks) == round(0.5 * total)
    assert not net[0].weight_mask[0].any()  # the dead row stays pruned
    for layer, zero in ((net[0], -np.inf), (net[1], np.inf), (net[2], 0.0)):
        assert (layer.weight.data[~layer.weight_mask] == zero).all()
        assert (layer.bias.data[~layer.bias_mask] == zero).all()


def test_rows_of_protected_parameters_keep_their_best_entry():
    scores = np.array([[1.0, 3.0, 2.0], [-np.inf, -np.inf, -np.inf], [5.0, 5.0, 0.0]]).ravel()
    keep = np.zeros(9, bool)
    keep[6] = True  # row 2 has a kept entry already
    got = keep_rows(np, keep, scores, (3, 3))
    assert_identical(got.reshape(3, 3), np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]], bool))
    assert_identical(
        keep_rows(np, np.zeros(3, bool), np.array([1.0, -np.inf, 0.0]), (3,)), np.array([1, 0, 1], bool)
    )
    rng = np.random.default_rng(3)
    net = tn.Sequential(tn.Linear(6, 6, seed=0, dtype=F64), tn.MaxPlus(6, 3, seed=1, dtype=F64))
    tprune.snip(
        net, _batches(rng, 2, 6, 3), _weighted_sum, 0.97, keep_rows_of=[(net[1], "weight"), (net[1], "bias")]
    )
    assert net[1].weight_mask.any(axis=1).all()
    assert net[1].bias_mask.all()


def test_bad_arguments_raise():
    layer = tn.Linear(3, 2, seed=0)
    batches = _batches(np.random.default_rng(0), 1, 3, 2)
    with pytest.raises(ValueError, match="amount"):
        tprune.snip(layer, batches, _weighted_sum, 1.5)
    with pytest.raises(ValueError, match="no parameters"):
        tprune.snip(layer, batches, _weighted_sum, 0.5, parameters=[])


def test_torch_engine_prunes_the_same_entries():
    torch = pytest.importorskip("torch")
    tnn = importlib.import_module("tropic.torch.nn")
    prune = importlib.import_module("tropic.torch.prune")
    rng = np.random.default_rng(4)

    def build():
        net = tn.Sequential(
            tn.MaxPlus(5, 4, seed=0, dtype=F64),
            tn.MPM(4, 4, seed=1, dtype=F64),
            tn.Linear(4, 3, seed=2, dtype=F64),
        )
        for p in net.parameters():  # integers: every gradient and saliency is exact on both engines
            p.data[...] = np.random.default_rng(p.size).integers(-4, 5, p.shape)
        return net

    batches = _batches(rng, 3, 5, 3)
    ref = build()
    module = tnn.from_tropic(build())
    protected = [(ref[2], "weight")]
    tprune.snip(ref, batches, _weighted_sum, 0.6, keep_rows_of=protected)
    torch_batches = [(torch.from_numpy(x), torch.from_numpy(t)) for x, t in batches]
    prune.snip(module, torch_batches, _weighted_sum, 0.6, keep_rows_of=[(module[2], "weight")])
    for i in range(3):
        for name in ("weight", "bias", "bias_max", "bias_min"):
            mask = getattr(ref[i], f"{name}_mask", None)
            if mask is None:
                continue
            assert_identical(getattr(module[i], f"{name}_mask").numpy() != 0, mask)
    assert prune.sparsity_report(module) == tprune.sparsity_report(ref)
    x = batches[0][0]
    assert_identical(module(torch.from_numpy(x)).detach().numpy(), ref(x).numpy())
    assert all(p.grad is None for p in module.parameters())
