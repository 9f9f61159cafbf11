"""Magnitude pruning: exact fractions, the tropical rule, persistence through training, the report."""

from __future__ import annotations

import numpy as np
import pytest

import tropic.autodiff as ad
import tropic.nn as nn
from tests.helpers import assert_identical
from tropic.nn import pruning


def test_per_layer_linear_prunes_the_smallest_magnitudes_exactly():
    layer = nn.Linear(20, 10, seed=0)
    w = layer.weight.data.copy()
    pruning.l1_unstructured(layer, 0.3)
    mask = layer.weight_mask
    assert mask.dtype == bool and mask.shape == w.shape
    assert (~mask).sum() == 60  # 0.3 of 200, exactly
    assert np.abs(w[~mask]).max() <= np.abs(w[mask]).min()
    assert np.all(layer.weight.data[~mask] == 0)
    assert_identical(layer.weight.data[mask], w[mask])
    assert layer.weight.mask is mask and "weight_mask" in layer.state_dict()
    pruning.l1_unstructured(layer, 0.5)  # cumulative: the earlier pruned entries stay pruned
    assert (~layer.weight_mask).sum() == 100 and np.all(~layer.weight_mask[~mask])
    pruning.l1_unstructured(layer, 7, name="bias")  # an int is a count
    assert (~layer.bias_mask).sum() == 7


def test_maxplus_pruning_sets_the_most_negative_weights_to_minus_inf():
    layer = nn.MaxPlus(16, 8, seed=1)
    w = layer.weight.data.copy()
    pruning.l1_unstructured(layer, 0.25)
    pruned = ~layer.weight_mask
    assert pruned.sum() == 32
    assert np.all(layer.weight.data[pruned] == -np.inf)
    assert w[pruned].max() <= w[~pruned].min()  # the most negative ones, not the smallest |w|
    assert_identical(layer.weight.data[~pruned], w[~pruned])


def test_minplus_pruning_sets_the_most_positive_weights_to_plus_inf():
    layer = nn.MinPlus(16, 8, seed=1)
    w = layer.weight.data.copy()
    pruning.l1_unstructured(layer, 0.5)
    pruned = ~layer.weight_mask
    assert pruned.sum() == 64 and np.all(layer.weight.data[pruned] == np.inf)
    assert w[pruned].min() >= w[~pruned].max()


def test_sparse_maxplus_entries_count_as_pruned_first():
    layer = nn.MaxPlus(20, 20, init="sparse", p=0.5, seed=0)
    already = int(np.isneginf(layer.weight.data).sum())
    assert 150 < already < 250
    pruning.l1_unstructured(layer, 0.9)
    assert (~layer.weight_mask).sum() == 360 and np.all(~layer.weight_mask[np.isneginf(layer.weight.data)])


def test_global_pruning_one_threshold_exact_total():
    a, b = nn.Linear(30, 20, seed=0), nn.Linear(20, 10, seed=1)
    b.weight.data = b.weight.data * 0.1  # smaller weights: this layer must lose more
    wa, wb = a.weight.data.copy(), b.weight.data.copy()
    nn.global_unstructured([(a, "weight"), (b, "weight")], 0.4)
    pa, pb = ~a.weight_mask, ~b.weight_mask
    assert pa.sum() + pb.sum() == round(0.4 * 800)
    pruned = np.concatenate([np.abs(wa[pa]), np.abs(wb[pb])])
    kept = np.concatenate([np.abs(wa[~pa]), np.abs(wb[~pb])])
    assert pruned.max() <= kept.min()
    assert pb.mean() > pa.mean()
    with pytest.raises(ValueError, match="different algebras"):
        nn.global_unstructured([(a, "weight"), (nn.MaxPlus(3, 3, seed=0), "weight")], 0.1)


def test_argument_errors():
    layer = nn.Linear(3, 3, seed=0)
    with pytest.raises(ValueError, match="amount"):
        pruning.l1_unstructured(layer, 1.5)
    with pytest.raises(ValueError, match="amount as a count"):
        pruning.l1_unstructured(layer, 10)
    with pytest.raises(ValueError, match="no parameter 'kernel'"):
        pruning.l1_unstructured(layer, 0.1, name="kernel")
    with pytest.raises(ValueError, match="not pruned"):
        pruning.remove(layer)


