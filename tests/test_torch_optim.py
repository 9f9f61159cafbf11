"""Tropical zeros (exact ``-inf`` / ``+inf`` weights) under torch.optim and weight averaging.

With ``weight_decay > 0`` torch's optimisers turn ``-inf`` into NaN (``-inf + inf``), and so does
torch's ``AveragedModel`` (``-inf - -inf``). tropic.torch keeps them (:mod:`tropic.torch.optim`):
checked against a shadow run of the same optimiser on plain tensors where the zeros are 0 (a dead
entry: gradient 0, decay of 0 is 0), which must give bitwise the same finite entries and state
there (the state at a zero is reset to 0).
"""

from __future__ import annotations

import copy
import importlib

import pytest

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip
optim = importlib.import_module("tropic.torch.optim")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

OPTIMIZERS = [
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}),
    (torch.optim.SGD, {"lr": 0.1, "weight_decay": 1e-2, "nesterov": True, "momentum": 0.5}),
    (torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-2}),
    (torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-2, "amsgrad": True, "foreach": False}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.5}),
    (torch.optim.Adamax, {"lr": 1e-2, "weight_decay": 1e-2}),
    (torch.optim.Adagrad, {"lr": 1e-2, "weight_decay": 1e-2}),
    (torch.optim.RMSprop, {"lr": 1e-2, "weight_decay": 1e-2, "momentum": 0.5}),
    (torch.optim.NAdam, {"lr": 1e-2, "weight_decay": 1e-2}),
    (torch.optim.RAdam, {"lr": 1e-2, "weight_decay": 1e-2}),
    (torch.optim.ASGD, {"lr": 1e-2, "weight_decay": 1e-2}),
    (torch.optim.Adadelta, {"lr": 1.0, "weight_decay": 1e-2}),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(OPTIMIZERS)]


def model() -> torch.nn.Module:
    """Sparse max-plus and min-plus layers (exact -inf / +inf entries) and a sparse tropical conv."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        tnn.MaxPlusConv2d(1, 2, 2, init="sparse", p=0.5, seed=0, dtype=torch.float64),
        torch.nn.Flatten(),
        tnn.MaxPlus(18, 6, init="sparse", p=0.4, seed=1, dtype=torch.float64),
        tnn.MinPlus(6, 3, init="sparse", p=0.5, seed=2, dtype=torch.float64),
    )


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64),
            torch.randn(4, 3, generator=g, dtype=torch.float64),
        )
        for _ in range(steps)
    ]


def zeros_of(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: ~torch.isfinite(p.detach()) for k, p in m.named_parameters()}


@pytest.mark.parametrize(("cls", "kwargs"), OPTIMIZERS, ids=IDS)
def test_decay_keeps_tropical_zeros_and_matches_a_shadow_run(cls, kwargs):
    net = model()
    zeros = zeros_of(net)
    assert sum(int(z.sum()) for z in zeros.values()) > 10  # the model has zeros to lose
    start = {k: p.detach().clone() for k, p in net.named_parameters()}
    # The shadow: plain tensors (no tropic mark), zeros replaced by 0, fed the same gradients.
    shadow = {k: torch.where(zeros[k], 0.0, v).requires_grad_() for k, v in start.items()}
    opt = cls(net.parameters(), **kwargs)
    shadow_opt = cls(list(shadow.values()), **kwargs)
    for x, t in batches(4):
        opt.zero_grad()
        ((net(x) - t) ** 2).sum().backward()
        for k, p in net.named_parameters():
            shadow[k].grad = p.grad.clone()
        opt.step()
        shadow_opt.step()
    for (k, p), s in zip(net.named_parameters(), shadow.values(), strict=True):
        p = p.detach()
        assert torch.equal(p[zeros[k]], start[k][zeros[k]]), k  # every -inf / +inf kept, exactly
        assert torch.equal(p[~zeros[k]], s.detach()[~zeros[k]]), k  # finite entries: torch's own step
        assert not torch.isnan(p).any(), k
        for name, value in opt.state[net.get_parameter(k)].items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                alive = ~zeros[k]
                assert torch.equal(value[alive], shadow_opt.state[s][name][alive]), (k, name)
                assert not value[zeros[k]].any(), (k, name)  # reset: no inf or NaN left in the state


def test_without_decay_nothing_is_recorded_and_zeros_stay():
    net = model()
    zeros = zeros_of(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, t = batches(1)[0]
    ((net(x) - t) ** 2).sum().backward()
    optim._record(opt, (), {})
    assert opt not in optim._BEFORE_STEP
    opt.step()
    for k, p in net.named_parameters():
        assert torch.isinf(p[zeros[k]]).all() and not torch.isnan(p).any(), k


def test_a_closure_sees_the_model_as_it_is():
    """Nothing is changed before the step: the closure's forward uses the real -inf entries."""
    net = model()
    x, t = batches(1)[0]
    expected = ((net(x) - t) ** 2).sum().item()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=0.1)
    seen = []

    def closure():
        opt.zero_grad()
        loss = ((net(x) - t) ** 2).sum()
        loss.backward()
        seen.append(loss.item())
        return loss

    opt.step(closure)
    assert seen == [expected]
    assert not any(torch.isnan(p).any() for p in net.parameters())


