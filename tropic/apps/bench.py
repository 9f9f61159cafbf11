"""Performance report: tropic's operators against the code a user would otherwise write.

``tropic bench [--quick] [--repeat N] [--torch-compile] [--plot FILE] [--quiet]`` (also
``python -m tropic.apps.bench``) times, in one process and on the same inputs, every implementation
of each case: tropic on each available backend, then the baselines. tropic's rows are labelled by what runs:

- ``tropic, compiled C``: NumPy arrays on tropic's compiled C kernels (the default on NumPy arrays);
- ``tropic, pure NumPy``: NumPy arrays with the C kernels switched off (the fallback used where they
  cannot be built); when they are not in use at all, it is the first row of each case instead;
- ``tropic, torch tensors``: CPU torch tensors, through tropic's torch custom ops (the same kernels).

One row each: the median of ``N`` timed calls after one warm-up call (``time.perf_counter``), the
throughput in G pairs/s (one pair is one candidate ``x + w`` that enters a max: ``M*K*N`` for a
product), the extra peak resident memory of one call (:func:`extra_peak_rss_mib`), the speed-up
``implementation ms / tropic ms`` against the first row of its case (above 1: tropic is faster) and
whether the result agrees with that row's (computed once, outside the timed calls). For flat
dilation the pairs are nominal (pixels x footprint taps): a running max, tropic's and SciPy's alike,
does a few comparisons per pixel whatever the footprint's size, so its "Gp/s" is not a rate of
additions and maxima. After the table it prints the extra peak memory of a large max-plus product,
measured with ``tracemalloc``, next to what NumPy broadcasting needs for the same product.
A progress bar (with the time left) runs on standard error while the cases are timed, when standard
error is a terminal and ``--quiet`` is not given.

SciPy, PyTorch and kornia are optional: their rows are skipped with a note when they cannot be imported.
The timing and memory helpers here (:func:`measure`, :func:`extra_peak_mib`) and the baselines are
shared with the asv suite in ``benchmarks/`` so that both measure the same code the same way.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

import tropic

MiB = 1 << 20
# Labels of tropic's own rows (see the module docstring).
COMPILED = "tropic, compiled C"
PURE_NUMPY = "tropic, pure NumPy"
TORCH_TENSORS = "tropic, torch tensors"
TORCH_AUTOGRAD = "tropic autograd, torch tensors"
# Operators whose pair count is nominal (see the module docstring).
NOMINAL_PAIRS = ("dilation (flat)",)
# Baselines that form the whole (M, K, N) broadcast are skipped above this intermediate size.
BROADCAST_LIMIT_BYTES = 1 << 30


# --- timing and memory: the one implementation, used by this report and by benchmarks/ -------------


def measure(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """Call ``fn`` once to warm up, then ``repeat`` times; return (median seconds, warm-up result)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def extra_peak_mib(fn: Callable[[], Any]) -> float:
    """Peak memory allocated while ``fn()`` runs, above what was allocated before, in MiB.

    Measured with ``tracemalloc``, which sees NumPy's array buffers (the result of ``fn`` included)
    but not PyTorch's allocator, so use it for NumPy code only. Works whether or not tracing is on.
    """
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        if started_here:
            tracemalloc.stop()
    return (peak - before) / MiB


def broadcast_mib(m: int, k: int, n: int, itemsize: int = 4) -> float:
    """Size in MiB of the (M, K, N) intermediate that ``np.max(a[:, :, None] + b[None], 1)`` forms.

    >>> broadcast_mib(1024, 1024, 1024)
    4096.0
    """
    return m * k * n * itemsize / MiB


def optional_import(name: str) -> ModuleType | None:
    """``importlib.import_module(name)``, or None when the optional dependency is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --- baselines: what users write today ----------------------------------------------------------


def naive_maxplus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Max-plus product by broadcasting: forms the whole (M, K, N) array of sums."""
    return np.max(a[:, :, None] + b[None], axis=1)