def hybrid(h=32, seed=0):
    return nn.Sequential(
        nn.Linear(16, h, bias=False, seed=seed),
        nn.BatchNorm1d(h),
        nn.MaxPlus(h, h, seed=seed + 1),
        nn.Linear(h, 4, seed=seed + 2),
    )


def test_masks_survive_twenty_optimiser_steps_and_a_reload(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    net = hybrid()
    for i in (0, 3):
        pruning.l1_unstructured(net[i], 0.6)
    pruning.l1_unstructured(net[2], 0.5)
    masks = {i: net[i].weight_mask.copy() for i in (0, 2, 3)}
    before = {i: net[i].weight.data.copy() for i in (0, 2, 3)}
    opt = nn.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(20):
        opt.zero_grad()
        nn.cross_entropy(net(x), y).backward()
        opt.step()
    for i, zero in ((0, 0.0), (2, -np.inf), (3, 0.0)):
        w, m = net[i].weight.data, masks[i]
        assert_identical(net[i].weight_mask, m)
        assert np.all(w[~m] == zero), i
        assert not np.array_equal(w[m], before[i][m])  # the kept weights did train
    report = nn.sparsity_report(net)
    path = tmp_path / "pruned.npz"
    net.save(path)
    fresh = hybrid(seed=5)
    fresh.load(path)  # masks are accepted into an unpruned model and linked to the parameters
    assert fresh[2].weight.mask is fresh[2].weight_mask
    assert nn.sparsity_report(fresh) == report
    opt = nn.SGD(fresh.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.cross_entropy(fresh(x), y).backward()
        opt.step()
    assert np.all(fresh[0].weight.data[~masks[0]] == 0)
    pruning.remove(fresh[0])
    assert fresh[0].weight.mask is None and "0.weight_mask" not in fresh.state_dict()


def test_sparsity_report_numbers():
    net = nn.Sequential(
        nn.Linear(10, 8, seed=0),
        nn.MaxPlus(8, 6, init="sparse", p=0.4, seed=1),
        nn.BatchNorm1d(6),
        nn.MinPlus(6, 5, seed=2),
    )
    pruning.l1_unstructured(net[0], 0.25)
    pruning.l1_unstructured(net[3], 12)
    report = nn.sparsity_report(net)
    assert list(report) == ["0.weight", "1.weight", "3.weight"]  # weights only: no biases, no BatchNorm
    assert report["0.weight"] == (60, 80, 0.75)
    finite = int(np.isfinite(net[1].weight.data).sum())
    assert report["1.weight"] == (finite, 48, finite / 48)
    assert report["3.weight"] == (18, 30, 0.6)


def test_gradients_of_pruned_tropical_entries_are_zero():
    layer = nn.MaxPlus(8, 4, seed=0, dtype=np.float64)
    pruning.l1_unstructured(layer, 0.5)
    ad.sum(layer(np.random.default_rng(0).standard_normal((10, 8)))).backward()
    assert np.all(layer.weight.grad[~layer.weight_mask] == 0)


def test_mask_buffer_assignment_relinks_the_parameter():
    layer = nn.Linear(4, 3, seed=0)
    pruning.l1_unstructured(layer, 0.5)
    new = np.ones((3, 4), dtype=bool)
    new[0, 0] = False
    layer.weight_mask = new
    assert layer.weight.mask is new
    layer.weight.grad = np.zeros((3, 4), dtype=np.float32)
    nn.SGD([layer.weight], lr=0.1).step()
    assert layer.weight.data[0, 0] == 0


def test_pruned_erosion_structure_entries_are_absent():
    """An Erosion2d subtracts its structure, so a pruned entry is -inf (x - s = +inf never wins the
    min): the output equals the erosion by the kept entries alone, and stays finite."""
    import tropic

    layer = nn.Erosion2d(1, 3, init="normal", seed=4, dtype=np.float64)
    nn.pruning.l1_unstructured(layer, 4, name="structure")
    s = layer.structure.data[0]
    assert np.sum(s == -np.inf) == 4
    x = np.random.default_rng(5).standard_normal((1, 1, 9, 8))
    y = layer(x).numpy()
    kept = s != -np.inf
    assert np.isfinite(y).all()
    expected = tropic.erosion(x[0, 0], np.where(kept, s, 0.0), footprint=kept)
    np.testing.assert_array_equal(y[0, 0], expected)
