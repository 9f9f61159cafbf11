"""tropic.nn.Module mechanics: registration, naming, modes, state dicts and the .npz round trip."""

from __future__ import annotations

import numpy as np
import pytest

import tropic.autodiff as ad
import tropic.nn as nn
from tests.helpers import assert_identical


class Block(nn.Module):
    def __init__(self, seed):
        super().__init__()
        self.lin = nn.Linear(4, 4, seed=seed)
        self.scale = nn.Parameter(np.ones(4, dtype=np.float32))
        self.register_buffer("count", np.zeros(1, dtype=np.float32))

    def forward(self, x):
        return self.lin(x) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(np.zeros(2, dtype=np.float32))
        self.body = nn.Sequential(Block(0), nn.ReLU(), Block(1))
        self.head = nn.ModuleList([nn.Linear(4, 2, seed=2)])

    def forward(self, x):
        return self.head[0](self.body(x)) + self.alpha


def test_named_parameters_order_and_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "alpha",
        "body.0.scale",
        "body.0.lin.weight",
        "body.0.lin.bias",
        "body.2.scale",
        "body.2.lin.weight",
        "body.2.lin.bias",
        "head.0.weight",
        "head.0.bias",
    ]
    assert [id(p) for p in net.parameters()] == [id(p) for _, p in net.named_parameters()]
    assert [n for n, _ in net.named_buffers()] == ["body.0.count", "body.2.count"]
    assert [n for n, _ in net.named_modules()] == [
        "", "body", "body.0", "body.0.lin", "body.1", "body.2", "body.2.lin", "head", "head.0",
    ]  # fmt: skip
    assert [type(m).__name__ for m in net.children()] == ["Sequential", "ModuleList"]


def test_registration_order_follows_assignment_and_reassignment_replaces():
    m = nn.Module()
    m.b = nn.Parameter(np.zeros(1))
    m.a = nn.Parameter(np.ones(1))
    assert [n for n, _ in m.named_parameters()] == ["b", "a"]
    m.b = nn.Linear(1, 1, seed=0)  # a parameter name becomes a sub-module
    assert [n for n, _ in m.named_parameters()] == ["a", "b.weight", "b.bias"]
    with pytest.raises(TypeError, match="parameter 'a'"):
        m.a = np.zeros(1)
    del m.a
    assert [n for n, _ in m.named_parameters()] == ["b.weight", "b.bias"]
    m.plain = 3  # ordinary attributes are not registered
    assert m.plain == 3 and "plain" not in m.state_dict()


def test_shared_parameter_is_listed_once():
    lin = nn.Linear(3, 3, seed=0)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(net.parameters())) == 2
    assert list(net.state_dict()) == ["0.weight", "0.bias"]


def test_forgetting_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Bad()


def test_sequential_indexing_len_iter_and_forward():
    a, b, c = nn.Linear(3, 4, seed=0), nn.ReLU(), nn.Linear(4, 2, seed=1)
    net = nn.Sequential(a, b, c)
    assert len(net) == 3 and net[0] is a and net[-1] is c and list(net) == [a, b, c]
    assert isinstance(net[1:], nn.Sequential) and list(net[1:]) == [b, c]
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    assert_identical(net(x).data, c(b(a(x))).data)
    with pytest.raises(IndexError):
        net[3]
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(a, "relu")


def test_module_list():
    ml = nn.ModuleList()
    ml.append(nn.ReLU()).extend([nn.Tanh(), nn.Sigmoid()])
    assert len(ml) == 3 and type(ml[1]).__name__ == "Tanh"
    ml[1] = nn.Softplus()
    assert [type(m).__name__ for m in ml] == ["ReLU", "Softplus", "Sigmoid"]
    with pytest.raises(TypeError):
        ml.append(3)


def test_train_eval_and_binary_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    assert not any(m.binary_mode for m in net.modules())
    assert net.binary() is net
    assert all(m.binary_mode for m in net.modules())
    net.binary(False)
    assert not any(m.binary_mode for m in net.modules())
    with pytest.raises(TypeError):
        net.train("no")


def test_zero_grad_and_gradients_reach_every_parameter():
    net = Net()
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    ad.sum(net(x) * net(x)).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_apply_visits_children_first():
    net = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Tanh()))
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Tanh", "Sequential", "ReLU", "Sequential"]  # reversed pre-order: children first


