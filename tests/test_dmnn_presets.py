"""Initialisation presets of the deep-morphological-network models and layers.

``preset="reference"`` must start from the values of the paper's reference code
(kostfoto/Morphological-Networks-as-Universal-Approximators @ b522dd3, ``mainMNNs.ipynb``): exact
values where they are deterministic (W = -1, W = 0, lambda = 3/4), the same distribution where they are
random (checked by support and by mean / standard deviation within 6 standard errors on thousands of
draws, with fixed seeds). ``preset="tropic"`` (the default) must stay bitwise what it was, and both
engines (tropic.nn, tropic.torch.nn) must start from the same values for the same seed.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

import tropic.nn as nn
from tropic.nn import dmnn_models as models
from tropic.nn import init
from tropic.nn.dmnn import DEP, MPM, DiagonalActivation, MPMResidual, SVDActivation
from tropic.nn.tropical import MaxPlus

MODELS = ["mp", "act_mp", "dep", "act_dep", "mpm", "rmpm", "mpm_svd", "hybrid_mlp"]
# Big enough for moment checks (a 256 x 256 hidden layer has 65536 weights), small enough to be quick.
SIZES = dict(in_features=64, hidden=256, out_features=10, blocks=2)
SMALL = dict(in_features=12, hidden=8, out_features=3, blocks=2)
REFERENCE_DIAGONAL_STD = 1.0 / 3.46  # the reference code's LinAct: randn(size) / 3.46


DEFAULT = object()  # build() without a preset argument


def build(name, preset=DEFAULT, sizes=SIZES, seed=0, **kwargs):
    if preset is not DEFAULT:
        kwargs["preset"] = preset
    return getattr(models, name)(**sizes, seed=seed, **kwargs)


def state(net):
    return {key: np.asarray(value) for key, value in net.state_dict().items()}


def assert_states_identical(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].tobytes() == b[key].tobytes(), key


def layers_of(net, cls):
    return [m for m in net.modules() if type(m) is cls]


def pooled(arrays):
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def assert_normal(values, mean, std, sigmas=6.0):
    """Sample mean and standard deviation within ``sigmas`` standard errors of N(mean, std^2)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    assert n >= 200
    assert abs(v.mean() - mean) < sigmas * std / math.sqrt(n), (v.mean(), mean)
    assert abs(v.std() - std) < sigmas * std / math.sqrt(2 * n), (v.std(), std)


