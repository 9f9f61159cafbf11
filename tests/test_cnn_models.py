"""The sparse-hybrid paper's CIFAR-10 CNN and its four heads (tropic.nn.cnn_models): layer structure and
parameter counts against the reference notebook (kostfoto/Sparse-Morph, CIFAR10/cifar_experiment.ipynb),
shapes, the two initialisation presets, and the same model on both engines (from_tropic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import tropic.autodiff as ad  # noqa: E402
import tropic.nn as nn  # noqa: E402
from tropic.nn import cnn_models as cm  # noqa: E402
from tropic.nn import dmnn_models  # noqa: E402
from tropic.torch import nn as tnn  # noqa: E402

HEADS = ("relu", "maxout", "dense", "sparse")

# Parameters of the reference notebook's MLP(n_channels=128, n_class=10, n_hid=512, method=...):
# Conv_2d(a, b) = Conv2d(a, b, 3) with bias (9ab + b) + BatchNorm2d(b) (2b):
#   (3, 128): 3456 + 128 + 256 = 3840;  (128, 128): 147456 + 128 + 256 = 147840;
#   (128, 256): 294912 + 256 + 512 = 295680;  (256, 256) twice: 2 x (589824 + 256 + 512) = 1181184;
#   front end: 3840 + 147840 + 295680 + 1181184 = 1628544.
# Heads (256 -> 512 -> 10; last layer Linear(512, 10): 5120 + 10 = 5130):
#   "relu":   Linear(256, 512) 131072 + 512, BatchNorm1d(512) 1024, + 5130           = 137738
#   "maxout": 2 x [Linear(256, 512) 131584 + BatchNorm1d(512) 1024], + 5130           = 270346
#   "lmpl" (dense) and "lmpl2" (sparse, weights stored densely): Linear(256, 512, bias=False) 131072,
#             BatchNorm1d(512) 1024, MaxPlus(512, 512) 262144 + 512, + 5130          = 399882
FRONT_END_PARAMETERS = 1628544
PARAMETERS = {
    "relu": 1628544 + 137738,  # 1766282
    "maxout": 1628544 + 270346,  # 1898890
    "dense": 1628544 + 399882,  # 2028426
    "sparse": 1628544 + 399882,  # 2028426
}


def n_params(model):
    return sum(math.prod(p.shape) for p in model.parameters())


def state(layer):
    if isinstance(layer, torch.nn.Module):
        return {k: v.detach().numpy() for k, v in layer.state_dict().items()}
    return {k: np.asarray(v) for k, v in layer.state_dict().items()}


def images(batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32))


# -- structure -------------------------------------------------------------------------------------------


def test_front_end_structure_and_shape():
    front = cm.cifar_front_end(seed=0, dtype=np.float64)
    names = [type(m).__name__ for m in front]
    assert names == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 5 + ["Flatten"]
    convs = [m for m in front if isinstance(m, nn.Conv2d)]
    assert [m.weight.shape for m in convs] == [
        (128, 3, 3, 3),
        (128, 128, 3, 3),
        (256, 128, 3, 3),
        (256, 256, 3, 3),
        (256, 256, 3, 3),
    ]
    assert all(m.padding == (1, 1) and m.stride == (1, 1) and m.bias is not None for m in convs)
    assert all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in front if isinstance(m, nn.MaxPool2d))
    assert n_params(front) == FRONT_END_PARAMETERS
    assert front(images()).shape == (2, 256)


@pytest.mark.parametrize("head", HEADS)
def test_heads_structure_parameter_count_and_shape(head):
    net = cm.cifar_cnn(head, seed=0)
    assert len(net) == 2 and n_params(net) == PARAMETERS[head]
    top = net[1]
    names = [type(m).__name__ for m in top]
    expected = {
        "relu": ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"],
        "maxout": ["Linear", "BatchNorm1d", "_GroupMax", "Dropout", "Linear"],
        "dense": ["Linear", "BatchNorm1d", "MaxPlus", "Linear"],
        "sparse": ["Linear", "BatchNorm1d", "MaxPlus", "Linear"],
    }[head]
    assert names == expected
    first, last = top[0], top[len(top) - 1]
    assert first.in_features == 256 and last.out_features == 10 and last.bias is not None
    assert (first.bias is None) == (head in ("dense", "sparse"))  # bias-free only before max-plus
    if head == "maxout":
        assert first.out_features == 1024 and top[2].pieces == 2 and last.in_features == 512
    else:
        assert first.out_features == 512 and last.in_features == 512
    if head in ("relu", "maxout"):
        assert top[3].p == 0.5
    y = net.train()(images().astype(np.float32))
    assert y.shape == (2, 10) and np.all(np.isfinite(y.numpy()))


def test_same_seed_same_front_end_for_every_head():
    fronts = [state(cm.cifar_cnn(head, seed=3)[0]) for head in HEADS]
    for other in fronts[1:]:
        for key, value in fronts[0].items():
            np.testing.assert_array_equal(other[key], value)


# -- initialisation --------------------------------------------------------------------------------------


def test_reference_preset_draws_torch_defaults():
    net = cm.cifar_cnn("relu", seed=0)
    conv, linear = net[0][0], net[1][0]
    for layer, fan_in in ((conv, 27), (linear, 256)):
        bound = 1 / math.sqrt(fan_in)
        for values in (np.asarray(layer.weight.data), np.asarray(layer.bias.data)):
            assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
    own = cm.cifar_cnn("relu", preset="tropic", seed=0)
    assert not np.any(np.asarray(own[0][0].bias.data)) and not np.any(np.asarray(own[1][0].bias.data))


@pytest.mark.parametrize("head", ["dense", "sparse"])
def test_tropic_preset_max_plus_heads_are_hybrid_head(head):
    net = cm.cifar_cnn(head, preset="tropic", seed=5)
    gen = np.random.default_rng(5)
    cm.cifar_front_end(preset="tropic", rng=gen)
    count = 1024 if head == "sparse" else None
    expected = dmnn_models.hybrid_head(256, 512, 10, init=head, count=count, rng=gen)
    got = state(net[1])
    for key, value in state(expected).items():
        np.testing.assert_array_equal(got[key], value)


def test_sparse_layer_keeps_about_two_weights_per_neuron_and_minus_inf_elsewhere():
    for preset in ("reference", "tropic"):
        w = np.asarray(cm.cifar_cnn("sparse", preset=preset, seed=1)[1][2].weight.data)
        finite = np.isfinite(w)
        assert np.all(finite | (w == -np.inf))  # the tropical zero, never a finite sentinel
        if preset == "tropic":
            assert finite.sum() == 1024
        else:  # each kept with probability 1024 / 512^2: Binomial(262144, 1/256), sd about 32
            assert abs(int(finite.sum()) - 1024) < 200
    dense = np.asarray(cm.cifar_cnn("dense", seed=1)[1][2].weight.data)
    assert np.all(np.isfinite(dense)) and 0.9 < dense.std() < 1.1  # N(0, 1), no fan-in scaling


# -- both engines ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS)
def test_both_engines_same_values_outputs_and_gradients(head):
    net = cm.cifar_cnn(head, seed=0, dtype=np.float64).eval()  # eval: dropout is the identity
    mirror = tnn.from_tropic(net)
    assert not mirror.training
    expected = state(net)
    got = state(mirror)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)
    x = images()
    y = net(ad.tensor(x))
    y_t = mirror(torch.from_numpy(x))
    np.testing.assert_allclose(y_t.detach().numpy(), y.numpy(), rtol=1e-9, atol=1e-9)
    labels = np.array([1, 7])
    nn.cross_entropy(y, labels).backward()
    F.cross_entropy(y_t, torch.from_numpy(labels)).backward()
    grads = {n: np.asarray(p.grad) for n, p in net.named_parameters()}
    for name, p in mirror.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[name], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("head", ["dense", "sparse"])
def test_both_engines_agree_in_training_mode_without_dropout(head):
    net = cm.cifar_cnn(head, channels=8, hidden=32, seed=2, dtype=np.float64).train()
    mirror = tnn.from_tropic(net)
    x = images(batch=4)
    np.testing.assert_allclose(
        mirror(torch.from_numpy(x)).detach().numpy(), net(x).numpy(), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("head", HEADS)
def test_adam_step_changes_parameters_on_torch_engine(head):
    mirror = tnn.from_tropic(cm.cifar_cnn(head, channels=8, hidden=32, seed=0)).train()
    before = {k: v.detach().clone() for k, v in mirror.named_parameters()}
    optimizer = torch.optim.Adam(mirror.parameters(), lr=1e-3)  # the reference's optimiser
    x = torch.from_numpy(images(batch=4).astype(np.float32))
    F.cross_entropy(mirror(x), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    after = dict(mirror.named_parameters())
    last = len(mirror[1]) - 1
    changed = ["0.0.weight", "0.0.bias", "1.0.weight", f"1.{last}.weight", f"1.{last}.bias"]
    if head in ("dense", "sparse"):
        changed.append("1.2.weight")
    for name in changed:
        assert not torch.equal(after[name].detach(), before[name]), name
    if head == "sparse":  # missing weights get no gradient and stay the tropical zero
        missing = torch.isinf(before["1.2.weight"])
        assert torch.all(after["1.2.weight"].detach()[missing] == -math.inf)


def test_maxout_head_is_the_reference_two_piece_maxout():
    """Reference Maxout: pieces Linear_p -> BatchNorm1d_p, elementwise max; here features 2j, 2j + 1."""
    top = cm.cifar_cnn("maxout", channels=4, hidden=6, seed=0, dtype=np.float64)[1].eval()
    mirror = tnn.from_tropic(top)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 8)))
    lin, bn = mirror[0], mirror[1]
    z = bn(lin(x))
    pieces = [z[:, p::2] for p in range(2)]  # piece p of unit j: row 2j + p
    expected = mirror[4](torch.maximum(*pieces))
    np.testing.assert_allclose(mirror(x).detach().numpy(), expected.detach().numpy(), rtol=1e-12)


# -- bad arguments ---------------------------------------------------------------------------------------


def test_bad_head_raises_value_error_naming_head_and_the_allowed_values():
    with pytest.raises(
        ValueError, match=r"head must be one of 'relu', 'maxout', 'dense', 'sparse', got 'lmpl2'"
    ):
        cm.cifar_cnn("lmpl2")


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: cm.cifar_cnn("relu", preset="torch"), "preset"),
        (lambda: cm.cifar_cnn("dense", count=1024), "count"),
        (lambda: cm.cifar_cnn("sparse", count=0), "count"),
        (lambda: cm.cifar_cnn("relu", hidden=0), "hidden"),
        (lambda: cm.cifar_front_end(channels=0), "channels"),
        (lambda: cm.cifar_front_end(preset="paper"), "preset"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()