def test_state_dict_is_a_copy_and_nested():
    net = Net()
    state = net.state_dict()
    assert list(state) == [n for n, _ in net.named_parameters()] + ["body.0.count", "body.2.count"]
    state["alpha"][...] = 5.0
    assert np.all(net.alpha.data == 0.0)


def test_load_state_dict_keeps_parameter_objects_and_copies():
    src, dst = Net(), Net()
    src.alpha.data = np.array([1.0, 2.0], dtype=np.float32)
    before = [id(p) for p in dst.parameters()]
    state = src.state_dict()
    dst.load_state_dict(state)
    assert [id(p) for p in dst.parameters()] == before
    for (n, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        assert_identical(a, b), n
    state["alpha"][...] = 9.0
    assert np.all(dst.alpha.data != 9.0)


def test_strict_load_errors_name_the_keys():
    net = Net()
    state = net.state_dict()
    del state["head.0.bias"]
    state["extra.weight"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['head.0.bias'\].*unexpected keys \['extra.weight'\]"):
        net.load_state_dict(state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert missing == ["head.0.bias"] and unexpected == ["extra.weight"]


def test_load_checks_shape_and_dtype_before_changing_anything():
    net = Net()
    before = net.state_dict()
    state = net.state_dict()
    state["alpha"] = np.zeros(2, dtype=np.float32) + 1
    state["head.0.weight"] = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"head.0.weight: expected shape \(2, 4\)"):
        net.load_state_dict(state)
    state["head.0.weight"] = np.zeros((2, 4), dtype=np.float64)
    with pytest.raises(ValueError, match="dtype float32"):
        net.load_state_dict(state)
    assert_identical(net.alpha.data, before["alpha"])  # nothing was loaded


def test_npz_round_trip_is_bitwise_with_inf_weights_and_running_stats(tmp_path):
    def make(seed):
        return nn.Sequential(
            nn.Linear(8, 16, bias=False, seed=seed),
            nn.BatchNorm1d(16),
            nn.MaxPlus(16, 16, init="sparse", p=0.2, seed=seed + 1),
            nn.MinPlus(16, 6, init="sparse", p=0.3, seed=seed + 2),
            nn.Linear(6, 3, seed=seed + 3),
        )

    net = make(0)
    rng = np.random.default_rng(0)
    for _ in range(3):  # move the running statistics away from their initial values
        net(rng.standard_normal((10, 8)).astype(np.float32))
    net.eval()
    x = rng.standard_normal((7, 8)).astype(np.float32)
    expected = net(x).data
    assert np.isneginf(net[2].weight.data).any() and np.isposinf(net[3].weight.data).any()
    assert not np.all(net[1].running_mean == 0)
    path = tmp_path / "net.npz"
    net.save(path)
    other = make(10).eval()
    assert not np.array_equal(other(x).data, expected)
    other.load(path)
    assert_identical(other(x).data, expected)
    for key, value in nn.load_state(path).items():
        assert_identical(other.state_dict()[key], value)
    assert int(other[1].num_batches_tracked) == 3


def test_save_and_load_take_the_same_path(tmp_path):
    """``save("model")`` writes ``model.npz`` (NumPy's rule): ``load("model")`` reads it back (it used
    to look for a file named ``model``); a file at exactly the given name is read when no ``.npz``
    sibling exists."""
    net, other = Net(), Net()
    for p in net.parameters():
        p.data = p.data + 1
    net.save(tmp_path / "model")
    assert (tmp_path / "model.npz").is_file() and not (tmp_path / "model").exists()
    for path in (tmp_path / "model", str(tmp_path / "model"), tmp_path / "model.npz"):
        other.load(path)
        for key, value in net.state_dict().items():
            assert_identical(other.state_dict()[key], value)
    assert set(nn.load_state(tmp_path / "model")) == set(net.state_dict())
    with open(tmp_path / "weights.bin", "wb") as stream:  # savez to a handle appends nothing
        np.savez(stream, **net.state_dict())
    Net().load(tmp_path / "weights.bin")
    with pytest.raises(FileNotFoundError):
        Net().load(tmp_path / "missing")


def test_strict_load_from_a_file_names_the_file_and_the_keys(tmp_path):
    net = Net()
    state = net.state_dict()
    state["extra"] = np.zeros(2)
    del state["alpha"]
    np.savez(tmp_path / "odd.npz", **state)
    with pytest.raises(KeyError, match=r"odd\.npz does not match Net: missing keys \['alpha'\], unexpected"):
        net.load(tmp_path / "odd.npz")
    missing, unexpected = net.load(tmp_path / "odd.npz", strict=False)
    assert (missing, unexpected) == (["alpha"], ["extra"])


def test_to_casts_floating_state():
    net = nn.Sequential(nn.Linear(3, 2, seed=0), nn.BatchNorm1d(2)).to(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net[1].running_mean.dtype == np.float64 and net[1].num_batches_tracked.dtype == np.int64


def test_register_buffer_checks():
    m = nn.Module()
    m.w = nn.Parameter(np.zeros(1))
    with pytest.raises(ValueError, match="already a parameter"):
        m.register_buffer("w", np.zeros(1))
    with pytest.raises(ValueError, match=r"without '\.'"):
        m.register_buffer("a.b", np.zeros(1))
    with pytest.raises(TypeError, match="array"):
        m.register_buffer("b", [1, 2])


def test_parameter_is_a_tensor_with_grad_and_zero():
    p = nn.Parameter(np.zeros(3), zero=-np.inf)
    assert isinstance(p, ad.Tensor) and p.requires_grad and p.zero == -np.inf and p.mask is None
    with pytest.raises(TypeError):
        nn.Parameter(np.zeros(3, dtype=np.int64))


def test_repr_shows_the_tree():
    text = repr(nn.Sequential(nn.Linear(2, 3, seed=0), nn.MaxPlus(3, 1, seed=0)))
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in text
    assert "(1): MaxPlus(in_features=3, out_features=1" in text


def test_public_names_resolve():
    assert len(set(nn.__all__)) == len(nn.__all__)
    for name in nn.__all__:
        assert getattr(nn, name) is not None, name


def test_to_namespace_trains_like_numpy_and_saves_back(tmp_path):
    """A network moved to array-api-strict (the core's reference path) trains step for step like the
    NumPy one (pruning mask, dropout and BatchNorm statistics included), and its file loads into NumPy."""
    xps = pytest.importorskip("array_api_strict")
    from tests.helpers import to_numpy

    def make():
        net = nn.Sequential(
            nn.Linear(8, 16, bias=False, seed=0),
            nn.BatchNorm1d(16),
            nn.MaxPlus(16, 16, init="sparse", p=0.3, seed=1),
            nn.MinPlus(16, 8, seed=2),
            nn.Dropout(0.2, seed=3),
            nn.Linear(8, 3, seed=4),
        )
        nn.pruning.l1_unstructured(net[3], 0.25)
        return net

    ref, moved = make(), make().to(xps)
    assert type(moved[3].weight_mask) is not np.ndarray and moved[3].weight.mask is moved[3].weight_mask
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 8)).astype(np.float32)
    y = rng.integers(0, 3, 10)
    opts = [nn.Adam(ref.parameters(), lr=0.01), nn.Adam(moved.parameters(), lr=0.01)]
    for _ in range(3):
        for net, opt, xb, yb in ((ref, opts[0], x, y), (moved, opts[1], xps.asarray(x), xps.asarray(y))):
            opt.zero_grad()
            nn.cross_entropy(net(xb), yb).backward()
            opt.step()
    moved_state = moved.state_dict()
    assert list(moved_state) == list(ref.state_dict())
    for name, a in ref.state_dict().items():  # the same NumPy arithmetic underneath: bitwise
        assert_identical(to_numpy(moved_state[name]), a)
    assert np.all(to_numpy(moved[3].weight.data)[~ref[3].weight_mask] == np.inf)
    moved.save(tmp_path / "strict.npz")
    back = make()
    back.load(tmp_path / "strict.npz")
    ref.eval(), moved.eval(), back.eval()
    assert_identical(back(x).data, to_numpy(moved(xps.asarray(x)).data))


def test_deepcopy_and_pickle_give_independent_equal_networks():
    import copy
    import pickle

    net = nn.Sequential(
        nn.Linear(3, 4, seed=0), nn.BatchNorm1d(4), nn.MaxPlus(4, 2, init="sparse", p=0.5, seed=1)
    )
    nn.pruning.l1_unstructured(net[0], 0.5)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert_identical(clone(x).data, net(x).data)
        assert clone[0].weight is not net[0].weight
        assert clone[0].weight.mask is clone[0].weight_mask  # the mask link survives
        clone[0].weight.data = clone[0].weight.data + 1
        assert not np.array_equal(clone[0].weight.data, net[0].weight.data)