def assert_uniform(values, low, high, sigmas=6.0):
    """Support within [low, high], reaching near both ends, and the moments of U(low, high)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n, width = v.size, high - low
    assert n >= 200
    slack = 1e-6 * width  # float32 rounding of the bounds
    assert v.min() >= low - slack and v.max() <= high + slack, (v.min(), v.max(), low, high)
    assert v.min() < low + 0.05 * width and v.max() > high - 0.05 * width
    std = width / math.sqrt(12.0)
    assert abs(v.mean() - (low + high) / 2) < sigmas * std / math.sqrt(n)
    # Standard error of the sample standard deviation of a uniform: width * sqrt(1/180) / sqrt(n).
    assert abs(v.std() - std) < sigmas * width * math.sqrt(1.0 / 180.0) / math.sqrt(n)


# -- preset argument ----------------------------------------------------------------------------


LAYER_BUILDERS = {
    "DiagonalActivation": lambda **kw: DiagonalActivation(6, seed=1, **kw),
    "SVDActivation": lambda **kw: SVDActivation(6, seed=1, **kw),
    "MPMResidual": lambda **kw: MPMResidual(6, seed=1, **kw),
}


@pytest.mark.parametrize("bad", ["paper", "Reference", "", None, 1])
@pytest.mark.parametrize("name", MODELS + list(LAYER_BUILDERS))
def test_unknown_preset_raises_naming_the_allowed_values(name, bad):
    make = LAYER_BUILDERS.get(name) or (lambda **kw: build(name, sizes=SMALL, **kw))
    with pytest.raises(ValueError, match=r"preset must be one of 'tropic', 'reference', got "):
        make(preset=bad)


@pytest.mark.parametrize("name", MODELS)
def test_default_preset_is_tropic_bitwise_and_reference_differs(name):
    default = state(build(name, sizes=SMALL, seed=5))
    assert_states_identical(default, state(build(name, "tropic", sizes=SMALL, seed=5)))
    reference = state(build(name, "reference", sizes=SMALL, seed=5))
    assert list(reference) == list(default)  # same layers, same parameter names and shapes
    assert all(reference[k].shape == default[k].shape for k in default)
    assert any(reference[k].tobytes() != default[k].tobytes() for k in default)


@pytest.mark.parametrize("name", list(LAYER_BUILDERS))
def test_layer_default_preset_is_tropic_bitwise(name):
    make = LAYER_BUILDERS[name]
    assert_states_identical(state(make()), state(make(preset="tropic")))
    default, reference = state(make()), state(make(preset="reference"))
    assert any(default[k].tobytes() != reference[k].tobytes() for k in default)


def test_layer_defaults_keep_tropics_distributions():
    a = DiagonalActivation(5, seed=3).weight.data
    np.testing.assert_array_equal(a, init.normal((5,), 3, np.float32, std=1.0 / math.sqrt(12.0)))
    layer = SVDActivation(5, seed=3, dtype=np.float64)
    m0 = init.he_normal((5, 5), 3, np.float64)
    np.testing.assert_allclose(svd_product(layer), m0, atol=1e-12)


# -- mp, act_mp ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mp", "act_mp"])
def test_max_plus_stacks_reference(name):
    net = build(name, "reference")
    maxplus = layers_of(net, MaxPlus)
    assert len(maxplus) == 4
    first, later = maxplus[0], maxplus[1:]
    assert first.weight.data.shape == (256, 64) and np.all(first.weight.data == -1.0)  # 0 * N(0, 1) - 1
    assert_normal(pooled(m.weight.data for m in later), -5.0, 3.0)  # 3 N(0, 1) - 5
    assert_normal(pooled(m.bias.data for m in maxplus), 0.0, 1.0)  # every bias N(0, 1)
    diagonals = layers_of(net, DiagonalActivation)
    assert len(diagonals) == (3 if name == "act_mp" else 0)
    assert all(d.preset == "reference" for d in diagonals)
    if diagonals:
        assert_normal(pooled(d.weight.data for d in diagonals), 0.0, REFERENCE_DIAGONAL_STD)


def test_mp_tropic_preset_shifts_the_first_layer_too():
    first = build("mp")[0].weight.data
    assert_normal(first, -5.0, 3.0)


# -- dep, act_dep -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dep", "act_dep"])
def test_dep_stacks_reference(name):
    net = build(name, "reference")
    deps = layers_of(net, DEP)
    assert len(deps) == 4
    first, later = deps[0], deps[1:]
    assert np.all(first.weight_max.data == 0.0) and np.all(first.weight_min.data == 0.0)
    assert_normal(pooled(w for m in later for w in (m.weight_max.data, m.weight_min.data)), 0.0, 1.0)
    assert all(m.mix_mode == "learned" for m in deps)
    assert_uniform(pooled(m.mix.data for m in deps), 0.0, 1.0)
    assert not any("bias" in key for key in net.state_dict())  # bias=False in the reference's DEP
    diagonals = layers_of(net, DiagonalActivation)
    assert len(diagonals) == (3 if name == "act_dep" else 0)
    assert all(d.preset == "reference" for d in diagonals)


def test_dep_tropic_preset_draws_the_first_layer():
    first = build("dep")[0]
    assert_normal(pooled([first.weight_max.data, first.weight_min.data]), 0.0, 1.0)


@pytest.mark.parametrize(("mix", "value"), [(0.75, 0.75), (3 / 4, 0.75), ("fixed", 0.5), (0, 0.0), (1, 1.0)])
@pytest.mark.parametrize("name", ["dep", "act_dep"])
def test_dep_fixed_mix(name, mix, value):
    net = build(name, "reference", sizes=SMALL, mix=mix)
    deps = layers_of(net, DEP)
    for m in deps:
        assert m.mix_mode == "fixed"
        assert np.all(np.asarray(m.mix) == np.float32(value))
    assert not any(p is m.mix for m in deps for p in net.parameters())  # a buffer, never trained


def test_dep_mix_three_quarters_forward():
    layer = DEP(4, 3, mix=0.75, seed=0, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((5, 4))
    wmax, wmin = layer.weight_max.data, layer.weight_min.data
    dil = np.max(x[:, None, :] + wmax[None], axis=-1)
    ero = np.min(x[:, None, :] + wmin[None], axis=-1)
    np.testing.assert_allclose(layer(x).numpy(), 0.75 * dil + 0.25 * ero, rtol=1e-15, atol=1e-15)


def test_dep_layer_zeros_init_and_defaults():
    zero = DEP(5, 4, init="zeros", seed=0)
    assert np.all(zero.weight_max.data == 0) and np.all(zero.weight_min.data == 0)
    assert_states_identical(state(DEP(5, 4, seed=2)), state(DEP(5, 4, init="normal", mix="learned", seed=2)))
    fixed = DEP(5, 4, mix="fixed", seed=2)
    assert np.all(np.asarray(fixed.mix) == 0.5)


@pytest.mark.parametrize("mix", [1.5, -0.1, float("nan"), True, "half", None])
def test_dep_bad_mix_raises(mix):
    with pytest.raises(ValueError, match="mix"):
        DEP(3, 2, mix=mix)


def test_dep_bad_init_raises():
    with pytest.raises(ValueError, match="init"):
        DEP(3, 2, init="uniform")


# -- mpm, rmpm ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mpm", "rmpm"])
def test_mpm_stacks_reference(name):
    net = build(name, "reference")
    mpms = layers_of(net, MPM)
    assert len(mpms) == 4
    assert np.all(mpms[0].weight.data == 0.0)  # alpha = 0: 0 * N(0, 1)
    assert_normal(pooled(m.weight.data for m in mpms[1:]), 0.0, 1.0)
    assert_normal(pooled(b for m in mpms for b in (m.bias_max.data, m.bias_min.data)), 0.0, 1.0)
    diagonals = layers_of(net, DiagonalActivation)
    assert len(diagonals) == 3 and all(d.preset == "reference" for d in diagonals)
    if name == "rmpm":
        assert [type(m).__name__ for m in net] == [
            "MPM",
            "DiagonalActivation",
            "MPMResidual",
            "MPMResidual",
            "MPM",
        ]


@pytest.mark.parametrize("name", ["mpm", "rmpm"])
def test_mpm_presets_share_the_mpm_layers_and_rescale_the_activations(name):
    """Both presets draw in the same order, so the MPM layers are bitwise equal and each diagonal
    activation of the reference is tropic's times sqrt(12) / 3.46."""
    tropic_net, reference_net = build(name, "tropic", seed=7), build(name, "reference", seed=7)
    for a, b in zip(layers_of(tropic_net, MPM), layers_of(reference_net, MPM), strict=True):
        assert_states_identical(state(a), state(b))
    for a, b in zip(
        layers_of(tropic_net, DiagonalActivation), layers_of(reference_net, DiagonalActivation), strict=True
    ):
        draws = a.weight.data.astype(np.float64) * math.sqrt(12.0)
        np.testing.assert_allclose(b.weight.data, draws * REFERENCE_DIAGONAL_STD, rtol=1e-6)
        assert not np.allclose(b.weight.data, a.weight.data, rtol=1e-4)