def test_only_tropic_parameters_are_kept():
    """A plain torch parameter with an -inf is torch's business: it becomes NaN as in torch."""
    plain = torch.nn.Parameter(torch.tensor([0.5, -float("inf")], dtype=torch.float64))
    opt = torch.optim.SGD([plain], lr=0.1, weight_decay=0.1)
    plain.grad = torch.zeros_like(plain)
    opt.step()
    assert torch.isnan(plain[1])
    assert optim.has_tropical_zero(tnn.MaxPlus(2, 2).weight) and not optim.has_tropical_zero(plain)
    assert optim.has_tropical_zero(tnn.MaxPlus(2, 2).bias)  # inside the max: -inf is "no bias"
    assert not optim.has_tropical_zero(tnn.MPM(2, 2).weight)  # MPM's shared weight: its zero is 0


AVERAGING = {
    "swa": {},
    "ema": {"multi_avg_fn": torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)},
    "avg_fn": {"avg_fn": torch.optim.swa_utils.get_ema_avg_fn(0.8)},
    "use_buffers": {"use_buffers": True},
}


@pytest.mark.parametrize("name", sorted(AVERAGING))
def test_averaged_model_keeps_zeros_and_is_torch_elsewhere(name):
    net = model()
    zeros = zeros_of(net)
    ours = optim.AveragedModel(net, **AVERAGING[name])
    theirs = torch.optim.swa_utils.AveragedModel(net, **AVERAGING[name])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for x, t in batches(3):
        opt.zero_grad()
        ((net(x) - t) ** 2).sum().backward()
        opt.step()
        ours.update_parameters(net)
        theirs.update_parameters(net)
    their_params = dict(theirs.module.named_parameters())
    for k, p in ours.module.named_parameters():
        p = p.detach()
        assert torch.equal(p[zeros[k]], net.get_parameter(k).detach()[zeros[k]]), k
        assert torch.equal(p[~zeros[k]], their_params[k].detach()[~zeros[k]]), k
        if zeros[k].any() and name != "avg_fn":  # what the class is for: torch's lerp gives NaN there
            assert torch.isnan(their_params[k].detach()[zeros[k]]).all(), k
    x = batches(1)[0][0]
    assert torch.isfinite(ours(x)).all()


def test_averaged_model_averages_a_zero_that_appears_later():
    """An entry finite in the average and -inf in the model averages to -inf (no NaN), as torch's."""
    net = tnn.MaxPlus(3, 2, seed=0, dtype=torch.float64)
    ours = optim.AveragedModel(net)
    with torch.no_grad():
        net.weight[0, 0] = -float("inf")
    ours.update_parameters(net)
    ours.update_parameters(net)
    assert ours.module.weight[0, 0] == -float("inf")
    assert torch.isfinite(copy.deepcopy(ours).module.weight[1]).all()
