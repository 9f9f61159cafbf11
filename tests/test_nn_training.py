"""End to end: the sparse hybrid head of Fotopoulos et al. (2025) trained on the digits data set."""

from __future__ import annotations

import time

import numpy as np
import pytest

import tropic.autodiff as ad
import tropic.nn as nn

pytest.importorskip("sklearn", reason="scikit-learn (the test extra) provides the digits data")

HIDDEN = 128
EPOCHS = 10


def hybrid_net(hidden=HIDDEN):
    """Linear(64 -> h, no bias) -> BatchNorm1d -> sparse MaxPlus(h -> h) -> Linear(h -> 10), float32.

    Sparsity as in the paper: p = K / h^2 with K = 2 h, about two finite inputs per max-plus neuron."""
    return nn.Sequential(
        nn.Linear(64, hidden, bias=False, seed=1),
        nn.BatchNorm1d(hidden),
        nn.MaxPlus(hidden, hidden, init="sparse", count=2 * hidden, seed=2),
        nn.Linear(hidden, 10, seed=3),
    )


@pytest.fixture(scope="module")
def trained():
    x_train, y_train, x_test, y_test = nn.data.load_digits_split(0.25, seed=0)
    net = hybrid_net()
    maxplus = net[2]
    dead = np.isneginf(maxplus.weight.data)
    opt = nn.Adam(net.parameters(), lr=3e-3)
    max_dead_grad = 0.0
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        net.train()
        for xb, yb in nn.data.batches(x_train, y_train, 32, seed=epoch):
            opt.zero_grad()
            nn.cross_entropy(net(xb), yb).backward()
            max_dead_grad = max(max_dead_grad, float(np.abs(maxplus.weight.grad[dead]).max()))
            opt.step()
    seconds = time.perf_counter() - start
    net.eval()
    with ad.no_grad():
        accuracy = float(np.mean(np.argmax(net(x_test).data, axis=1) == y_test))
    print(f"\nsparse hybrid head on digits: test accuracy {accuracy:.4f}, {EPOCHS} epochs in {seconds:.2f} s")
    return {"net": net, "dead": dead, "accuracy": accuracy, "max_dead_grad": max_dead_grad, "x_test": x_test}


def test_data_split_is_fixed():
    a = nn.data.load_digits_split(0.25, seed=0)
    b = nn.data.load_digits_split(0.25, seed=0)
    assert [x.shape for x in a] == [(1348, 64), (1348,), (449, 64), (449,)]
    assert a[0].dtype == np.float32 and a[0].max() == 1.0 and a[0].min() == 0.0
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def test_sparse_hybrid_head_reaches_95_percent(trained):
    assert trained["accuracy"] >= 0.95


def test_minus_inf_entries_get_zero_gradient_and_stay_minus_inf(trained):
    weight = trained["net"][2].weight
    dead = trained["dead"]
    assert dead.mean() > 0.95  # the layer really is sparse (p = 2 / h)
    assert trained["max_dead_grad"] == 0.0
    assert np.all(weight.data[dead] == -np.inf)
    assert np.all(np.isfinite(weight.data[~dead]))
    assert np.all(np.isfinite(trained["net"](trained["x_test"]).data))


def test_batches_cover_every_sample_once():
    x = np.arange(10)[:, None]
    y = np.arange(10)
    parts = list(nn.data.batches(x, y, 4, seed=0))
    assert [len(b) for b, _ in parts] == [4, 4, 2]
    assert sorted(np.concatenate([b for _, b in parts]).tolist()) == list(range(10))
    assert [len(b) for b in nn.data.batches(x, batch_size=4, drop_last=True, shuffle=False)] == [4, 4]


def test_nan_in_the_training_data_stops_the_readme_loop_with_an_error():
    """The README's loop on data with one NaN used to turn every weight NaN without a word (test
    accuracy 0.109): the optimiser now raises at the first step whose gradient is NaN, naming it,
    before any weight changes."""
    x_train, y_train, _, _ = nn.data.load_digits_split(seed=0)
    x_train = x_train.copy()
    x_train[100, 10] = np.nan
    net = nn.Sequential(
        nn.Linear(64, 64, bias=False, seed=0),
        nn.BatchNorm1d(64),
        nn.MaxPlus(64, 64, init="sparse", count=128, seed=1),
        nn.Linear(64, 10, seed=2),
    )
    opt = nn.Adam(net.parameters(), lr=3e-3)
    steps = 0
    with pytest.raises(FloatingPointError, match=r"step \d+: the gradient of parameter params\[\d\]") as info:
        for xb, yb in nn.data.batches(x_train, y_train, 32, seed=0):
            weights = [p.data.copy() for p in net.parameters()]
            opt.zero_grad()
            nn.cross_entropy(net(xb), yb).backward()
            opt.step()
            steps += 1
    assert f"step {steps + 1}:" in str(info.value)
    for p, before in zip(net.parameters(), weights, strict=True):
        np.testing.assert_array_equal(p.data, before)
        assert not np.isnan(p.data).any()