# -- mpm_svd ------------------------------------------------------------------------------------


def svd_product(layer):
    u, s, v = (np.asarray(t, dtype=np.float64) for t in (layer.u, layer.weight.data, layer.v))
    return u @ np.diag(s) @ v.T


def test_mpm_svd_reference():
    net = build("mpm_svd", "reference")
    mpms = layers_of(net, MPM)
    assert np.all(mpms[0].weight.data == 0.0)
    assert_normal(pooled(m.weight.data for m in mpms[1:]), 0.0, 1.0)
    svds = layers_of(net, SVDActivation)
    assert len(svds) == 3
    bound = 1.0 / math.sqrt(256)
    for layer in svds:
        u, v = np.asarray(layer.u, np.float64), np.asarray(layer.v, np.float64)
        np.testing.assert_allclose(u.T @ u, np.eye(256), atol=1e-5)
        np.testing.assert_allclose(v.T @ v, np.eye(256), atol=1e-5)
        assert np.all(np.diff(layer.weight.data) <= 0) and np.all(layer.weight.data > 0)
        assert_uniform(svd_product(layer), -bound, bound)  # torch's nn.Linear default weight


def test_mpm_svd_tropic_preset_is_he_normal():
    for layer in layers_of(build("mpm_svd"), SVDActivation):
        m0 = svd_product(layer)
        assert_normal(m0, 0.0, math.sqrt(2.0 / 256))
        assert np.abs(m0).max() > 2.0 / math.sqrt(256)  # outside the reference's support


def test_svd_activation_layer_reference_is_the_svd_of_a_fan_in_uniform_draw():
    layer = SVDActivation(7, preset="reference", seed=4, dtype=np.float64)
    expected = init.fan_in_uniform((7, 7), np.random.default_rng(4), np.float64)
    np.testing.assert_allclose(svd_product(layer), expected, atol=1e-12)
    assert layer.init == "fan_in_uniform"


def test_svd_activation_explicit_init_wins_over_the_preset():
    a = SVDActivation(6, init="he_normal", preset="reference", seed=2)
    assert_states_identical(state(a), state(SVDActivation(6, seed=2)))
    b = SVDActivation(6, init="fan_in_uniform", seed=2)
    assert_states_identical(state(b), state(SVDActivation(6, preset="reference", seed=2)))
    with pytest.raises(ValueError, match="init must be one of"):
        SVDActivation(6, init="lecun")


