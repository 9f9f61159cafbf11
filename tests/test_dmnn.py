"""Deep morphological networks: MPM / DEP layers, constrained linear activations, weight dropout, the
paper's architectures, and the paper's central finding on a small problem (MPM trains, MP does not)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import tropic.autodiff as ad
import tropic.nn as nn
from tropic.nn import dmnn_models as models
from tropic.nn.dmnn import DEP, MPM, DiagonalActivation, MPMResidual, SVDActivation


def mpm_reference(x, w, b_max, b_min, keep=None):
    """The MPM formula by NumPy broadcasting; removed weights are -inf in the max and +inf in the min."""
    w_max = w if keep is None else np.where(keep, w, -np.inf)
    w_min = w if keep is None else np.where(keep, w, np.inf)
    dil = np.max(x[:, None, :] + w_max[None], axis=-1)
    ero = np.min(x[:, None, :] + w_min[None], axis=-1)
    return np.maximum(b_max, dil) + np.minimum(b_min, ero)


def set_mpm(layer, w, b_max, b_min):
    layer.weight.data = np.array(w)
    layer.bias_max.data = np.array(b_max)
    layer.bias_min.data = np.array(b_min)


def finite_differences(f, arrays, eps=1e-6):
    """Central differences of the scalar ``f(arrays)`` with respect to every entry of every array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            hi = f(arrays)
            a[idx] = old - eps
            lo = f(arrays)
            a[idx] = old
            g[idx] = (hi - lo) / (2 * eps)
        grads.append(g)
    return grads


def top_two_gap(values, axis=-1):
    s = np.sort(values, axis=axis)
    return np.min(np.take(s, -1, axis=axis) - np.take(s, -2, axis=axis))


# -- MPM ---------------------------------------------------------------------------------------


def test_mpm_forward_matches_numpy_including_winning_biases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5))
    w = rng.standard_normal((4, 5))
    # Unit 0: both biases win (b far above every max, b' far below every min); the others: products.
    b_max = np.array([50.0, -50.0, -50.0, 0.5])
    b_min = np.array([-50.0, 50.0, 50.0, -0.5])
    layer = MPM(5, 4, seed=0, dtype=np.float64)
    set_mpm(layer, w, b_max, b_min)
    y = layer(x).numpy()
    np.testing.assert_array_equal(y, mpm_reference(x, w, b_max, b_min))
    np.testing.assert_array_equal(y[:, 0], np.zeros(7))  # 50 + (-50)
    # Unit 3 mixes both cases over the batch.
    dil = np.max(x[:, None, :] + w[None], axis=-1)[:, 3]
    assert np.any(dil > 0.5) and np.any(dil < 0.5)


def test_mpm_initialisation_and_shapes():
    layer = MPM(6, 3, init="zeros", seed=1)
    assert layer.weight.shape == (3, 6) and layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.data, np.zeros((3, 6), np.float32))
    assert layer.bias_max.shape == layer.bias_min.shape == (3,)
    assert not np.array_equal(layer.bias_max.data, layer.bias_min.data)
    big = MPM(200, 100, seed=2)
    w = big.weight.data.astype(np.float64)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02
    # With W = 0 every unit sees max(x) and min(x): y_j = max(b_j, max x) + min(b'_j, min x).
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    expected = np.maximum(layer.bias_max.data, x.max(1, keepdims=True)) + np.minimum(
        layer.bias_min.data, x.min(1, keepdims=True)
    )
    np.testing.assert_array_equal(layer(x).numpy(), expected)


