"""Small data helpers: the scikit-learn digits set with a fixed split, and a mini-batch iterator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .init import as_rng

__all__ = ["batches", "load_digits_split", "train_test_split"]


def train_test_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float = 0.25, *, rng: Any = None, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``(x, y)`` with one permutation and cut off the last ``round(test_fraction * n)`` samples.

    Returns
    -------
    x_train, y_train, x_test, y_test : numpy.ndarray (new arrays)
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n = x.shape[0]
    n_test = round(test_fraction * n)
    order = as_rng(rng, seed).permutation(n)
    train, test = order[: n - n_test], order[n - n_test :]
    return x[train], y[train], x[test], y[test]


def load_digits_split(
    test_fraction: float = 0.25, *, seed: int = 0, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 8 x 8 digits of scikit-learn (1797 samples, 10 classes, bundled with it: no download),
    pixels scaled from [0, 16] to [0, 1], split by :func:`train_test_split` with ``seed``.

    Returns
    -------
    x_train (n, 64) dtype, y_train (n,) int64, x_test, y_test
    """
    from sklearn.datasets import load_digits  # the test extra; imported here, not at package import

    digits = load_digits()
    x = (digits.data / 16.0).astype(dtype)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_fraction, seed=seed)


def batches(
    x: np.ndarray,
    y: np.ndarray | None = None,
    batch_size: int = 32,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    rng: Any = None,
    seed: int | None = None,
) -> Iterator[Any]:
    """Iterate over mini-batches of ``x`` (and ``y``): one pass, in a fresh random order if ``shuffle``.

    Yields ``x_batch`` or ``(x_batch, y_batch)``; the last batch is shorter unless ``drop_last``.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = x.shape[0]
    if y is not None and y.shape[0] != n:
        raise ValueError(f"x and y must have the same number of samples, got {n} and {y.shape[0]}")
    order = as_rng(rng, seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx] if y is None else (x[idx], y[idx])
