"""Optimisers and schedulers: hand-computed updates, agreement with torch.optim, tropical zeros, masks."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import tropic.nn as nn
from tests.helpers import assert_identical


def param(values, dtype=np.float64, zero=0.0):
    return nn.Parameter(np.array(values, dtype=dtype), zero=zero)


def test_sgd_plain_and_weight_decay_by_hand():
    p = param([1.0, -2.0])
    opt = nn.SGD([p], lr=0.1, weight_decay=0.5)
    p.grad = np.array([0.5, 1.0])
    opt.step()
    # d = g + 0.5 p = [1.0, 0.0]; p - 0.1 d
    np.testing.assert_allclose(p.data, [0.9, -2.0], rtol=0, atol=1e-15)


def test_sgd_momentum_and_nesterov_by_hand():
    p, q = param([1.0]), param([1.0])
    heavy = nn.SGD([p], lr=0.1, momentum=0.9)
    nesterov = nn.SGD([q], lr=0.1, momentum=0.9, nesterov=True)
    for g in (1.0, 2.0):
        p.grad = q.grad = np.array([g])
        heavy.step()
        nesterov.step()
    # heavy ball: b1 = 1, p = 0.9; b2 = 0.9 + 2 = 2.9, p = 0.9 - 0.29 = 0.61
    np.testing.assert_allclose(p.data, [0.61], rtol=1e-14)
    # Nesterov: b1 = 1, step 1 + 0.9 = 1.9 -> 0.81; b2 = 2.9, step 2 + 2.61 = 4.61 -> 0.81 - 0.461
    np.testing.assert_allclose(q.data, [0.81 - 0.461], rtol=1e-14)


def test_adam_first_steps_by_hand():
    p = param([1.0, 1.0])
    opt = nn.Adam([p], lr=0.01)
    p.grad = np.array([0.5, -4.0])
    opt.step()
    # Step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g) (up to eps).
    np.testing.assert_allclose(p.data, [0.99, 1.01], rtol=1e-9)
    p.grad = np.array([1.0, 0.0])
    opt.step()
    m = 0.9 * 0.1 * np.array([0.5, -4.0]) + 0.1 * np.array([1.0, 0.0])
    v = 0.999 * 0.001 * np.array([0.25, 16.0]) + 0.001 * np.array([1.0, 0.0])
    upd = 0.01 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-8)
    g1 = np.array([0.5, -4.0])
    p1 = 1.0 - 0.01 * g1 / (np.abs(g1) + 1e-8)  # the first step exactly, eps included
    np.testing.assert_allclose(p.data, p1 - upd, rtol=1e-14)


def test_adamw_decouples_the_decay():
    p = param([2.0])
    opt = nn.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = np.array([3.0])
    opt.step()
    # p (1 - lr wd) = 2 * 0.95 = 1.9, then the Adam step of size lr * sign(g)
    np.testing.assert_allclose(p.data, [1.9 - 0.1], rtol=1e-9)


CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.03, "weight_decay": 0.2, "eps": 1e-6}),
]


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS)
def test_matches_torch_optim(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    ours = [nn.Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(nn, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    for _ in range(10):
        grads = [rng.standard_normal(a.shape) for a in init]
        for p, t, g in zip(ours, theirs, grads, strict=True):
            p.grad = g
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_tropical_zeros_stay_exact_under_weight_decay(name):
    kwargs = {"lr": 0.1, "weight_decay": 0.3}
    if name == "SGD":
        kwargs["momentum"] = 0.9
    p = param([[-np.inf, 1.0], [np.inf, -np.inf]], dtype=np.float32, zero=-np.inf)
    opt = getattr(nn, name)([p], **kwargs)
    for _ in range(5):
        p.grad = np.array([[0.0, 0.5], [0.0, 0.0]], dtype=np.float32)
        opt.step()
    assert p.data.dtype == np.float32
    assert not np.isnan(p.data).any()
    assert p.data[0, 0] == -np.inf and p.data[1, 1] == -np.inf and p.data[1, 0] == np.inf
    assert np.isfinite(p.data[0, 1]) and p.data[0, 1] < 1.0
    # A stray non-zero gradient on an infinite entry changes nothing either.
    p.grad = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    opt.step()
    assert p.data[0, 0] == -np.inf and p.data[1, 0] == np.inf


def test_masks_are_reapplied_every_step():
    p = param([1.0, 2.0, 3.0], zero=0.0)
    p.mask = np.array([True, False, True])
    opt = nn.Adam([p], lr=0.1, weight_decay=0.1)
    for _ in range(3):
        p.grad = np.ones(3)
        opt.step()
        assert p.data[1] == 0.0
    q = param([1.0, 2.0], zero=-np.inf)
    q.mask = np.array([False, True])
    q.grad = np.ones(2)
    nn.SGD([q], lr=1.0).step()
    assert_identical(q.data, np.array([-np.inf, 1.0]))


def test_parameters_without_gradient_are_skipped_and_zero_grad():
    p, q = param([1.0]), param([2.0])
    opt = nn.SGD([p, q], lr=1.0)
    p.grad = np.array([1.0])
    opt.step()
    assert p.data[0] == 0.0 and q.data[0] == 2.0
    opt.zero_grad()
    assert p.grad is None and q.grad is None


OPTIMISERS = [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.1}), ("AdamW", {"lr": 0.1})]


@pytest.mark.parametrize(("name", "kwargs"), OPTIMISERS)
def test_non_finite_gradient_raises_before_anything_changes(name, kwargs):
    """One NaN gradient used to leave the weight NaN for good: now step() raises, naming the parameter
    and the step, and leaves parameters and state as they were (so the batch can be skipped)."""
    p, q = param([1.0, 2.0]), param([3.0, -np.inf, 4.0], zero=-np.inf)
    opt = getattr(nn, name)([p, q], **kwargs)
    p.grad, q.grad = np.array([0.5, -0.5]), np.array([1.0, 0.0, -1.0])
    opt.step()
    before = ([p.data.copy(), q.data.copy()], copy.deepcopy(opt.state), opt.steps)
    p.grad, q.grad = np.array([0.5, -0.5]), np.array([np.nan, 0.0, np.inf])
    message = r"step 2: the gradient of parameter params\[1\] \(shape \(3,\)\) holds 1 NaN and 1 infinite"
    with pytest.raises(FloatingPointError, match=message):
        opt.step()
    assert_identical(p.data, before[0][0])
    assert_identical(q.data, before[0][1])
    assert opt.steps == before[2]
    for state, old in zip(opt.state, before[1], strict=True):
        assert state.keys() == old.keys()
        for key in state:
            assert_identical(np.asarray(state[key]), np.asarray(old[key]))
    opt.zero_grad()  # skip the batch: training goes on, finite
    p.grad, q.grad = np.array([0.5, -0.5]), np.array([1.0, 0.0, -1.0])
    opt.step()
    assert np.isfinite(p.data).all() and np.isfinite(q.data[[0, 2]]).all() and q.data[1] == -np.inf


@pytest.mark.parametrize(("name", "kwargs"), OPTIMISERS)
def test_gradients_on_tropical_zeros_are_ignored_even_nan(name, kwargs):
    """A -inf (pruned) weight keeps -inf whatever its gradient, finite or not, and raises nothing."""
    q = param([[-np.inf, 1.0], [2.0, -np.inf]], dtype=np.float32, zero=-np.inf)
    opt = getattr(nn, name)([q], **kwargs)
    for grad in ([[5.0, 1.0], [1.0, -3.0]], [[np.nan, 1.0], [1.0, np.inf]]):
        q.grad = np.array(grad, dtype=np.float32)
        opt.step()
        assert q.data[0, 0] == -np.inf and q.data[1, 1] == -np.inf
        assert np.isfinite(q.data[0, 1]) and np.isfinite(q.data[1, 0])


def test_non_finite_gradient_error_names_named_parameters():
    net = nn.Sequential(nn.Linear(3, 2, seed=0), nn.MaxPlus(2, 2, seed=1))
    opt = nn.Adam(net.named_parameters(), lr=0.1)
    assert opt.names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    before = net.state_dict()
    x = np.array([[1.0, np.nan, 0.0]], dtype=np.float32)
    net(x).sum().backward()
    with pytest.raises(FloatingPointError, match=r"step 1: the gradient of parameter '0\.weight' \(shape"):
        opt.step()
    for key, value in net.state_dict().items():
        assert_identical(value, before[key])


def test_float32_parameters_stay_float32_with_float64_gradients():
    p = param([1.0, 2.0], dtype=np.float32)
    p.grad = np.array([1.0, 1.0])
    nn.Adam([p]).step()
    assert p.data.dtype == np.float32


def test_optimiser_argument_errors():
    with pytest.raises(ValueError, match="empty"):
        nn.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="requires_grad"):
        nn.SGD([np.zeros(2)], lr=0.1)
    p = param([1.0])
    with pytest.raises(ValueError, match="twice"):
        nn.SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        nn.SGD([p], lr=-1)
    for kwargs in ({"lr": math.inf}, {"lr": math.nan}, {"lr": 0.1, "momentum": math.inf}):
        name = "momentum" if "momentum" in kwargs else "lr"
        with pytest.raises(ValueError, match=f"{name} must be >= 0 and finite"):
            nn.SGD([p], **kwargs)
    with pytest.raises(ValueError, match="eps must be >= 0 and finite, got inf"):
        nn.Adam([p], eps=math.inf)
    with pytest.raises(ValueError, match="weight_decay must be >= 0 and finite, got nan"):
        nn.AdamW([p], weight_decay=math.nan)
    with pytest.raises(ValueError, match="nesterov"):
        nn.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        nn.Adam([p], betas=(0.9, 1.0))


def test_step_lr_and_cosine():
    p = param([1.0])
    opt = nn.SGD([p], lr=1.0)
    sched = nn.StepLR(opt, step_size=3, gamma=0.5)
    lrs = []
    for _ in range(7):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    opt = nn.Adam([p], lr=0.1)
    cos = nn.CosineAnnealingLR(opt, T_max=4, eta_min=0.02)
    got = []
    for _ in range(4):
        cos.step()
        got.append(opt.lr)
    expected = [0.02 + 0.08 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)]
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    assert got[-1] == pytest.approx(0.02)


@pytest.mark.parametrize("kind", ["step", "cosine"])
def test_schedulers_match_torch(kind):
    torch = pytest.importorskip("torch")
    t = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([t], lr=0.3)
    opt = nn.SGD([param([0.0])], lr=0.3)
    if kind == "step":
        ts, ours = torch.optim.lr_scheduler.StepLR(topt, 2, 0.3), nn.StepLR(opt, 2, 0.3)
    else:
        ts, ours = (
            torch.optim.lr_scheduler.CosineAnnealingLR(topt, 5, 0.01),
            nn.CosineAnnealingLR(opt, 5, 0.01),
        )
    for _ in range(5):
        topt.step()
        ts.step()
        ours.step()
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_any_array_api_library(xp, name):
    """The update rules use only the array API: array-api-strict parameters give the NumPy result."""
    from tests.helpers import to_numpy

    start = np.array([[-np.inf, 1.0], [2.0, 3.0]])
    grads = [np.array([[0.0, 1.0], [0.5, -1.0]]), np.array([[0.0, -2.0], [1.0, 0.25]])]
    results = []
    for lib in (np, xp):
        p = nn.Parameter(lib.asarray(start.copy()), zero=-np.inf)
        p.mask = lib.asarray([[True, True], [False, True]])
        opt = getattr(nn, name)([p], lr=0.1, weight_decay=0.1)
        for g in grads:
            p.grad = lib.asarray(g)
            opt.step()
        results.append(to_numpy(p.data))
    assert_identical(results[1], results[0])
    assert results[0][0, 0] == -np.inf and results[0][1, 0] == -np.inf