def test_mpm_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5))
    w = rng.standard_normal((4, 5))
    b_max = rng.normal(1.8, 0.5, 4)  # about as large as the max of 5 products: the bias wins sometimes
    b_min = rng.normal(-1.8, 0.5, 4)
    upstream = rng.standard_normal((6, 4))
    cand_max = np.concatenate([x[:, None, :] + w[None], np.broadcast_to(b_max[None, :, None], (6, 4, 1))], -1)
    cand_min = np.concatenate([x[:, None, :] + w[None], np.broadcast_to(b_min[None, :, None], (6, 4, 1))], -1)
    # Unique winners with a margin far above the step: the function is smooth around this point.
    assert top_two_gap(cand_max) > 1e-3 and top_two_gap(-cand_min) > 1e-3
    bias_wins = cand_max.argmax(-1) == 5
    assert bias_wins.any() and not bias_wins.all()

    layer = MPM(5, 4, seed=0, dtype=np.float64)
    set_mpm(layer, w, b_max, b_min)
    xt = ad.tensor(x.copy(), requires_grad=True)
    (layer(xt) * upstream).sum().backward()

    def loss(arrays):
        return float(np.sum(mpm_reference(*arrays) * upstream))

    expected = finite_differences(loss, [x.copy(), w.copy(), b_max.copy(), b_min.copy()])
    got = [xt.grad, layer.weight.grad, layer.bias_max.grad, layer.bias_min.grad]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)


def test_mpm_weight_dropout_removes_weights_from_both_branches():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 6))
    layer = MPM(6, 5, weight_dropout=0.5, seed=6, dtype=np.float64)
    w = layer.weight.data.copy()
    y = layer(x)
    keep = layer.dropout_keep
    assert keep.shape == (5, 6) and keep.dtype == bool and 0 < keep.sum() < keep.size
    # One mask for the whole batch, dropped = tropical zero of each branch, no rescaling.
    np.testing.assert_array_equal(
        y.numpy(), mpm_reference(x, w, layer.bias_max.data, layer.bias_min.data, keep)
    )
    y.sum().backward()
    assert np.all(layer.weight.grad[~keep] == 0.0)
    assert np.any(layer.weight.grad[keep] != 0.0)
    # The biases are never dropped: each gets gradient 1 per sample where it wins.
    dil = np.max(x[:, None, :] + np.where(keep, w, -np.inf)[None], axis=-1)
    ero = np.min(x[:, None, :] + np.where(keep, w, np.inf)[None], axis=-1)
    np.testing.assert_array_equal(layer.bias_max.grad, np.sum(layer.bias_max.data >= dil, axis=0))
    np.testing.assert_array_equal(layer.bias_min.grad, np.sum(layer.bias_min.data <= ero, axis=0))
    # A fresh mask at every training step.
    layer(x)
    assert not np.array_equal(layer.dropout_keep, keep)


def test_mpm_weight_dropout_is_off_in_eval_mode():
    x = np.random.default_rng(7).standard_normal((3, 6)).astype(np.float32)
    layer = MPM(6, 5, weight_dropout=0.7, seed=8)
    layer.eval()
    y1, y2 = layer(x).numpy(), layer(x).numpy()
    assert layer.dropout_keep is None
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(
        y1, mpm_reference(x, layer.weight.data, layer.bias_max.data, layer.bias_min.data)
    )
    layer.train()
    assert not np.array_equal(layer(x).numpy(), y1)
    assert layer.dropout_keep is not None
    layer.eval()  # the last training pass's mask does not outlive it
    np.testing.assert_array_equal(layer(x).numpy(), y1)
    assert layer.dropout_keep is None


def test_mpm_pruned_weights_are_tropical_zeros_of_both_branches():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6))
    layer = MPM(6, 3, seed=10, dtype=np.float64)
    w = layer.weight.data.copy()
    nn.pruning.l1_unstructured(layer, 0.5)
    keep = layer.weight.mask
    assert keep.sum() == 9
    np.testing.assert_array_equal(
        layer(x).numpy(), mpm_reference(x, w, layer.bias_max.data, layer.bias_min.data, keep)
    )
    # pruning.remove keeps the stored 0s and drops the mask: 0 then takes part in both branches.
    kept = MPM(6, 3, seed=10, dtype=np.float64)
    nn.pruning.l1_unstructured(kept, 0.5)
    nn.pruning.remove(kept)
    np.testing.assert_array_equal(
        kept(x).numpy(), mpm_reference(x, np.where(keep, w, 0.0), kept.bias_max.data, kept.bias_min.data)
    )
    # Everything pruned: only the biases are left, y = b + b'.
    nn.pruning.l1_unstructured(layer, 1.0)
    np.testing.assert_array_equal(
        layer(x).numpy(), np.broadcast_to(layer.bias_max.data + layer.bias_min.data, (4, 3))
    )


