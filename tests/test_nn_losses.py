"""Losses against NumPy formulas and torch.nn.functional (values and gradients)."""

from __future__ import annotations

import numpy as np
import pytest

import tropic.autodiff as ad
import tropic.nn as nn

RNG = np.random.default_rng(7)


def leaf(a):
    return ad.Tensor(np.array(a, dtype=np.float64), requires_grad=True)


def log_softmax_np(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def test_cross_entropy_formula_and_gradient():
    z = RNG.standard_normal((6, 4)) * 3
    t = np.array([0, 3, 1, 1, 2, 0])
    x = leaf(z)
    loss = nn.cross_entropy(x, t)
    expected = -log_softmax_np(z)[np.arange(6), t].mean()
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-13)
    loss.backward()
    softmax = np.exp(log_softmax_np(z))
    np.testing.assert_allclose(x.grad, (softmax - np.eye(4)[t]) / 6, rtol=1e-12, atol=1e-15)
    per = nn.cross_entropy(z, t, reduction="none").data
    np.testing.assert_allclose(per, -log_softmax_np(z)[np.arange(6), t], rtol=1e-13)
    np.testing.assert_allclose(nn.CrossEntropyLoss("sum")(z, t).item(), per.sum(), rtol=1e-13)


def test_cross_entropy_is_stable_for_huge_logits_and_checks_targets():
    loss = nn.cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32), np.array([1, 0]))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), 500.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"target must be in \[0, 2\)"):
        nn.cross_entropy(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(TypeError, match="integer class"):
        nn.cross_entropy(np.zeros((2, 2)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        nn.cross_entropy(np.zeros((2, 2)), np.array([0]))
    with pytest.raises(ValueError, match="reduction"):
        nn.cross_entropy(np.zeros((2, 2)), np.array([0, 1]), reduction="avg")


def test_bce_with_logits_formula_stability_and_gradient():
    z = np.array([-800.0, -3.0, 0.0, 2.0, 800.0])
    t = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    x = leaf(z)
    loss = nn.binary_cross_entropy_with_logits(x, t, reduction="none")
    expected = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    np.testing.assert_allclose(loss.data, expected, rtol=1e-14)
    assert np.all(np.isfinite(loss.data))
    ad.sum(loss).backward()
    sigmoid = 0.5 * (1 + np.tanh(z / 2))
    np.testing.assert_allclose(x.grad, sigmoid - t, rtol=1e-12, atol=1e-300)


def test_bce_on_probabilities_clamps_the_logs():
    p = np.array([0.0, 0.2, 0.9, 1.0])
    t = np.array([0.0, 1.0, 0.0, 1.0])
    x = leaf(p)
    loss = nn.binary_cross_entropy(x, t, reduction="none")
    with np.errstate(divide="ignore"):
        expected = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    np.testing.assert_allclose(loss.data, expected, rtol=1e-13)
    # Flipped targets: the two certain mistakes cost the clamp, 100 each.
    flipped = (100.0 - np.log(0.8) - np.log(0.9) + 100.0) / 4
    np.testing.assert_allclose(nn.binary_cross_entropy(p, 1 - t).item(), flipped, rtol=1e-12)
    ad.sum(loss).backward()
    assert np.all(np.isfinite(x.grad))
    np.testing.assert_allclose(x.grad[1:3], [-1 / 0.2, 1 / 0.1], rtol=1e-12)


def test_mse_and_dice():
    a = RNG.standard_normal((3, 5))
    b = RNG.standard_normal((3, 5))
    x = leaf(a)
    loss = nn.mse_loss(x, b)
    np.testing.assert_allclose(loss.item(), np.mean((a - b) ** 2), rtol=1e-14)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * (a - b) / a.size, rtol=1e-14)
    p = RNG.random((2, 8))
    t = (RNG.random((2, 8)) > 0.5).astype(float)
    d = nn.dice_loss(p, t, smooth=0.0)
    np.testing.assert_allclose(d.item(), 1 - 2 * np.sum(p * t) / (p.sum() + t.sum()), rtol=1e-14)
    per = nn.DiceLoss(smooth=0.0, axis=1)(p, t)
    dice = 1 - 2 * np.sum(p * t, axis=1) / (p.sum(axis=1) + t.sum(axis=1))
    np.testing.assert_allclose(per.item(), dice.mean(), rtol=1e-14)
    assert nn.dice_loss(t, t, smooth=0.0).item() == 0.0  # perfect overlap
    assert nn.dice_loss(np.zeros(4), np.zeros(4)).item() == 0.0  # both empty: smooth keeps it defined
    with pytest.raises(ValueError, match="shape"):
        nn.mse_loss(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("name", ["cross_entropy", "bce_logits", "bce", "mse"])
def test_against_torch(name):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    z = RNG.standard_normal((5, 3))
    if name == "cross_entropy":
        t = np.array([0, 2, 1, 2, 0])
        ours, theirs = nn.cross_entropy, lambda a: functional.cross_entropy(a, torch.tensor(t))
    elif name == "bce_logits":
        t = RNG.random((5, 3))
        ours = nn.binary_cross_entropy_with_logits
        theirs = lambda a: functional.binary_cross_entropy_with_logits(a, torch.tensor(t))  # noqa: E731
    elif name == "bce":
        z = RNG.random((5, 3))
        t = RNG.random((5, 3))
        ours, theirs = nn.binary_cross_entropy, lambda a: functional.binary_cross_entropy(a, torch.tensor(t))
    else:
        t = RNG.standard_normal((5, 3))
        ours, theirs = nn.mse_loss, lambda a: functional.mse_loss(a, torch.tensor(t))
    x = leaf(z)
    loss = ours(x, t)
    loss.backward()
    tz = torch.tensor(z, requires_grad=True)
    tl = theirs(tz)
    tl.backward()
    np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-12)
    np.testing.assert_allclose(x.grad, tz.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_losses_on_any_array_api_library(xp):
    from tests.helpers import to_numpy

    z = RNG.standard_normal((4, 3))
    p = RNG.random((4, 3))
    t = (RNG.random((4, 3)) > 0.5).astype(np.float64)
    labels = np.array([0, 2, 1, 1])
    for fn, a, b in [
        (nn.cross_entropy, z, labels),
        (nn.binary_cross_entropy_with_logits, z, t),
        (nn.binary_cross_entropy, p, t),
        (nn.mse_loss, z, t),
        (nn.dice_loss, p, t),
    ]:
        x = ad.Tensor(xp.asarray(a), requires_grad=True)
        loss = fn(x, xp.asarray(b))
        loss.backward()
        ref = leaf(a)
        ref_loss = fn(ref, b)
        ref_loss.backward()
        np.testing.assert_allclose(to_numpy(loss.data), ref_loss.data, rtol=1e-14, err_msg=fn.__name__)
        np.testing.assert_allclose(to_numpy(x.grad), ref.grad, rtol=1e-12, atol=1e-15, err_msg=fn.__name__)
