"""The CuPy backend on a GPU: max-plus products (and their gradients) and a 7x7 dilation, against
PyTorch on the same GPU.

Every combination raises ``NotImplementedError`` in ``setup`` (asv: skipped) without CuPy and a CUDA
device, and the torch rows without a CUDA build of torch. The timed calls synchronise the device, so
asv's wall clock covers the GPU work; ``track_*`` report throughput and memory measured with CUDA
events and the memory pools. ``scripts/gpu_check.sh`` prints the same figures as a report
(:func:`report`) next to the issue's targets.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np

import tropic

from .common import Benchmark, optional_import, random_array, size

# M x K x N of the products: the targets (G pairs/s, float32 max-plus)
PRODUCTS = size(("4096x4096x4096", "1024x1024x1024", "65536x256x256"), ("64x64x64", "100x30x70"))
TARGETS_G_PAIRS = {"4096x4096x4096": 8000.0, "1024x1024x1024": 4000.0, "65536x256x256": 4000.0}
DILATION = size((32, 64, 256, 256), (2, 3, 20, 20))  # images (B, C, H, W), 7 x 7 element
PRODUCT_IMPLEMENTATIONS = ("tropic_cupy", "tropic_cupy_simple", "torch_broadcast", "torch_compile")
DILATION_IMPLEMENTATIONS = ("tropic_cupy", "tropic_cupy_simple", "tropic_cupy_flat", "kornia")
BROADCAST_LIMIT_BYTES = 24 << 30  # torch's (M, K, N) intermediate on the GPU


def require_cupy():
    """CuPy with a CUDA device and tropic's CuPy backend; ``NotImplementedError`` otherwise."""
    cupy = optional_import("cupy")
    if cupy is None:
        raise NotImplementedError("CuPy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise NotImplementedError("no CUDA device")
    except NotImplementedError:
        raise
    except Exception as exc:
        raise NotImplementedError(f"no usable CUDA device ({exc})") from None
    from tropic.core.dispatch import backend_status, load_backend

    load_backend("cupy")
    if backend_status()["cupy"] != "loaded":
        raise NotImplementedError(f"tropic's CuPy backend: {backend_status()['cupy']}")
    return cupy


def require_torch_cuda():
    torch = optional_import("torch")
    if torch is None or not torch.cuda.is_available():
        raise NotImplementedError("no CUDA build of torch with a device")
    return torch


def gpu_seconds(run, repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``run()`` on the current CUDA stream, timed with CUDA events."""
    cupy = require_cupy()
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def with_kernel_switch(switch: str, on: bool, fn):
    """``fn`` run with the CuPy backend's module switch ``switch`` (``TILED``, ``TILED_CONV``,
    ``TILED_MORPHOLOGY``: the tiled kernel, or the one-thread-per-output one) set to ``on``."""
    from tropic.backends.cupy import kernels

    def run():
        saved = getattr(kernels, switch)
        setattr(kernels, switch, on)
        try:
            return fn()
        finally:
            setattr(kernels, switch, saved)

    return run


def _parse(shape: str) -> tuple[int, int, int]:
    m, k, n = map(int, shape.split("x"))
    return m, k, n


def product(implementation: str, m: int, k: int, n: int):
    """A zero-argument callable for a float32 m x k x n max-plus product on the GPU (no sync)."""
    if implementation.startswith("tropic_cupy"):
        cupy = require_cupy()
        a = cupy.asarray(random_array(m, k, seed=1))
        b = cupy.asarray(random_array(k, n, seed=2))
        tiled = implementation == "tropic_cupy"
        return with_kernel_switch("TILED", tiled, lambda: tropic.maxplus_matmul(a, b))
    torch = require_torch_cuda()
    if 4 * m * k * n > BROADCAST_LIMIT_BYTES:
        raise NotImplementedError(f"the (M, K, N) intermediate would need {4 * m * k * n >> 30} GiB")
    ta = torch.from_numpy(random_array(m, k, seed=1)).cuda()
    tb = torch.from_numpy(random_array(k, n, seed=2)).cuda()

    def broadcast(x, y):
        return (x[:, :, None] + y[None]).amax(1)

    if implementation == "torch_broadcast":
        return lambda: broadcast(ta, tb)
    if not os.environ.get("TROPIC_ASV_TORCH_COMPILE"):
        raise NotImplementedError("set TROPIC_ASV_TORCH_COMPILE=1 to time torch.compile (slow to compile)")
    compiled = torch.compile(broadcast)
    compiled(ta, tb)
    return lambda: compiled(ta, tb)


def _synchronize() -> None:
    cupy = optional_import("cupy")
    if cupy is not None:
        cupy.cuda.Device().synchronize()
    torch = optional_import("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


class CupyMaxplusMatmul(Benchmark):
    """Float32 max-plus products on the GPU: tropic's tiled and simple kernels, torch broadcasting."""

    params = (PRODUCTS, PRODUCT_IMPLEMENTATIONS)
    param_names = ("MxKxN", "implementation")
    timeout = 300

    def setup(self, shape, implementation):
        self.pairs = np.prod(_parse(shape), dtype=np.float64)
        self.run = product(implementation, *_parse(shape))
        self.run()  # compile / warm up outside the timing
        _synchronize()

    def time_product(self, shape, implementation):
        self.run()
        _synchronize()

    def track_g_pairs_per_s(self, shape, implementation):
        return self.pairs / gpu_seconds(self.run) / 1e9

    track_g_pairs_per_s.unit = "G pairs/s"


def product_gradient(m: int, k: int, n: int):
    """A zero-argument callable for both gradients of a float32 m x k x n max-plus product on the GPU
    (``tropic.matmul_vjp`` from the forward's winners; no sync)."""
    cupy = require_cupy()
    a = cupy.asarray(random_array(m, k, seed=1))
    b = cupy.asarray(random_array(k, n, seed=2))
    _, winners = tropic.maxplus_matmul(a, b, return_indices=True)
    g = cupy.asarray(random_array(m, n, seed=3))
    return lambda: tropic.matmul_vjp(g, winners, a.shape, b.shape)


class CupyMaxplusMatmulGradient(Benchmark):
    """Both gradients of a float32 max-plus product on the GPU (O(M N) keyed sums; compare with the
    forward's time in ``CupyMaxplusMatmul``)."""

    params = (PRODUCTS,)
    param_names = ("MxKxN",)
    timeout = 300

    def setup(self, shape):
        self.run = product_gradient(*_parse(shape))
        self.run()
        _synchronize()

    def time_gradient(self, shape):
        self.run()
        _synchronize()


LAYER = size((256, 1024, 1024), (8, 16, 12))  # (batch, in, out) of the torch layer's fwd + bwd
LAYER_IMPLEMENTATIONS = ("tropic_torch_cuda", "torch_broadcast")


def layer_step(implementation: str, batch: int, n_in: int, n_out: int):
    """A zero-argument callable for the forward and backward of a float32 max-plus layer x ⊗ w on
    torch CUDA tensors: tropic's op (the CuPy kernels through DLPack) or torch autograd of the
    broadcast formula."""
    from tropic.apps.bench import torch_layer_step, tropic_torch_layer_step

    torch = require_torch_cuda()
    if implementation == "tropic_torch_cuda":
        require_cupy()
    x = torch.from_numpy(random_array(batch, n_in, seed=1)).cuda()
    w = torch.from_numpy(random_array(n_in, n_out, seed=2)).cuda()
    grad = torch.from_numpy(random_array(batch, n_out, seed=3)).cuda()
    step = tropic_torch_layer_step if implementation == "tropic_torch_cuda" else torch_layer_step
    return lambda: step(x, w, grad)


class _DeviceCall(Benchmark):
    """Setup and memory of the benchmarks timing one call per implementation (``make_run``)."""

    param_names = ("implementation",)
    timeout = 300

    def setup(self, implementation):
        self.run = self.make_run(implementation)
        self.run()  # compile / warm up outside the timing
        _synchronize()

    def track_extra_device_mib(self, implementation):
        return extra_device_mib(self.run)

    track_extra_device_mib.unit = "MiB"


class TorchCudaLayerStep(_DeviceCall):
    """Forward + backward of a max-plus layer on torch CUDA tensors: tropic against torch autograd."""

    params = (LAYER_IMPLEMENTATIONS,)

    def make_run(self, implementation):
        return layer_step(implementation, *LAYER)

    def time_layer_step(self, implementation):
        self.run()
        _synchronize()


CONV = size((32, 64, 64, 32, 3), (2, 3, 4, 9, 3))  # (B, Cin, Cout, H = W, k) of a network layer
CONV_IMPLEMENTATIONS = ("tropic_cupy", "tropic_cupy_simple", "torch_unfold")


def conv2d(implementation: str, batch: int, c_in: int, c_out: int, side: int, k: int):
    """A zero-argument callable for a float32 max-plus conv2d (stride 1, no padding) on the GPU:
    tropic's tiled or one-thread-per-output kernel, or torch's unfold + broadcast + amax."""
    x, w = random_array(batch, c_in, side, side, seed=1), random_array(c_out, c_in, k, k, seed=2)
    if implementation.startswith("tropic_cupy"):
        cupy = require_cupy()
        cx, cw = cupy.asarray(x), cupy.asarray(w)
        tiled = implementation == "tropic_cupy"
        return with_kernel_switch("TILED_CONV", tiled, lambda: tropic.maxplus_conv2d(cx, cw))
    torch = require_torch_cuda()
    from tropic.apps.bench import torch_unfold_conv2d

    out = side - k + 1
    if 4 * batch * c_out * c_in * out * out * k * k > BROADCAST_LIMIT_BYTES:
        raise NotImplementedError("the unfolded broadcast would not fit")
    tx, tw = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
    return lambda: torch_unfold_conv2d(tx, tw)


class CupyMaxplusConv2d(_DeviceCall):
    """A max-plus conv2d layer's forward on the GPU: tropic's tiled kernel (implicit product), its
    one-thread-per-output kernel, and torch's unfold + broadcast."""

    params = (CONV_IMPLEMENTATIONS,)

    def make_run(self, implementation):
        return conv2d(implementation, *CONV)

    def time_conv2d(self, implementation):
        self.run()
        _synchronize()


def dilation(implementation: str, shape: tuple[int, int, int, int]):
    """A zero-argument callable for a 7 x 7 dilation of float32 images of ``shape`` on the GPU."""
    images = random_array(*shape, seed=1)
    structure = random_array(7, 7, seed=2)
    if implementation.startswith("tropic_cupy"):
        cupy = require_cupy()
        x = cupy.asarray(images)
        if implementation == "tropic_cupy_flat":
            return lambda: tropic.dilation(x, size=7)
        s = cupy.asarray(structure)
        tiled = implementation == "tropic_cupy"
        return with_kernel_switch("TILED_MORPHOLOGY", tiled, lambda: tropic.dilation(x, s))
    torch = require_torch_cuda()
    kornia = optional_import("kornia")
    if kornia is None:
        raise NotImplementedError("kornia is not installed")
    tx = torch.from_numpy(images).cuda()
    ts = torch.from_numpy(structure).cuda()
    return lambda: kornia.morphology.dilation(tx, torch.ones_like(ts), structuring_element=ts)


class CupyDilation(_DeviceCall):
    """Grey-level dilation 7 x 7 of a (32, 64, 256, 256) float32 batch: tropic (non-flat: the tiled and
    the one-thread-per-output kernel; flat) against kornia (non-flat), time and extra device memory."""

    params = (DILATION_IMPLEMENTATIONS,)

    def make_run(self, implementation):
        return dilation(implementation, DILATION)

    def time_dilation(self, implementation):
        self.run()
        _synchronize()


def extra_device_mib(run) -> float:
    """Peak device memory a call adds (beyond what was allocated before it), in MiB: the growth of
    CuPy's memory pool (where tropic's kernels allocate, also for torch tensors) plus torch's peak
    allocation (where torch's own operations allocate), each counted where that library is usable."""
    _synchronize()
    cupy = optional_import("cupy")
    torch = optional_import("torch")
    use_torch = torch is not None and torch.cuda.is_available()
    pool = cupy.get_default_memory_pool() if cupy is not None else None
    if pool is not None:
        pool.free_all_blocks()
        pool_before = pool.used_bytes()
    if use_torch:
        torch.cuda.reset_peak_memory_stats()
        torch_before = torch.cuda.memory_allocated()
    result = run()
    _synchronize()
    extra = 0
    if pool is not None:
        extra += pool.total_bytes() - pool_before  # the pool keeps what the call freed: its peak
    if use_torch:
        extra += torch.cuda.max_memory_allocated() - torch_before
    del result
    return extra / 2**20


def _free_device_memory() -> None:
    cupy = optional_import("cupy")
    if cupy is not None:
        try:
            cupy.get_default_memory_pool().free_all_blocks()
        except Exception:  # no device
            pass
    torch = optional_import("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _measure(make_run, memory: bool = False):
    """Median seconds of ``make_run()()`` (with its extra device MiB when ``memory``: a pair), or a
    string saying why not (skipped: no device, library or size; failed: e.g. out of memory)."""
    run = None
    try:
        run = make_run()
        seconds = gpu_seconds(run, repeat=3)
        return (seconds, extra_device_mib(run)) if memory else seconds
    except NotImplementedError as exc:
        return f"skipped: {exc}"
    except Exception as exc:  # report it and go on
        return f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        run = None
        _free_device_memory()


def _shown(value) -> str:
    return f"{value[0] * 1e3:.2f} ms, +{value[1]:.0f} MiB" if isinstance(value, tuple) else str(value)


def report(print_=print) -> dict:
    """The figures of the issue's GPU targets, measured now (``scripts/gpu_check.sh`` prints them)."""
    results: dict = {}
    for shape in PRODUCTS:
        m, k, n = _parse(shape)
        row = {}
        for implementation in PRODUCT_IMPLEMENTATIONS:
            seconds = _measure(partial(product, implementation, m, k, n))
            row[implementation] = m * k * n / seconds / 1e9 if isinstance(seconds, float) else seconds
        results[shape] = row
        cells = ", ".join(f"{i} {v:.0f}" if isinstance(v, float) else f"{i} ({v})" for i, v in row.items())
        print_(f"max-plus {shape} float32, G pairs/s: {cells}; target >= {TARGETS_G_PAIRS.get(shape)}")
        seconds = results[f"{shape} gradient"] = _measure(partial(product_gradient, m, k, n))
        if isinstance(seconds, float) and isinstance(row["tropic_cupy"], float):
            ratio = seconds / (m * k * n / row["tropic_cupy"] / 1e9)
            print_(f"max-plus {shape} gradients: {seconds * 1e3:.2f} ms, {ratio:.2f}x the forward's time")
        else:
            print_(f"max-plus {shape} gradients: {seconds}")
    for name, implementations, make, what in (
        ("layer", LAYER_IMPLEMENTATIONS, lambda i: layer_step(i, *LAYER), f"max-plus layer fwd+bwd {LAYER}"),
        ("dilation", DILATION_IMPLEMENTATIONS, lambda i: dilation(i, DILATION), f"dilation 7x7 {DILATION}"),
        ("conv2d", CONV_IMPLEMENTATIONS, lambda i: conv2d(i, *CONV), f"max-plus conv2d {CONV}"),
    ):
        row = results[name] = {i: _measure(partial(make, i), memory=True) for i in implementations}
        for implementation, value in row.items():
            print_(f"{what} {implementation}: {_shown(value)}")
    return results
