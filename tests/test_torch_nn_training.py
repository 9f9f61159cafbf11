"""A small CNN with a sparse hybrid head, trained with torch.optim.Adam on the 8x8 digits.

Front-end: torch Conv2d/ReLU/MaxPool; head (Fotopoulos et al. 2025): Linear (no bias) ->
BatchNorm1d -> tropic.torch.nn.MaxPlus (sparse, -inf entries) -> Linear. Fixed split and seeds;
the test accuracy must reach 95 % in 6 epochs (98.9 % here, in about 2 s on one thread), and the
sparse max-plus layer must stay sparse (its -inf entries never win, never get a gradient, never move).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import tropic.nn as tn

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip
pytest.importorskip("sklearn")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def cnn(hidden: int = 128) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)),
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        # the sparse hybrid head
        torch.nn.Linear(32 * 4 * 4, hidden, bias=False),
        torch.nn.BatchNorm1d(hidden),
        tnn.MaxPlus(hidden, hidden, init="sparse", count=2 * hidden, seed=0),
        torch.nn.Linear(hidden, 10),
    )


@pytest.fixture
def one_thread():
    """One torch thread: these tiny matrices gain nothing from more, and on a busy 2-core machine
    torch's OpenMP threads wait on each other (about 2 s of training becomes 2 minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cnn_with_sparse_hybrid_head_learns_digits(one_thread):
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in tn.data.load_digits_split(0.25, seed=0))
    torch.manual_seed(0)
    model = cnn()
    maxplus = model[9]
    dead = torch.isinf(maxplus.weight).clone()
    assert dead.float().mean() > 0.95  # about 2 finite inputs per neuron
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _epoch in range(6):
        model.train()
        for batch in torch.randperm(len(x_train), generator=generator).split(32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            assert not torch.any(maxplus.weight.grad[dead])  # -inf entries never win
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.95, accuracy
    assert torch.equal(torch.isinf(maxplus.weight), dead)  # still exactly as sparse, -inf not -1e9
    assert np.isfinite(maxplus.bias.detach().numpy()).all()
