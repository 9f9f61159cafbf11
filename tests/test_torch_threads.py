"""tropic's CPU kernels inside torch use torch's intra-op thread count.

For torch tensors the kernels' thread count defaults to ``torch.get_num_threads()``, so
``torch.set_num_threads`` and DataLoader workers (which torch sets to one thread) hold tropic too;
``tropic.set_num_threads`` and ``TROPIC_NUM_THREADS`` still win; NumPy calls keep tropic's default.
The count is read where the kernels read it (``tropic.backends.numpy.kernels.get_num_threads``).
"""

from __future__ import annotations

import numpy as np
import pytest

import tropic
from tropic.backends.numpy import kernels

torch = pytest.importorskip("torch")

SIZE = 256  # 256^3 candidates: above the size at which the products go parallel


def threads_seen(monkeypatch, call) -> list[int]:
    seen: list[int] = []
    real = kernels.get_num_threads

    def spy() -> int:
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(kernels, "get_num_threads", spy)
    call()
    assert seen, "the kernels did not ask for a thread count"
    return seen


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    tropic.set_num_threads(None)


def _operands(library: str):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((SIZE, SIZE)), rng.standard_normal((SIZE, SIZE))
    return (torch.from_numpy(a), torch.from_numpy(b)) if library == "torch" else (a, b)


@pytest.mark.parametrize("count", [1, 3])
def test_torch_tensors_follow_torch_set_num_threads(monkeypatch, torch_threads, count):
    monkeypatch.delenv("TROPIC_NUM_THREADS", raising=False)
    torch.set_num_threads(count)
    a, b = _operands("torch")
    a.requires_grad_()
    forward = threads_seen(monkeypatch, lambda: tropic.maxplus_matmul(a, b).sum().backward())
    assert set(forward) == {count}


def test_numpy_arrays_keep_tropic_default_and_explicit_settings_win(monkeypatch, torch_threads):
    monkeypatch.delenv("TROPIC_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)
    a, b = _operands("numpy")
    assert threads_seen(monkeypatch, lambda: tropic.maxplus_matmul(a, b)) == [tropic.core.config._cpu_count]
    ta, tb = _operands("torch")
    tropic.set_num_threads(2)
    assert threads_seen(monkeypatch, lambda: tropic.maxplus_matmul(ta, tb)) == [2]
    tropic.set_num_threads(None)
    monkeypatch.setenv("TROPIC_NUM_THREADS", "3")
    assert threads_seen(monkeypatch, lambda: tropic.maxplus_matmul(ta, tb)) == [3]


def test_results_do_not_depend_on_torch_threads(torch_threads):
    a, b = _operands("torch")
    results = []
    for count in (1, 2, 4):
        torch.set_num_threads(count)
        results.append(tropic.minplus_matmul(a, b, return_indices=True))
    for values, winners in results[1:]:
        assert torch.equal(values, results[0][0]) and torch.equal(winners, results[0][1])


class _ThreadsInWorker(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        seen: list[int] = []
        real = kernels.get_num_threads
        kernels.get_num_threads = lambda: seen.append(real()) or seen[-1]
        try:
            tropic.maxplus_matmul(*_operands("torch"))
        finally:
            kernels.get_num_threads = real
        return seen[0]


def test_dataloader_workers_run_tropic_on_one_thread(monkeypatch):
    monkeypatch.delenv("TROPIC_NUM_THREADS", raising=False)
    loader = torch.utils.data.DataLoader(_ThreadsInWorker(), batch_size=None, num_workers=1)
    assert list(loader) == [1, 1]
