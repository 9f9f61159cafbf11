"""The headline benchmarks whose history is kept (``benchmarks/results/``, see ``scripts/asv_history.py``).

A max-plus product, a max-plus convolution, a non-flat dilation and two model training steps, each
beside the code a user would otherwise write, timed in the same process:

========================  ==================================================  ============================
case                      tropic                                              baseline
========================  ==================================================  ============================
product                   ``maxplus_matmul``, 256 x 256 @ 256 x 256 float32   ``np.max(a[:, :, None] + b)``
conv2d                    ``maxplus_conv2d``, x 8x16x32x32, w 16x16x3x3, p 1  the same broadcast over windows
dilation                  ``dilation`` 5x5 non-flat on 8x16x64x64, "reflect"  ``scipy.ndimage.grey_dilation``
mpm step                  ``tnn.mpm`` 784 -> 256 x 4 -> 10, batch 64, Adam    its linear network (Linear+ReLU)
sparse-morph step         ``tnn.hybrid_head`` 512 -> 512 -> 10, batch 64      its linear network
========================  ==================================================  ============================

asv runs this module on past commits too, so it differs from the rest of the suite on purpose: it
imports nothing of tropic but the public operators and torch modules above, whose signatures have not
changed since the first compiled kernels (e0a803d), and defines its baselines itself. A case whose
operator a commit lacks is skipped there (``NotImplementedError``: no point in the history) instead of
failing the module. The sizes are fixed, never the smoke sizes, so that the CI measurement of HEAD
compares with the stored results; the timing settings keep one commit's pass near a minute.

``track_tropic_over_baseline`` is tropic's time divided by the baseline's in the same process (below
1: tropic is faster; lower is better, as for a time, which is how ``asv compare`` reads it; the model
steps' baseline is the linear network, and issue 15's target there is at most 1.5): a ratio reads the
same across machines where absolute times do not.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np

CASES = ("product", "conv2d", "dilation", "mpm step", "sparse-morph step")
IMPLEMENTATIONS = ("tropic", "baseline")


def _random(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _require(module: str):
    """Import ``module`` or skip (asv: ``NotImplementedError``) where this commit or machine lacks it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise NotImplementedError(f"{module} cannot be imported here: {error}") from error


def product(implementation: str) -> Callable[[], object]:
    a, b = _random(256, 256, seed=1), _random(256, 256, seed=2)
    if implementation == "tropic":
        maxplus_matmul = _require("tropic").maxplus_matmul
        return lambda: maxplus_matmul(a, b)
    return lambda: np.max(a[:, :, None] + b[None, :, :], axis=1)


def conv2d(implementation: str) -> Callable[[], object]:
    x, w = _random(8, 16, 32, 32, seed=1), _random(16, 16, 3, 3, seed=2)
    if implementation == "tropic":
        maxplus_conv2d = _require("tropic").maxplus_conv2d
        return lambda: maxplus_conv2d(x, w, padding=1)

    def broadcast():  # y[b, o, i, j] = max over (c, u, v) of x_pad[b, c, i + u, j + v] + w[o, c, u, v]
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
        return np.max(windows[:, None] + w[None, :, :, None, None], axis=(2, 5, 6))

    return broadcast


def dilation(implementation: str) -> Callable[[], object]:
    images, structure = _random(8, 16, 64, 64, seed=1), _random(5, 5, seed=2)
    if implementation == "tropic":
        tropic_dilation = _require("tropic").dilation
        return lambda: tropic_dilation(images, structure, mode="reflect")
    ndimage = _require("scipy.ndimage")

    def per_image():  # SciPy has no batch axis
        flat = images.reshape(-1, 64, 64)
        out = np.stack([ndimage.grey_dilation(image, structure=structure) for image in flat])
        return out.reshape(images.shape)

    return per_image


def model_step(name: str, implementation: str) -> Callable[[], object]:
    """One Adam training step (forward, cross-entropy, backward, update) of a batch of 64."""
    torch = _require("torch")
    nn = torch.nn
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    features = 784 if name == "mpm step" else 512
    x = torch.rand(64, features, generator=generator)
    target = torch.randint(0, 10, (64,), generator=generator)
    if implementation == "tropic":
        tnn = _require("tropic.torch.nn")
        if name == "mpm step":
            model = tnn.mpm(784, 256, 10, blocks=4, seed=0)
        else:
            model = tnn.hybrid_head(512, 512, 10, init="sparse", seed=0)
    elif name == "mpm step":  # each MPM layer -> Linear + ReLU of the same shape
        widths = (784, 256, 256, 256, 256, 256)
        layers = [m for i, o in itertools.pairwise(widths) for m in (nn.Linear(i, o), nn.ReLU())]
        model = nn.Sequential(*layers, nn.Linear(256, 10))
    else:  # the head's MaxPlus layer -> Linear + ReLU
        model = nn.Sequential(
            nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, 10),
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        return loss

    return step


def make(case: str, implementation: str) -> Callable[[], object]:
    """The zero-argument callable timed for ``case`` written as ``implementation``."""
    if case.endswith(" step"):
        return model_step(case, implementation)
    return {"product": product, "conv2d": conv2d, "dilation": dilation}[case](implementation)


def median_seconds(run: Callable[[], object], samples: int = 7, sample_time: float = 0.02) -> float:
    """Median seconds per call: ``samples`` samples of enough calls to last ``sample_time`` each."""
    start = time.perf_counter()
    run()  # warm-up, and the call count
    number = max(1, round(sample_time / max(time.perf_counter() - start, 1e-9)))
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(number):
            run()
        times.append((time.perf_counter() - start) / number)
    return float(np.median(times))


class HistoryTime:
    """Time per call of every case and implementation (what the history plots show)."""

    params = (CASES, IMPLEMENTATIONS)
    param_names = ("case", "implementation")
    processes = 1  # one process, one round, a few samples: a past commit's pass takes about a minute
    rounds = 1
    repeat = (3, 10, 1.0)
    warmup_time = 0.1
    timeout = 120

    def setup(self, case, implementation):
        self.run = make(case, implementation)

    def time_call(self, case, implementation):
        self.run()


class HistoryRatio:
    """tropic time / baseline time in one process (``median_seconds`` of each)."""

    params = (CASES,)
    param_names = ("case",)
    processes = 1
    rounds = 1
    timeout = 120
    unit = "ratio"

    def setup(self, case):
        tropic_seconds = median_seconds(make(case, "tropic"))
        self.ratio = tropic_seconds / median_seconds(make(case, "baseline"))

    def track_tropic_over_baseline(self, case):
        return self.ratio