def loop_maxplus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Max-plus product as a NumPy loop over ``k``: O(M*N) memory, K passes over the output."""
    c = np.full((a.shape[0], b.shape[1]), -np.inf, dtype=np.result_type(a, b))
    for k in range(a.shape[1]):
        c = np.maximum(c, a[:, k, None] + b[k])
    return c


def torch_naive_maxplus(a, b):
    """Max-plus product of CPU tensors by broadcasting (what PyTorch users write)."""
    return (a[:, :, None] + b[None]).amax(1)


def numpy_unfold_conv2d(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Max-plus conv2d (stride 1, no padding) by unfold-and-max: forms (B, Cout, Cin, Ho, Wo, kh, kw)."""
    kh, kw = w.shape[-2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return np.max(windows[:, None] + w[None, :, :, None, None], axis=(2, 5, 6))


def torch_unfold_conv2d(x, w):
    """Max-plus conv2d of CPU tensors by ``Tensor.unfold`` + broadcast add + ``amax``."""
    kh, kw = w.shape[-2:]
    windows = x.unfold(2, kh, 1).unfold(3, kw, 1)  # (B, Cin, Ho, Wo, kh, kw)
    return (windows[:, None] + w[None, :, :, None, None]).amax(dim=(2, 5, 6))


def scipy_batched_grey_dilation(images: np.ndarray, structure: np.ndarray, ndimage) -> np.ndarray:
    """``scipy.ndimage.grey_dilation`` of every 2-D image of a batch (SciPy has no batch axis)."""
    flat = images.reshape(-1, *images.shape[-2:])
    out = np.stack([ndimage.grey_dilation(image, structure=structure) for image in flat])
    return out.reshape(images.shape)


def numpy_path(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with tropic's compiled CPU kernels switched off: the pure NumPy fallback."""
    from tropic.backends.numpy import compiled

    def run():
        saved, compiled.enabled = compiled.enabled, False
        try:
            return fn()
        finally:
            compiled.enabled = saved

    return run


def tropic_layer_step(x: np.ndarray, w: np.ndarray, grad: np.ndarray):
    """Forward and backward of a max-plus layer ``x ⊗ w``: (grad_x, grad_w)."""
    _, winners = tropic.maxplus_matmul(x, w, return_indices=True)
    return tropic.matmul_vjp(grad, winners, x.shape, w.shape)


def torch_layer_step(x, w, grad):
    """The same with torch autograd of the broadcast formula (x and w are leaf tensors)."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    torch_naive_maxplus(x, w).backward(grad)
    return x.grad, w.grad


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    square: tuple[int, ...]  # n of the n x n x n products
    layers: tuple[tuple[int, int, int], ...]  # (M, K, N) of non-square products
    nonflat: tuple[int, int, int, int]  # image batch for the 5x5 non-flat dilation
    flat: tuple[int, int]  # (image side, footprint side) of the flat dilation
    conv: tuple[int, int, int, int, int]  # (B, Cin, Cout, H=W, k)
    train: tuple[int, int, int]  # (batch, in, out) of the layer's forward + backward
    memory: int  # n of the n^3 product whose extra peak memory is measured


FULL = Sizes(
    square=(64, 256, 512),
    layers=((4096, 784, 256), (64, 4096, 4096)),
    nonflat=(8, 16, 64, 64),
    flat=(1024, 15),
    conv=(8, 16, 16, 32, 3),
    train=(256, 1024, 1024),
    memory=1024,
)
QUICK = Sizes(
    square=(64, 256),
    layers=((1024, 784, 64),),
    nonflat=(2, 4, 64, 64),
    flat=(256, 15),
    conv=(2, 16, 16, 32, 3),
    train=(64, 256, 256),
    memory=512,
)


@dataclass
class Row:
    operator: str
    shape: str
    implementation: str  # tropic's first row (reference_label()) first: the reference of its case
    seconds: float | None  # median; None: skipped
    peak_mib: float | None  # extra peak RSS of one call (None: not measurable here, or skipped)
    tropic_s: float  # the first implementation's median, for the speed-up column
    pairs: int | None  # candidate pairs per call (None: no throughput column)
    check: str  # "reference", agreement with it, or why the implementation was skipped


Baseline = tuple[str, "Callable[[], Any] | str"]  # (name, call) or (name, reason it is skipped)


@dataclass
class Case:
    """One comparison: an operator at one shape, and the implementations to time on the same inputs
    (tropic's reference first)."""

    operator: str
    shape: str
    pairs: int | None
    implementations: list[Baseline] = field(default_factory=list)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
        return np.asarray(x.float() if str(x.dtype) == "torch.bfloat16" else x)
    return np.asarray(x)


def _agreement(expected: Any, actual: Any) -> str:
    """How the results agree: bitwise ("equal"), to float rounding ("close", e.g. gradients summed in
    another order) or not at all ("DIFFERS")."""
    pairs = zip(expected, actual, strict=True) if isinstance(expected, tuple) else [(expected, actual)]
    pairs = [(_to_numpy(e), _to_numpy(a)) for e, a in pairs]
    if all(e.shape == a.shape and np.array_equal(e, a) for e, a in pairs):
        return "equal"
    if all(e.shape == a.shape and np.allclose(e, a, rtol=1e-5, atol=1e-4) for e, a in pairs):
        return "close"
    return "DIFFERS"


def compare(
    operator: str,
    shape: str,
    pairs: int | None,
    implementations: Sequence[Baseline],
    repeat: int,
    progress: Any = None,
) -> list[Row]:
    """Time every implementation on the same inputs (the first is tropic's reference); one row each,
    with the extra peak memory of one call and the agreement of its result with the first.

    ``progress``, a tqdm bar (:func:`tropic.apps.progress.bar`), is told what runs and advanced by
    one after each implementation."""
    rows: list[Row] = []
    reference = None
    tropic_s = 0.0
    for name, fn in implementations:
        if progress is not None:
            progress.set_postfix_str(f"{operator} {shape}: {name}")
        if isinstance(fn, str):
            rows.append(Row(operator, shape, name, None, None, tropic_s, pairs, f"skipped: {fn}"))
            if progress is not None:
                progress.update(1)
            continue
        seconds, result = measure(fn, repeat)
        peak = extra_peak_rss_mib(fn)
        if reference is None:
            reference, tropic_s, check = result, seconds, "reference"
        else:
            check = _agreement(reference, result)
        rows.append(Row(operator, shape, name, seconds, peak, tropic_s, pairs, check))
        del result
        if progress is not None:
            progress.update(1)
    return rows


def extra_peak_rss_mib(fn: Callable[[], Any]) -> float | None:
    """Peak resident memory while ``fn()`` runs, above the resident memory before it, in MiB.

    Unlike :func:`extra_peak_mib` this sees every allocator (NumPy, PyTorch, C kernels): freed heap
    memory is first handed back to the OS (``malloc_trim``), then Linux's peak counter is reset
    (``/proc/self/clear_refs``) and read back (``VmHWM``) after the call. None where that is not
    available (not Linux, or no permission). The result of ``fn`` is counted (it is alive at the peak).
    """
    try:
        _trim_heap()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak RSS (VmHWM) becomes the current RSS
        before = _status_kib("VmRSS")
    except OSError:
        return None
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return max(peak - before, 0) / 1024


def _peak_child(module: str, args: tuple, queue) -> None:
    run = importlib.import_module(module).layer_step(*args)
    run()  # the first step also loads tropic's backends, the compiled kernels and the libraries
    queue.put(extra_peak_rss_mib(run))


def peak_in_fresh_process(module: str, *args: Any) -> float | None:
    """Extra peak resident memory (MiB) of the second ``layer_step(*args)()`` of module ``module``
    (:func:`extra_peak_rss_mib`), in a fresh process, so that nothing earlier in this one (allocator
    caches, other benchmarks' buffers) hides or inflates it."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_child, args=(module, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _trim_heap() -> None:
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement is only less tight
        pass


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _broadcast_reason(m: int, k: int, n: int) -> str | None:
    need = broadcast_mib(m, k, n)
    if need * MiB > BROADCAST_LIMIT_BYTES:
        return f"its (M,K,N) intermediate needs {need / 1024:.1f} GiB"
    return None


def reference_label() -> str:
    """The label of each case's first row: tropic on NumPy arrays, compiled C when in use."""
    from tropic.backends.numpy import compiled

    return COMPILED if compiled.available() else PURE_NUMPY


def _tropic_implementations(run: Callable[[], Any], torch_run: Callable[[], Any] | None, torch) -> list:
    """tropic itself on every available backend: NumPy arrays (compiled kernels), the pure NumPy
    path when the compiled kernels are in use, and CPU torch tensors (the torch backend)."""
    from tropic.backends.numpy import compiled

    implementations: list[Baseline] = [(reference_label(), run)]
    if compiled.available():
        implementations.append((PURE_NUMPY, numpy_path(run)))
    if torch_run is not None:
        implementations.append((TORCH_TENSORS, torch_run if torch is not None else "no torch"))
    return implementations


def _product_cases(sizes: Sizes, rng, torch, compile_torch: bool) -> list[Case]:
    cases = []
    for m, k, n in [(n, n, n) for n in sizes.square] + list(sizes.layers):
        with_compile = compile_torch if (m, k, n) == (sizes.square[-1],) * 3 else None
        cases.append(_product_case(m, k, n, rng, torch, with_compile))
    return cases


def _product_case(m: int, k: int, n: int, rng, torch, with_compile: bool | None) -> Case:
    """The case of one product shape; ``with_compile`` None: no torch.compile row, False: a skipped one."""
    a, b = _random(rng, m, k), _random(rng, k, n)
    too_big = _broadcast_reason(m, k, n)
    ta, tb = (torch.from_numpy(a), torch.from_numpy(b)) if torch is not None else (None, None)
    implementations = _tropic_implementations(
        lambda: tropic.maxplus_matmul(a, b), lambda: tropic.maxplus_matmul(ta, tb), torch
    )
    implementations += [
        ("np.max broadcast", too_big or (lambda: naive_maxplus(a, b))),
        ("NumPy loop over k", lambda: loop_maxplus(a, b)),
    ]
    if torch is None:
        implementations.append(("torch broadcast amax", "torch is not installed"))
    else:
        implementations.append(("torch broadcast amax", too_big or (lambda: torch_naive_maxplus(ta, tb))))
        if with_compile:
            compiled = torch.compile(torch_naive_maxplus)
            implementations.append(("torch.compile broadcast", lambda: compiled(ta, tb)))
        elif with_compile is not None:
            reason = "pass --torch-compile (compiling takes ~30 s)"
            implementations.append(("torch.compile broadcast", reason))
    return Case("maxplus_matmul", f"{m}x{k} @ {k}x{n}", m * k * n, implementations)


def _morphology_cases(sizes: Sizes, rng, ndimage, torch, kornia) -> list[Case]:
    missing = "scipy is not installed"
    images, structure = _random(rng, *sizes.nonflat), _random(rng, 5, 5)
    shape = "x".join(map(str, sizes.nonflat)) + ", se 5x5"
    pairs = images.size * structure.size
    t_images, t_structure = (
        (torch.from_numpy(images), torch.from_numpy(structure)) if torch is not None else (None, None)
    )
    implementations = _tropic_implementations(
        lambda: tropic.dilation(images, structure, mode="reflect"),
        lambda: tropic.dilation(t_images, t_structure, mode="reflect"),
        torch,
    )
    implementations.append(
        (
            "scipy grey_dilation loop",
            missing if ndimage is None else (lambda: scipy_batched_grey_dilation(images, structure, ndimage)),
        )
    )
    cases = [Case("dilation (non-flat)", shape + ", reflect", pairs, implementations)]
    # kornia pads with a finite sentinel (-max_val): compare on tropic's neutral (-inf) border
    neutral = [(reference_label(), lambda: tropic.dilation(images, structure))]
    if torch is None or kornia is None:
        neutral.append(("kornia.morphology.dilation", "kornia is not installed"))
    else:
        kernel = torch.ones(5, 5)
        neutral.append(
            (
                "kornia.morphology.dilation",
                lambda: kornia.morphology.dilation(t_images, kernel, structuring_element=t_structure),
            )
        )
    cases.append(Case("dilation (non-flat)", shape + ", neutral", pairs, neutral))
    side, k = sizes.flat
    image, footprint = _random(rng, side, side), np.ones((k, k), dtype=bool)
    implementations = _tropic_implementations(
        lambda: tropic.dilation(image, footprint=footprint, mode="reflect"), None, torch
    )
    implementations.append(
        (
            "scipy maximum_filter",
            missing if ndimage is None else (lambda: ndimage.maximum_filter(image, footprint=footprint)),
        )
    )
    cases.append(
        Case(
            "dilation (flat)",
            f"{side}x{side}, footprint {k}x{k}",
            image.size * footprint.size,
            implementations,
        )
    )
    return cases


def _conv_cases(sizes: Sizes, rng, torch) -> list[Case]:
    B, C_in, C_out, side, k = sizes.conv
    x, w = _random(rng, B, C_in, side, side), _random(rng, C_out, C_in, k, k)
    out_side = side - k + 1
    tx, tw = (torch.from_numpy(x), torch.from_numpy(w)) if torch is not None else (None, None)
    implementations = _tropic_implementations(
        lambda: tropic.maxplus_conv2d(x, w), lambda: tropic.maxplus_conv2d(tx, tw), torch
    )
    implementations.append(("NumPy unfold + max", lambda: numpy_unfold_conv2d(x, w)))
    if torch is None:
        implementations.append(("torch unfold + amax", "torch is not installed"))
    else:
        implementations.append(("torch unfold + amax", lambda: torch_unfold_conv2d(tx, tw)))
    shape = f"x {B}x{C_in}x{side}x{side}, w {C_out}x{C_in}x{k}x{k}"
    pairs = B * C_out * out_side * out_side * C_in * k * k
    return [Case("maxplus_conv2d", shape, pairs, implementations)]


def _training_cases(sizes: Sizes, rng, torch) -> list[Case]:
    batch, n_in, n_out = sizes.train
    x, w, grad = _random(rng, batch, n_in), _random(rng, n_in, n_out), _random(rng, batch, n_out)
    if torch is None:
        tropic_torch = autograd = "torch is not installed"
    else:
        tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(grad)
        autograd = _broadcast_reason(batch, n_in, n_out) or (lambda: torch_layer_step(tx, tw, tg))
        tropic_torch = lambda: tropic_torch_layer_step(tx, tw, tg)  # noqa: E731
    implementations = _tropic_implementations(lambda: tropic_layer_step(x, w, grad), None, torch)
    implementations += [
        (TORCH_AUTOGRAD, tropic_torch),
        ("torch autograd broadcast", autograd),
    ]
    shape = f"{batch}x{n_in} @ {n_in}x{n_out}"
    return [Case("maxplus layer fwd+bwd", shape, None, implementations)]


def tropic_torch_layer_step(x, w, grad):
    """Forward and backward of ``x ⊗ w`` on torch tensors, through torch autograd of tropic's op."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    tropic.maxplus_matmul(x, w).backward(grad)
    return x.grad, w.grad


def memory_lines(n: int, rng) -> list[str]:
    """Extra peak (tracemalloc) of an n^3 float32 max-plus product: tropic, loop, and broadcasting."""
    a, b = _random(rng, n, n), _random(rng, n, n)
    small = min(n, 256)
    a_small, b_small = a[:small, :small].copy(), b[:small, :small].copy()
    out_mib = n * n * 4 / MiB
    return [
        f"extra peak memory, {n}x{n} @ {n}x{n} float32 max-plus product (tracemalloc, includes the "
        f"{out_mib:.0f} MiB output):",
        f"  tropic.maxplus_matmul        {extra_peak_mib(lambda: tropic.maxplus_matmul(a, b)):9.1f} MiB",
        f"  NumPy loop over k            {extra_peak_mib(lambda: loop_maxplus(a, b)):9.1f} MiB",
        f"  np.max broadcast             {broadcast_mib(n, n, n):9.1f} MiB  (its (M,K,N) intermediate; "
        f"measured at {small}^3: {extra_peak_mib(lambda: naive_maxplus(a_small, b_small)):.1f} MiB "
        f"for {broadcast_mib(small, small, small):.0f} MiB)",
    ]


HEADER = ("operator", "shape", "implementation", "ms", "Gp/s", "peak MiB", "tropic speed-up", "check")
NOMINAL_MARK = "*"


def _cells(row: Row) -> tuple[str, ...]:
    skipped = row.seconds is None
    rate = "-" if skipped or row.pairs is None else f"{row.pairs / row.seconds / 1e9:.2f}"
    if rate != "-" and row.operator in NOMINAL_PAIRS:
        rate += NOMINAL_MARK
    return (
        row.operator,
        row.shape,
        row.implementation,
        "-" if skipped else f"{row.seconds * 1e3:.2f}",
        rate,
        "-" if row.peak_mib is None else f"{row.peak_mib:.1f}",
        "-" if skipped else f"{row.seconds / row.tropic_s:.2f}x",
        row.check,
    )


def _format_table(rows: Sequence[Row]) -> list[str]:
    return table_lines(HEADER, [_cells(r) for r in rows], numeric={3, 4, 5, 6})


def table_lines(header: Sequence[str], cells: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    """A plain-text table: the header, a rule, one line per row; columns in ``numeric`` right-aligned."""
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def line(row):
        padded = (
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(padded)

    return [line(header).rstrip(), "  ".join("-" * w for w in widths), *(line(row).rstrip() for row in cells)]


def _notes(rows: Sequence[Row]) -> list[str]:
    """Footnotes of the table (printed after it, past a blank line)."""
    if not any(r.operator in NOMINAL_PAIRS and r.seconds is not None for r in rows):
        return []
    return [
        f"{NOMINAL_MARK} {', '.join(NOMINAL_PAIRS)}: nominal Gp/s (image pixels x footprint taps per "
        f"second). A flat dilation is a running max (tropic: van Herk/Gil-Werman; SciPy: 1-D passes) "
        f"doing a few comparisons per pixel whatever the footprint's size, not one per pair."
    ]


def plot(rows: Sequence[Row], path: str | os.PathLike) -> str:
    """A chart of the speed-ups: for each case a group of bars, one colour per implementation, each
    bar the implementation's time / the time of the case's first row (tropic on NumPy arrays), on a
    log scale: right of 1 tropic is faster, left of 1 slower. The file format follows the suffix."""
    from tropic.apps.plots import _pyplot

    plt = _pyplot()  # Agg, or an ImportError saying how to install matplotlib
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    timed = [r for r in rows if r.seconds is not None and r.check != "reference"]
    cases = list(dict.fromkeys((r.operator, r.shape) for r in timed))
    names = list(dict.fromkeys(r.implementation for r in timed))
    palette = plt.get_cmap("tab20")  # its 10 strong colours first, then their light companions
    colour = {name: palette((2 * i) % 20 + (i // 10) % 2) for i, name in enumerate(names)}
    reference = next((r.implementation for r in rows if r.check == "reference"), reference_label())

    positions, centres, y = [], [], 0.0
    for case in cases:
        group = [r for r in timed if (r.operator, r.shape) == case]
        ys = [y + i for i in range(len(group))]
        positions += list(zip(ys, group, strict=True))
        centres.append((ys[0] + ys[-1]) / 2)
        y = ys[-1] + 1.8  # a gap between cases
    height = 0.24 * len(positions) + 0.3 * len(cases) + 2.2
    figure, axes = plt.subplots(figsize=(11, height))
    try:
        for yy, r in positions:
            ratio = r.seconds / r.tropic_s
            axes.barh(yy, ratio - 1.0, left=1.0, height=0.8, color=colour[r.implementation])
            axes.annotate(
                f"{ratio:.3g}x",
                (ratio, yy),
                xytext=(3 if ratio >= 1 else -3, 0),
                textcoords="offset points",
                ha="left" if ratio >= 1 else "right",
                va="center",
                fontsize=7,
            )
        axes.axvline(1.0, color="black", linewidth=0.8)
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        low = min((r.seconds / r.tropic_s for _, r in positions), default=1.0)
        high = max((r.seconds / r.tropic_s for _, r in positions), default=1.0)
        axes.set_xlim(min(low, 1.0) / 2.5, max(high, 1.0) * 2.5)  # room for the value labels
        axes.set_yticks(centres, [f"{op}\n{shape}" for op, shape in cases], fontsize=8)
        axes.set_ylim(y - 1.3, -1.0)  # first case on top
        axes.grid(True, axis="x", which="major", alpha=0.3)
        axes.set_xlabel(f"time / time of {reference} (log scale): right of 1, tropic is faster")
        axes.set_title(f"tropic bench: each implementation against {reference}", fontsize=11)
        handles = [Patch(color=colour[name], label=name) for name in names]
        axes.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="implementation"
        )
        figure.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return str(path)


def _environment(torch, ndimage, repeat: int) -> str:
    parts = [f"tropic {tropic.__version__}", f"numpy {np.__version__}"]
    scipy = optional_import("scipy") if ndimage is not None else None
    parts.append("scipy: not installed" if scipy is None else f"scipy {scipy.__version__}")
    if torch is None:
        parts.append("torch: not installed")
    else:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    from tropic.backends import info

    cpu = info()["cpu"]
    kernels = "; ".join(f"{name}: {state}" for name, state in cpu["compiled kernels"].items())
    parts.append(f"compiled kernels {'in use' if cpu['in use'] else 'NOT in use'} ({kernels})")
    parts.append(f"tropic threads {cpu['threads']}")
    reference = reference_label()
    return (
        f"{', '.join(parts)}; {platform.machine()} with {os.cpu_count()} CPUs; float32; "
        f"median of {repeat} after 1 warm-up\n"
        f"{COMPILED} = tropic on NumPy arrays with its compiled C kernels; {PURE_NUMPY} = the same with "
        f"the C kernels switched off (the fallback); {TORCH_TENSORS} = tropic's torch ops on CPU tensors\n"
        f"tropic speed-up = implementation ms / {reference} ms (above 1: tropic is faster); Gp/s = 1e9 "
        "candidate pairs (x + w entering a max) per second; peak MiB = extra peak resident memory of one "
        f"call; check = agrees with {reference} bitwise (equal) or to rounding (close)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options (shared by ``tropic bench`` and ``python -m tropic.apps.bench``)."""
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds instead of minutes)")
    parser.add_argument(
        "--repeat", type=int, default=5, metavar="N", help="timed calls per measurement (default 5)"
    )
    parser.add_argument(
        "--torch-compile",
        action="store_true",
        help="add torch.compile of the broadcast product (compiles ~30 s)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="also write a chart of the speed-ups to this .png (or .svg, .pdf) file; its folder must exist",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (the report is printed as usual)"
    )
    parser.add_argument(
        "--models",
        action="store_true",
        help="instead of the operators: a training step of each paper's model, tropic against the papers' "
        "formulation and the linear network of the same shape (time and peak memory; needs torch)",
    )


def run(options: argparse.Namespace) -> int:
    """Print the report for parsed ``options``; returns the exit status."""
    from tropic.apps import progress
    from tropic.apps.cli import CommandError

    if options.repeat < 1:
        raise CommandError("--repeat must be at least 1")
    if options.plot is not None:  # checked now, not after minutes of timing
        from tropic.apps.cli.paths import check_output_file

        check_output_file("--plot", options.plot)
        if optional_import("matplotlib") is None:
            raise CommandError("--plot needs matplotlib: pip install matplotlib")
    if options.models:
        return _run_models(options)
    sizes = QUICK if options.quick else FULL
    torch, ndimage = optional_import("torch"), optional_import("scipy.ndimage")
    rng = np.random.default_rng(0)
    print(_environment(torch, ndimage, options.repeat), flush=True)
    cases = _product_cases(sizes, rng, torch, options.torch_compile)
    cases += _morphology_cases(sizes, rng, ndimage, torch, optional_import("kornia"))
    cases += _conv_cases(sizes, rng, torch)
    cases += _training_cases(sizes, rng, torch)
    rows: list[Row] = []
    total = sum(len(case.implementations) for case in cases) + 1  # + the memory lines
    with progress.bar(total, "tropic bench", quiet=options.quiet, unit="timing") as bar:
        for case in cases:
            rows += compare(case.operator, case.shape, case.pairs, case.implementations, options.repeat, bar)
        bar.set_postfix_str("extra peak memory")
        memory = memory_lines(sizes.memory, rng)
        bar.update(1)
    print("\n".join(_format_table(rows)))
    print()
    notes = _notes(rows)
    if notes:
        print("\n".join([*notes, ""]))
    print("\n".join(memory))
    if options.plot:
        _write_chart(plot, rows, options.plot)
    return 0


def _run_models(options: argparse.Namespace) -> int:
    """``tropic bench --models``: the table of :mod:`tropic.apps.model_steps`."""
    from tropic.apps import model_steps, progress
    from tropic.apps.cli import CommandError

    torch = optional_import("torch")
    if torch is None:
        raise CommandError("--models needs PyTorch: pip install 'tropic[torch]'")
    print(_environment(torch, optional_import("scipy.ndimage"), options.repeat).splitlines()[0], flush=True)
    print(
        "one training step (forward, loss, backward, Adam) per model; tropic = tropic.torch.nn; paper = the "
        "same network and parameters in the papers' plain-torch formulation; linear = each tropical layer "
        "replaced by nn.Linear / nn.Conv2d + ReLU; peak MiB = extra peak resident memory of a step, in a "
        "fresh process"
    )
    total = len(model_steps.MODELS) * len(model_steps.IMPLEMENTATIONS)
    with progress.bar(total, "tropic bench --models", quiet=options.quiet, unit="model") as bar:
        rows = model_steps.compare_models(quick=options.quick, repeat=options.repeat, progress=bar)
    print("\n".join(model_steps.format_models(rows)))
    if options.plot:
        _write_chart(model_steps.plot_models, rows, options.plot)
    return 0


def _write_chart(draw: Callable[[Any, Any], str], rows: Any, path: str) -> None:
    """``draw(rows, path)`` and say where the chart is; an unwritable path is the user's error."""
    from tropic.apps.cli import CommandError

    try:
        print(f"chart: {draw(rows, path)}")
    except OSError as exc:
        raise CommandError(f"--plot {path}: cannot write it ({exc.strerror or exc})") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tropic.apps.bench``: the same as ``tropic bench``."""
    from tropic.apps.cli import main as cli_main

    return cli_main(["bench", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