def test_mpm_and_dep_on_array_api_strict_match_numpy_bitwise():
    xps = pytest.importorskip("array_api_strict")
    x = np.random.default_rng(23).standard_normal((4, 5))
    for make in (lambda: MPM(5, 3, weight_dropout=0.4, seed=24, dtype=np.float64),
                 lambda: DEP(5, 3, seed=24, dtype=np.float64)):  # fmt: skip
        ref, strict = make(), make()
        for p in strict.parameters():
            p.data = xps.asarray(p.data)
        y_ref, y_strict = ref(x), strict(xps.asarray(x))
        assert isinstance(y_strict.data, type(xps.asarray(0.0)))
        np.testing.assert_array_equal(np.asarray(y_strict.data), y_ref.numpy())
        y_ref.sum().backward()
        y_strict.sum().backward()
        for p, q in zip(ref.parameters(), strict.parameters(), strict=True):
            np.testing.assert_array_equal(np.asarray(q.grad), p.grad)


# -- DEP ---------------------------------------------------------------------------------------


def test_dep_forward_and_mix():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 4))
    layer = DEP(4, 3, seed=12, dtype=np.float64)
    lam = layer.mix.data
    assert np.all((lam >= 0) & (lam <= 1))
    dil = np.max(x[:, None, :] + layer.weight_max.data[None], -1)
    ero = np.min(x[:, None, :] + layer.weight_min.data[None], -1)
    np.testing.assert_allclose(layer(x).numpy(), lam * dil + (1 - lam) * ero, rtol=1e-12)
    # Outside [0, 1] the mix acts as the nearest bound and learns nothing.
    layer.mix.data = np.array([1.5, -0.5, 0.25])
    y = layer(x)
    np.testing.assert_allclose(y.numpy(), np.array([1.0, 0.0, 0.25]) * dil + np.array([0.0, 1.0, 0.75]) * ero)
    y.sum().backward()
    assert layer.mix.grad[0] == 0 and layer.mix.grad[1] == 0 and layer.mix.grad[2] != 0
    fixed = DEP(4, 3, mix="fixed", seed=12)
    assert [n for n, _ in fixed.named_parameters()] == ["weight_max", "weight_min"]
    np.testing.assert_array_equal(fixed.mix, np.full(3, 0.5, np.float32))


# -- linear activations and residual block -----------------------------------------------------


def test_diagonal_activation():
    act = DiagonalActivation(20000, seed=13)
    a = act.weight.data.astype(np.float64)
    assert abs(a.std() * np.sqrt(12.0) - 1.0) < 0.03
    x = np.random.default_rng(14).standard_normal((2, 20000)).astype(np.float32)
    np.testing.assert_array_equal(act(x).numpy(), x * a.astype(np.float32))


