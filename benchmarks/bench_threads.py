"""A torch training step of a tropic model with torch's default threads against one thread.

The model (float32, batch 64, 28 x 28 images): ``MaxPlusConv2d(1, 8, 3)``, ``MaxPool2d(2)``,
``Dilation2d(8, 3)``, ``Linear(1568, 256)``, ``MaxPlus(256, 10)``, cross-entropy, SGD. tropic's
kernels use torch's intra-op thread count (``torch.get_num_threads()``), so ``threads="one"`` is
``torch.set_num_threads(1)``, which is what ``OMP_NUM_THREADS=1`` gives.

``python -m benchmarks.bench_threads [--busy N] [--repeat R]`` runs each setting in fresh
processes, alternating, with ``N`` busy-loop processes beside them (a loaded machine), and prints
the medians and the ratio default / one thread. Each setting also runs the same step of a ReLU
model (``Conv2d``, ``ReLU`` in place of the tropic layers), which shows the part of torch's own pool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from .common import Benchmark, preload_torch, require_torch, size

preload_torch(optimizers=True)

BATCH, SIDE = size((64, 28), (4, 8))
SETTINGS = ("default", "one")
MODELS = ("tropic", "relu")


def training_step(model_kind: str):
    """A zero-argument callable running one SGD step of the model on a fixed batch."""
    torch = require_torch()
    from tropic.torch import nn as tnn

    torch.manual_seed(0)
    flat = 8 * (SIDE // 2) ** 2
    if model_kind == "tropic":
        layers = [
            tnn.MaxPlusConv2d(1, 8, 3, padding=1, seed=0),
            torch.nn.MaxPool2d(2),
            tnn.Dilation2d(8, 3, init="normal", seed=1),
            torch.nn.Flatten(),
            torch.nn.Linear(flat, 256),
            tnn.MaxPlus(256, 10, seed=2),
        ]
    else:
        layers = [
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(flat, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        ]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 1, SIDE, SIDE, generator=g)
    target = torch.randint(0, 10, (BATCH,), generator=g)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target).backward()
        opt.step()

    return step


def _apply(setting: str) -> None:
    if setting == "one":
        require_torch().set_num_threads(1)


class TrainingStepThreads(Benchmark):
    """One training step; ``threads``: torch's default pool or one thread (the same-run baseline)."""

    params = (MODELS, SETTINGS)
    param_names = ("model", "threads")

    def setup(self, model_kind, setting):
        torch = require_torch()
        self._before = torch.get_num_threads()
        _apply(setting)
        self.step = training_step(model_kind)
        self.step()

    def teardown(self, model_kind, setting):
        require_torch().set_num_threads(self._before)

    def time_step(self, model_kind, setting):
        self.step()


def _median_ms(model_kind: str, setting: str, steps: int = 30) -> float:
    _apply(setting)
    step = training_step(model_kind)
    for _ in range(5):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes to run beside")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per setting")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_median_ms(*args.child)))
        return
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for model_kind in MODELS:
                for setting in SETTINGS:
                    out = subprocess.run(
                        [sys.executable, "-m", "benchmarks.bench_threads", "--child", model_kind, setting],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    results.setdefault((model_kind, setting), []).append(json.loads(out.splitlines()[-1]))
    finally:
        for hog in hogs:
            hog.kill()
    print(f"training step, median ms over {args.repeat} fresh processes, {args.busy} busy-loop processes")
    for model_kind in MODELS:
        default, one = (statistics.median(results[(model_kind, s)]) for s in SETTINGS)
        ratio = default / one
        print(f"{model_kind:7s} default {default:8.2f}   one thread {one:8.2f}   default / one {ratio:5.2f}")


if __name__ == "__main__":
    main()
