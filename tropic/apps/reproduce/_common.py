"""What the reproductions share: their settings, the data splits and one training loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tropic import autodiff as ad
from tropic import nn

__all__ = [
    "History",
    "Settings",
    "Split",
    "accuracy",
    "curve_panel",
    "curves",
    "fit",
    "load_classification",
    "training_size",
]


@dataclass
class Settings:
    """The options of ``tropic reproduce`` after parsing.

    Attributes
    ----------
    quick : bool
        Tiny budgets and widths (a test-sized run).
    seeds : int
        Seeds 0 .. seeds - 1; each seed fixes the data split, the initialisation and the batch order.
    epochs : int or None
        Overrides the paper module's main epoch budget (each module says what it scales).
    out : Path
    dataset : str
        ``"digits"`` (default), ``"mnist"`` or ``"fashion-mnist"`` (read from ``data_dir``).
    data_dir : Path or None
    log : callable
        Progress lines (stderr by default).
    progress : callable or None
        Called with the number of training steps just done (``tropic reproduce`` advances its
        progress bar with it); each paper module's ``steps(settings)`` is the total of a run.
    preset : str
        ``"tropic"`` (tropic's default initialisations) or ``"reference"`` (the paper code's, where
        the layers have one: the dmnn and bimonn papers).
    """

    quick: bool = False
    seeds: int = 3
    epochs: int | None = None
    out: Path = Path("reproductions")
    dataset: str = "digits"
    data_dir: Path | None = None
    log: Callable[[str], None] = field(default=print, repr=False)
    command: str = ""
    progress: Callable[[int], None] | None = field(default=None, repr=False, compare=False)
    preset: str = "tropic"

    def advance(self, steps: int = 1) -> None:
        """Report ``steps`` training steps done to :attr:`progress` (if any)."""
        if self.progress is not None:
            self.progress(steps)

    def budget(self, full: int, quick: int) -> int:
        """The main epoch budget: ``--epochs`` if given, else ``quick`` or ``full``."""
        if self.epochs is not None:
            return self.epochs
        return quick if self.quick else full


class Split(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


_CACHE: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}


def load_classification(settings: Settings, seed: int, val_fraction: float = 0.2) -> Split:
    """Flattened images in [0, 1]: train / validation / test.

    digits: scikit-learn's 8 x 8 digits split 75/25 into train/test with ``seed``
    (:func:`tropic.nn.data.load_digits_split`); MNIST / Fashion-MNIST: their official split, read
    from ``settings.data_dir`` by :func:`tropic.apps.datasets.load`. The validation set is the last
    ``val_fraction`` of the shuffled training set (the 80/20 split of the DMNN paper).
    """
    if settings.dataset == "digits":
        x_train, y_train, x_test, y_test = nn.data.load_digits_split(0.25, seed=seed)
    else:
        x_train, y_train, x_test, y_test = load_files(settings)
    x_train, y_train, x_val, y_val = nn.data.train_test_split(x_train, y_train, val_fraction, seed=seed)
    return Split(x_train, y_train, x_val, y_val, x_test, y_test)


def training_size(settings: Settings) -> int:
    """Samples in the training part of :func:`load_classification`'s split (the same for every seed):
    what the paper modules' ``steps`` count batches of."""
    return len(load_classification(settings, 0).x_train)


def load_files(settings: Settings) -> tuple[np.ndarray, ...]:
    """MNIST / Fashion-MNIST from ``settings.data_dir``, flattened (:func:`tropic.apps.datasets.load`), read
    once per process: every seed reuses it, and so does the run after ``tropic reproduce`` checked it."""
    from .. import datasets

    key = (settings.dataset, str(settings.data_dir))
    if key not in _CACHE:
        _CACHE[key] = datasets.load(settings.dataset, settings.data_dir, flatten=True)
    return _CACHE[key]


def predict(net: nn.Module, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Class predictions in evaluation mode, ``chunk`` samples at a time."""
    net.eval()
    out = []
    with ad.no_grad():
        for start in range(0, len(x), chunk):
            logits = net(x[start : start + chunk]).numpy()
            out.append(np.argmax(np.nan_to_num(logits, nan=-np.inf), axis=1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(net: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Share of correct predictions (evaluation mode)."""
    return float(np.mean(predict(net, x) == y))


@dataclass
class History:
    """Per-epoch metrics of :func:`fit` (validation accuracy after each epoch, training accuracy too
    when asked), the best-validation state and the time taken."""

    val_accuracy: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    seconds: float = 0.0


def fit(
    net: nn.Module,
    data: Split,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    train_accuracy: bool = False,
    regularizer: Callable[[nn.Module], Any] | None = None,
    on_epoch: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> History:
    """Adam + cross-entropy for ``epochs`` epochs, the batch order drawn from ``seed``.

    After each epoch: validation accuracy (and training-set accuracy if ``train_accuracy``, and the
    values ``on_epoch(net)`` returns). The state of the epoch with the best validation accuracy is
    kept in ``best_state`` (the first such epoch on ties). ``regularizer(net)`` is added to the loss.
    ``progress(1)`` is called after every step (``ceil(len(x_train) / batch_size)`` an epoch).
    """
    history = History()
    opt = nn.Adam(net.parameters(), lr=lr)
    gen = np.random.default_rng(seed)
    start = time.perf_counter()
    best = -1.0
    for epoch in range(epochs):
        net.train()
        total, count = 0.0, 0
        for xb, yb in nn.data.batches(data.x_train, data.y_train, batch_size, rng=gen):
            opt.zero_grad()
            loss = nn.cross_entropy(net(xb), yb)
            if regularizer is not None:
                loss = loss + regularizer(net)
            loss.backward()
            opt.step()
            total += float(loss.item()) * len(yb)
            count += len(yb)
            if progress is not None:
                progress(1)
        history.loss.append(total / max(count, 1))
        val = accuracy(net, data.x_val, data.y_val)
        history.val_accuracy.append(val)
        if train_accuracy:
            history.train_accuracy.append(accuracy(net, data.x_train, data.y_train))
        if on_epoch is not None:
            for key, value in on_epoch(net).items():
                history.extra.setdefault(key, []).append(float(value))
        if val > best:
            best, history.best_epoch, history.best_state = val, epoch, net.state_dict()
    history.seconds = time.perf_counter() - start
    return history


def curves(runs: list[list[float]]) -> tuple[list[float], list[float]]:
    """Mean and std per epoch over seeds (runs of unequal length are cut to the shortest)."""
    n = min((len(r) for r in runs), default=0)
    a = np.asarray([r[:n] for r in runs], dtype=float).reshape(len(runs), n)
    return a.mean(axis=0).tolist(), a.std(axis=0).tolist()


def curve_panel(
    runs: Mapping[str, list[list[float]]], title: str, xlabel: str, ylabel: str
) -> dict[str, Any]:
    """A :func:`tropic.apps.plots.line_plots` panel: for each label, its per-seed curves drawn as the mean
    with a ± std band (:func:`curves`)."""
    series, bands = {}, {}
    for label, per_seed in runs.items():
        series[label], bands[label] = curves(per_seed)
    return {"series": series, "bands": bands, "title": title, "xlabel": xlabel, "ylabel": ylabel}
