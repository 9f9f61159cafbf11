"""Thread settings: respected, validated, and without influence on any result."""

from __future__ import annotations

import numpy as np
import pytest

import tropic
from tests.helpers import assert_identical


@pytest.fixture
def restore_threads():
    yield
    tropic.set_num_threads(None)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_bad_values(bad, restore_threads):
    with pytest.raises(ValueError, match="n must be a positive int"):
        tropic.set_num_threads(bad)


def test_environment_sets_the_default(monkeypatch, restore_threads):
    tropic.set_num_threads(None)
    monkeypatch.setenv("TROPIC_NUM_THREADS", "3")
    assert tropic.get_num_threads() == 3
    tropic.set_num_threads(1)
    assert tropic.get_num_threads() == 1


@pytest.mark.parametrize("semiring", ["maxplus", "minplus"])
def test_results_do_not_depend_on_the_thread_count(semiring, restore_threads):
    """Big enough to be split into row stripes; ties and infinities included."""
    rng = np.random.default_rng(7)
    a = rng.integers(-4, 4, (301, 200)).astype(np.float32)
    b = rng.integers(-4, 4, (200, 150)).astype(np.float32)
    a[5, :] = -np.inf
    b[:, 7] = np.inf
    product = getattr(tropic, f"{semiring}_matmul")
    results = []
    for threads in (1, 2, 3):
        tropic.set_num_threads(threads)
        results.append(product(a, b, return_indices=True))
    for values, indices in results[1:]:
        assert_identical(values, results[0][0])
        assert_identical(indices, results[0][1])


@pytest.mark.parametrize("element", ["structure", "rectangle"])
def test_morphology_does_not_depend_on_the_thread_count(element, restore_threads):
    """Large enough (> 2^20 candidates) for the compiled kernels to use a thread team."""
    rng = np.random.default_rng(8)
    images = rng.integers(-3, 3, (4, 160, 150)).astype(np.float32)
    images[0, :20, :20] = -np.inf
    kwargs = {"structure": rng.integers(-2, 2, (5, 5)).astype(np.float32)}
    if element == "rectangle":
        kwargs = {"size": (7, 6)}
    results = []
    for threads in (1, 2):
        tropic.set_num_threads(threads)
        results.append(tropic.dilation(images, mode="wrap", return_indices=True, **kwargs))
    for got, want in zip(results[1], results[0], strict=True):
        assert_identical(got, want)