# -- hybrid_mlp ---------------------------------------------------------------------------------


def test_hybrid_mlp_reference():
    net = build("hybrid_mlp", "reference")
    linears = layers_of(net, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64, 256),
        (256, 256),
        (256, 256),
        (256, 10),
    ]
    for m in linears[:3]:
        bound = 1.0 / math.sqrt(m.in_features)
        assert_uniform(m.weight.data, -bound, bound)
    # Biases are short: check the support and pool the moments of the two 256-input layers.
    for m in linears:
        bound = 1.0 / math.sqrt(m.in_features)
        assert np.all(np.abs(m.bias.data) <= bound * (1 + 1e-6)) and np.any(m.bias.data != 0)
    last = linears[3].weight.data
    assert np.all(np.abs(last) <= (1 + 1e-6) / 16) and np.abs(last).max() > 0.9 / 16
    assert_uniform(pooled([linears[1].bias.data, linears[2].bias.data]), -1 / 16, 1 / 16)
    mpms = layers_of(net, MPM)
    assert len(mpms) == 3
    assert_normal(pooled(m.weight.data for m in mpms), 0.0, 1.0)  # the first MPM too: alpha = 1
    assert_normal(pooled(b for m in mpms for b in (m.bias_max.data, m.bias_min.data)), 0.0, 1.0)


def test_hybrid_mlp_tropic_preset_keeps_he_normal_and_zero_biases():
    linears = layers_of(build("hybrid_mlp"), nn.Linear)
    assert all(np.all(m.bias.data == 0) for m in linears)
    assert_normal(linears[1].weight.data, 0.0, math.sqrt(2.0 / 256))


# -- residual block, initialiser ----------------------------------------------------------------


def test_mpm_residual_reference_scale():
    block = MPMResidual(300, preset="reference", seed=0)
    tropic_block = MPMResidual(300, seed=0)
    assert_states_identical(state(block.mpm), state(tropic_block.mpm))
    assert block.scale.preset == "reference"
    np.testing.assert_allclose(
        block.scale.weight.data, tropic_block.scale.weight.data * math.sqrt(12.0) / 3.46, rtol=1e-6
    )


def test_diagonal_activation_reference_values():
    layer = DiagonalActivation(1000, preset="reference", seed=9, dtype=np.float64)
    expected = np.random.default_rng(9).standard_normal(1000) / 3.46
    np.testing.assert_allclose(layer.weight.data, expected, rtol=1e-15)
    assert_normal(layer.weight.data, 0.0, REFERENCE_DIAGONAL_STD)


def test_fan_in_uniform():
    w = init.fan_in_uniform((300, 25), 0, np.float64)
    assert_uniform(w, -0.2, 0.2)
    b = init.fan_in_uniform((5000,), 1, np.float64, fan_in=25)
    assert_uniform(b, -0.2, 0.2)
    assert_uniform(init.fan_in_uniform((5000,), 1, np.float64), -1 / math.sqrt(5000), 1 / math.sqrt(5000))
    with pytest.raises(ValueError, match="fan_in"):
        init.fan_in_uniform((3,), 0, fan_in=0)


# -- both engines -------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["reference", "tropic"])
@pytest.mark.parametrize("name", MODELS)
def test_both_engines_start_from_the_same_values(name, preset):
    torch = pytest.importorskip("torch")
    tnn = importlib.import_module("tropic.torch.nn")
    kwargs = {"mix": 0.75} if name == "act_dep" else {}
    net = build(name, preset, sizes=SMALL, seed=11, dtype=np.float64, **kwargs)
    model = getattr(tnn, name)(**SMALL, preset=preset, seed=11, dtype=torch.float64, **kwargs)
    ours, theirs = state(net), {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert_states_identical(ours, theirs)
    x = np.random.default_rng(0).standard_normal((4, SMALL["in_features"]))
    out = model.eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, net.eval()(x).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("DiagonalActivation", {"preset": "reference"}),
        ("SVDActivation", {"preset": "reference"}),
        ("MPMResidual", {"preset": "reference"}),
        ("DEP", {"mix": 0.75, "init": "zeros"}),
    ],
)
def test_both_engines_layers(name, kwargs):
    torch = pytest.importorskip("torch")
    tnn = importlib.import_module("tropic.torch.nn")
    args = (6, 4) if name == "DEP" else (6,)
    layer = getattr(nn.dmnn, name)(*args, seed=3, dtype=np.float64, **kwargs)
    module = getattr(tnn, name)(*args, seed=3, dtype=torch.float64, **kwargs)
    theirs = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    assert_states_identical(state(layer), theirs)