def test_svd_activation_is_an_svd_of_a_default_linear_layer_with_frozen_factors():
    n = 6
    act = SVDActivation(n, seed=15)
    m0 = nn.Linear(n, n, bias=False, seed=15, dtype=np.float64).weight.data
    u, s, vh = np.linalg.svd(m0)
    np.testing.assert_array_equal(act.u, u.astype(np.float32))
    np.testing.assert_array_equal(act.v, vh.T.astype(np.float32))
    np.testing.assert_array_equal(act.weight.data, s.astype(np.float32))
    np.testing.assert_allclose(act.u @ np.diag(act.weight.data) @ act.v.T, m0, atol=1e-5)
    # Only the singular values learn; U and V are buffers in the state dict.
    assert [name for name, _ in act.named_parameters()] == ["weight"]
    assert {"u", "v", "weight"} <= set(act.state_dict())
    u0, v0, a0 = act.u.copy(), act.v.copy(), act.weight.data.copy()
    x = np.random.default_rng(16).standard_normal((5, n)).astype(np.float32)
    target = np.random.default_rng(17).standard_normal((5, n)).astype(np.float32)
    opt = nn.Adam(act.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.mse_loss(act(x), target).backward()
        opt.step()
    np.testing.assert_array_equal(act.u, u0)
    np.testing.assert_array_equal(act.v, v0)
    assert not np.array_equal(act.weight.data, a0)
    m = act.u @ np.diag(act.weight.data) @ act.v.T
    np.testing.assert_allclose(act(x).numpy(), x @ m.T, rtol=1e-4, atol=1e-5)


def test_mpm_residual_block():
    x = np.random.default_rng(18).standard_normal((3, 5)).astype(np.float32)
    block = MPMResidual(5, seed=19)
    expected = x + block.scale.weight.data * block.mpm(x).numpy()
    np.testing.assert_array_equal(block(x).numpy(), expected)  # the same float32 operations
    with pytest.raises(ValueError, match="weight_dropout"):
        MPMResidual(5, weight_dropout=1.0)


def test_state_dict_round_trip(tmp_path):
    net = models.mpm_svd(8, 6, 3, blocks=1, seed=20)
    x = np.random.default_rng(21).standard_normal((4, 8)).astype(np.float32)
    net.eval()
    path = tmp_path / "net.npz"
    net.save(path)
    other = models.mpm_svd(8, 6, 3, blocks=1, seed=99)
    other.load(path)
    other.eval()
    np.testing.assert_array_equal(other(x).numpy(), net(x).numpy())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MPM(3, 2, init="uniform"), "init"),
        (lambda: MPM(3, 2, weight_dropout=-0.1), "weight_dropout"),
        (lambda: MPM(0, 2), "in_features"),
        (lambda: DEP(3, 2, mix="half"), "mix"),
        (lambda: DiagonalActivation(0), "num_features"),
        (lambda: models.mpm(4, 3, 2, blocks=-1), "blocks"),
        (lambda: models.maxout_head(4, 5, 2, pieces=2), "multiple"),
        (lambda: models.hybrid_head(4, 6, 2, init="dense", count=3), "count"),
        (lambda: models.hybrid_head(4, 6, 2, init="lottery"), "init"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_weight_dropout_type_error():
    with pytest.raises(TypeError, match="weight_dropout"):
        MPM(3, 2, weight_dropout="0.3")


# -- architectures -----------------------------------------------------------------------------

SMALL = dict(in_features=12, hidden=8, out_features=3)
CONSTRUCTORS = {
    "mlp": lambda: models.mlp(**SMALL, blocks=2, seed=0),
    "maxout_mlp": lambda: models.maxout_mlp(**SMALL, blocks=2, seed=0),
    "mp": lambda: models.mp(**SMALL, blocks=2, seed=0),
    "act_mp": lambda: models.act_mp(**SMALL, blocks=2, seed=0),
    "dep": lambda: models.dep(**SMALL, blocks=2, seed=0),
    "act_dep": lambda: models.act_dep(**SMALL, blocks=2, mix="fixed", seed=0),
    "mpm": lambda: models.mpm(**SMALL, blocks=2, seed=0),
    "rmpm": lambda: models.rmpm(**SMALL, blocks=2, seed=0),
    "rmpm_dropout": lambda: models.rmpm(**SMALL, blocks=2, weight_dropout=0.3, seed=0),
    "mpm_svd": lambda: models.mpm_svd(**SMALL, blocks=2, seed=0),
    "hybrid_mlp": lambda: models.hybrid_mlp(**SMALL, blocks=2, seed=0),
    "hybrid_head": lambda: models.hybrid_head(12, 16, 3, seed=0),
    "hybrid_head_dense": lambda: models.hybrid_head(12, 16, 3, init="dense", seed=0),
    "relu_head": lambda: models.relu_head(12, 16, 3, seed=0),
    "maxout_head": lambda: models.maxout_head(12, 16, 3, seed=0),
}


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
def test_constructor_runs_forward_and_backward(name):
    net = CONSTRUCTORS[name]()
    assert isinstance(net, nn.Sequential)
    x = np.random.default_rng(22).random((5, 12)).astype(np.float32)
    y = net(x)
    assert y.shape == (5, 3) and y.dtype == np.float32 and np.all(np.isfinite(y.numpy()))
    nn.cross_entropy(y, np.array([0, 1, 2, 0, 1])).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert any(np.any(g != 0) for g in grads)
    # Same seed, same network (and the same first dropout masks).
    np.testing.assert_array_equal(CONSTRUCTORS[name]()(x).numpy(), y.numpy())


def test_constructors_follow_the_papers_layouts():
    net = models.mpm()  # 784 -> 256 -> 4 x 256 -> 10
    mpms = [m for m in net if isinstance(m, MPM)]
    assert [(m.in_features, m.out_features) for m in mpms] == [(784, 256)] + [(256, 256)] * 4 + [(256, 10)]
    assert np.all(mpms[0].weight.data == 0) and np.all(mpms[1].weight.data != 0)
    assert sum(isinstance(m, DiagonalActivation) for m in net) == 5
    r = models.rmpm(64, 16, 10, blocks=3, weight_dropout=0.3, seed=0)
    assert sum(isinstance(m, MPMResidual) for m in r) == 3
    assert all(m.weight_dropout == 0.3 for m in r.modules() if isinstance(m, MPM))
    assert sum(isinstance(m, SVDActivation) for m in models.mpm_svd(64, 16, 10, blocks=2, seed=0)) == 3
    w = np.concatenate([m.weight.data.ravel() for m in models.mp(64, 128, 10, blocks=1, seed=0)])
    assert abs(w.mean() + 5.0) < 0.1 and abs(w.std() - 3.0) < 0.1
    h = models.hybrid_mlp(64, 16, 10, blocks=2, seed=0)
    assert [type(m).__name__ for m in h] == ["Linear", "MPM"] * 3 + ["Linear"]
    head = models.hybrid_head(256, 512, 10, seed=0)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "MaxPlus", "Linear"]
    assert head[0].bias is None
    finite = np.isfinite(head[2].weight.data).sum()
    assert 900 < finite < 1150  # K = 2 * hidden = 1024 expected finite entries, the rest -inf
    assert np.all(np.isfinite(head[2].weight.data) | (head[2].weight.data == -np.inf))
    assert models.maxout_head(256, 512, 10, seed=0)[3].in_features == 256


