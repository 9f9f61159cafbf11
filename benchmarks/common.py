"""Shared pieces of the asv suite: random inputs, optional libraries, the base class.

The baselines and the tracemalloc probe come from :mod:`tropic.apps.bench` (the ``tropic bench``
report), so that the report and this suite time exactly the same code. asv does its own timing.
"""

from __future__ import annotations

import abc
import os

import numpy as np

from tropic.apps.bench import (
    BROADCAST_LIMIT_BYTES,
    broadcast_mib,
    extra_peak_mib,
    loop_maxplus,
    naive_maxplus,
    numpy_path,
    numpy_unfold_conv2d,
    optional_import,
    peak_in_fresh_process,
    scipy_batched_grey_dilation,
    torch_layer_step,
    torch_naive_maxplus,
    torch_unfold_conv2d,
    tropic_layer_step,
    tropic_torch_layer_step,
)

# TROPIC_BENCH_SMOKE=1: tiny sizes, so that CI can check in seconds that the whole suite runs (the
# timings then mean nothing); the real sizes otherwise.
SMOKE = os.environ.get("TROPIC_BENCH_SMOKE") == "1"

__all__ = [
    "BROADCAST_LIMIT_BYTES",
    "Benchmark",
    "LayerStepBenchmark",
    "broadcast_mib",
    "compare_layer_steps",
    "extra_peak_mib",
    "loop_maxplus",
    "naive_maxplus",
    "numpy_path",
    "numpy_unfold_conv2d",
    "peak_in_fresh_process",
    "preload_torch",
    "random_array",
    "require_broadcast_fits",
    "require_compiled",
    "require_ndimage",
    "require_torch",
    "same_run_ratio",
    "scipy_batched_grey_dilation",
    "size",
    "torch_layer_step",
    "torch_naive_maxplus",
    "torch_unfold_conv2d",
    "tropic_layer_step",
    "tropic_or_baseline",
    "tropic_torch_layer_step",
]


def compare_layer_steps(module: str, implementations, layer_step, repeat: int) -> dict:
    """Time ``layer_step(i)()`` for every implementation (median of ``repeat``, this process) and
    measure its extra peak RSS in a fresh process; print one line each, with the ratios to the first
    (tropic). Returns ``{implementation: (median seconds, warm-up result)}``."""
    from tropic.apps.bench import measure

    results = {i: measure(layer_step(i), repeat) for i in implementations}
    peaks = {i: peak_in_fresh_process(module, i) for i in implementations}
    first = implementations[0]
    for i in implementations:
        seconds, peak = results[i][0], peaks[i]
        memory = "-" if peak is None else f"{peak:8.1f} MiB"
        ratio = "-" if peak is None or not peaks[first] else f"{peak / peaks[first]:6.1f}x"
        print(
            f"{i:16s} median {seconds * 1e3:9.1f} ms   extra peak RSS {memory}   "
            f"time / {first} {seconds / results[first][0]:6.1f}x   peak / {first} {ratio}"
        )
    return results


def size(full, smoke):
    """``full``, or ``smoke`` when the suite runs as a smoke test (``TROPIC_BENCH_SMOKE=1``)."""
    return smoke if SMOKE else full


def same_run_ratio(tropic_run, baseline_run, repeat: int = 5) -> float:
    """tropic's median time over the baseline's (``measure``: medians of ``repeat`` after a warm-up),
    one after the other in this process: tracked beside the times, because a same-run ratio reads the
    same across machines where absolute times do not. Below 1: tropic is faster; lower is better, as
    for a time, so that ``asv compare`` calls a smaller ratio an improvement."""
    from tropic.apps.bench import measure

    return measure(tropic_run, repeat)[0] / measure(baseline_run, repeat)[0]


def random_array(*shape: int, seed: int = 0) -> np.ndarray:
    """Standard normal float32 (ties have probability ~0, so every winner is unique)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def require_compiled(fn):
    """``fn`` on tropic's pure NumPy path; ``NotImplementedError`` if the compiled kernels are not in
    use (then tropic already is the NumPy path)."""
    from tropic.backends.numpy import compiled

    if not compiled.available():
        raise NotImplementedError("the compiled CPU kernels are not in use")
    return numpy_path(fn)


def tropic_or_baseline(implementation: str, run, baseline):
    """``run`` for "tropic", ``run`` on the NumPy path for "tropic_numpy_path", else ``baseline()``
    (a factory, so that a missing optional library is only asked for when its row is timed)."""
    if implementation == "tropic":
        return run
    if implementation == "tropic_numpy_path":
        return require_compiled(run)
    return baseline()


def preload_torch(*, optimizers: bool = False) -> None:
    """Import torch at a benchmark module's import, so that asv's forked benchmark processes start
    with it rather than each importing it in setup; with ``optimizers`` also ``torch._dynamo``, which
    a torch optimizer's constructor imports (some 2 s on the project's VMs). Nothing if torch is
    missing."""
    optional_import("torch")
    if optimizers:
        optional_import("torch._dynamo")


def require_torch():
    """The torch module; ``NotImplementedError`` (asv: skip this combination) if it is missing."""
    torch = optional_import("torch")
    if torch is None:
        raise NotImplementedError("torch is not installed")
    return torch


def require_ndimage():
    """``scipy.ndimage``; ``NotImplementedError`` (asv: skip this combination) if SciPy is missing."""
    ndimage = optional_import("scipy.ndimage")
    if ndimage is None:
        raise NotImplementedError("scipy is not installed")
    return ndimage


def require_broadcast_fits(m: int, k: int, n: int) -> None:
    """Skip baselines that would form an (M, K, N) intermediate larger than the limit."""
    if broadcast_mib(m, k, n) * (1 << 20) > BROADCAST_LIMIT_BYTES:
        raise NotImplementedError(f"the (M,K,N) intermediate would need {broadcast_mib(m, k, n):.0f} MiB")


class Benchmark(abc.ABC):
    """Base of the suite: every class compares tropic with its baselines in the same process.

    Abstract, so that asv does not collect it as a benchmark of its own. ``peakmem_reference`` does
    nothing: its peak is the setup's, to subtract from the other ``peakmem_*`` results (which are
    the process's maximum RSS, setup included).
    """

    timeout = 180  # the broadcast baselines of the large shapes take seconds per call on 2 cores

    @abc.abstractmethod
    def setup(self, *params):
        """Build the inputs and ``self.run``; raise ``NotImplementedError`` to skip a combination."""

    def peakmem_reference(self, *params):  # noqa: B027 (empty on purpose: the setup's peak alone)
        pass


class LayerStepBenchmark(Benchmark):
    """A training step per implementation: ``make_step(implementation)`` (the benchmark module's
    ``layer_step``) builds it in ``setup``; its time and its peak memory are measured. Abstract too."""

    param_names = ("implementation",)

    @abc.abstractmethod
    def make_step(self, implementation: str):
        """A zero-argument callable running one forward + backward of ``implementation``."""

    def setup(self, implementation):
        self.run = self.make_step(implementation)

    def time_forward_backward(self, implementation):
        self.run()

    def peakmem_forward_backward(self, implementation):
        self.run()
