"""The issue's example under the default (Inductor) backend: ``torch.compile(head, fullgraph=True)`` of
``Linear -> BatchNorm1d -> tropic.torch.nn.MaxPlus (sparse) -> Linear`` runs, trains one step and
matches eager mode (values and gradients)."""

from __future__ import annotations

import copy
import importlib

import pytest

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def test_sparse_hybrid_head_compiles_with_inductor():
    """The issue's example: Linear -> BatchNorm1d -> sparse MaxPlus -> Linear, trained one step."""
    torch.manual_seed(0)
    head = torch.nn.Sequential(
        torch.nn.Linear(32, 32, bias=False),
        torch.nn.BatchNorm1d(32),
        tnn.MaxPlus(32, 32, init="sparse", count=64, seed=0),
        torch.nn.Linear(32, 10),
    )
    x, target = torch.randn(16, 32), torch.randint(0, 10, (16,))
    eager = copy.deepcopy(head)
    compiled = torch.compile(head, fullgraph=True)
    outputs = []
    for model, params in ((eager, eager.parameters()), (compiled, head.parameters())):
        opt = torch.optim.Adam(params, lr=1e-2)
        out = model(x)
        torch.nn.functional.cross_entropy(out, target).backward()
        opt.step()
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(head.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)  # after the Adam step
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)
    assert torch.isinf(head[2].weight).any()  # still sparse: -inf entries, not a finite sentinel