# -- the paper's finding, small: MPM trains, a pure max-plus stack does not ---------------------


def _train_digits(net, data, epochs=30, lr=0.01, batch_size=64, seed=0):
    x_train, y_train, x_test, y_test = data
    opt = nn.Adam(net.parameters(), lr=lr)
    schedule = nn.CosineAnnealingLR(opt, epochs)
    gen = np.random.default_rng(seed)
    for _ in range(epochs):
        net.train()
        for xb, yb in nn.data.batches(x_train, y_train, batch_size, rng=gen):
            opt.zero_grad()
            nn.cross_entropy(net(xb), yb).backward()
            opt.step()
        schedule.step()
    net.eval()
    with ad.no_grad():
        return float(np.mean(net(x_test).numpy().argmax(1) == y_test))


def test_mpm_trains_on_digits_where_a_pure_max_plus_stack_fails():
    pytest.importorskip("sklearn")
    data = nn.data.load_digits_split(0.25, seed=0)
    start = time.process_time()  # CPU time: the machine is shared, wall time is not ours
    # 64 -> 128 -> 2 x 128 -> 10, Adam 1e-2 with a cosine schedule, batch 64, 30 epochs.
    acc_mpm = _train_digits(models.mpm(64, 128, 10, blocks=2, seed=0), data)
    acc_mp = _train_digits(models.mp(64, 128, 10, blocks=2, seed=0), data)
    elapsed = time.process_time() - start
    print(f"digits test accuracy: MPM {acc_mpm:.3f}, MP {acc_mp:.3f} ({elapsed:.1f} s CPU)")
    assert acc_mpm >= 0.90
    assert acc_mp <= 0.60
    assert acc_mpm - acc_mp >= 0.30
    assert elapsed < 120
