"""Performance report: tropic's operators against the code a user would otherwise write.

``python -m tropic.bench [--quick] [--repeat N] [--torch-compile]`` (also ``tropic bench ...``) times,
in one process, each operator and its baselines on the same inputs and prints one table row per
baseline: the median of ``N`` timed calls after one warm-up call (``time.perf_counter``), the
speed-up ``baseline ms / tropic ms`` (above 1: tropic is faster), the throughput in G pairs/s (one
pair is one candidate ``x + w`` that enters a max: ``M*K*N`` for a product) and whether the two
results agree (computed once, outside the timed calls). After the table it prints the extra peak
memory of a large max-plus product, measured with ``tracemalloc``, next to what NumPy broadcasting
needs for the same product.

SciPy and PyTorch are optional: their baselines are skipped with a note when they cannot be imported.
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
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

import tropic

MiB = 1 << 20
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


def _with_numpy_path(fn: Callable[[], Any], baselines: Sequence[Baseline]) -> list[Baseline]:
    """Prepend the NumPy-path baseline when the compiled kernels are in use (else it is tropic)."""
    from tropic.backends.numpy import compiled

    if not compiled.available():
        return list(baselines)
    return [("tropic NumPy path", numpy_path(fn)), *baselines]


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
    baseline: str
    tropic_s: float
    baseline_s: float | None  # None: skipped
    pairs: int | None  # candidate pairs per call (None: no throughput column)
    check: str  # agreement of the results, or why the baseline was skipped


Baseline = tuple[str, "Callable[[], Any] | str"]  # (name, call) or (name, reason it is skipped)


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x.detach()) if hasattr(x, "detach") else np.asarray(x)


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
    tropic_fn: Callable[[], Any],
    baselines: Sequence[Baseline],
    repeat: int,
) -> list[Row]:
    """Time ``tropic_fn`` and each baseline on the same inputs; one row per baseline."""
    tropic_s, expected = measure(tropic_fn, repeat)
    rows = []
    for name, fn in baselines:
        if isinstance(fn, str):
            rows.append(Row(operator, shape, name, tropic_s, None, pairs, f"skipped: {fn}"))
            continue
        baseline_s, actual = measure(fn, repeat)
        rows.append(Row(operator, shape, name, tropic_s, baseline_s, pairs, _agreement(expected, actual)))
        del actual
    return rows


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _broadcast_reason(m: int, k: int, n: int) -> str | None:
    need = broadcast_mib(m, k, n)
    if need * MiB > BROADCAST_LIMIT_BYTES:
        return f"its (M,K,N) intermediate needs {need / 1024:.1f} GiB"
    return None


def _product_rows(sizes: Sizes, repeat: int, rng, torch, compile_torch: bool) -> list[Row]:
    rows = []
    for m, k, n in [(n, n, n) for n in sizes.square] + list(sizes.layers):
        with_compile = compile_torch if (m, k, n) == (sizes.square[-1],) * 3 else None
        rows += _product_case(m, k, n, repeat, rng, torch, with_compile)
    return rows


def _product_case(m: int, k: int, n: int, repeat: int, rng, torch, with_compile: bool | None) -> list[Row]:
    """Rows of one product shape; ``with_compile`` None: no torch.compile row, False: a skipped one."""
    a, b = _random(rng, m, k), _random(rng, k, n)
    too_big = _broadcast_reason(m, k, n)
    baselines: list[Baseline] = [
        ("np.max broadcast", too_big or (lambda: naive_maxplus(a, b))),
        ("NumPy loop over k", lambda: loop_maxplus(a, b)),
    ]
    if torch is None:
        baselines.append(("torch broadcast amax", "torch is not installed"))
    else:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        baselines.append(("torch broadcast amax", too_big or (lambda: torch_naive_maxplus(ta, tb))))
        if with_compile:
            compiled = torch.compile(torch_naive_maxplus)
            baselines.append(("torch.compile broadcast", lambda: compiled(ta, tb)))
        elif with_compile is not None:
            baselines.append(("torch.compile broadcast", "pass --torch-compile (compiling takes ~30 s)"))
    shape = f"{m}x{k} @ {k}x{n}"

    def run():
        return tropic.maxplus_matmul(a, b)

    return compare("maxplus_matmul", shape, m * k * n, run, _with_numpy_path(run, baselines), repeat)


def _morphology_rows(sizes: Sizes, repeat: int, rng, ndimage) -> list[Row]:
    missing = "scipy is not installed"
    images, structure = _random(rng, *sizes.nonflat), _random(rng, 5, 5)
    batch_dilation = (
        missing if ndimage is None else (lambda: scipy_batched_grey_dilation(images, structure, ndimage))
    )
    shape = "x".join(map(str, sizes.nonflat)) + ", se 5x5"

    def nonflat():
        return tropic.dilation(images, structure, mode="reflect")

    rows = compare(
        "dilation (non-flat)",
        shape,
        images.size * structure.size,
        nonflat,
        _with_numpy_path(nonflat, [("scipy grey_dilation loop", batch_dilation)]),
        repeat,
    )
    side, k = sizes.flat
    image, footprint = _random(rng, side, side), np.ones((k, k), dtype=bool)
    maximum_filter = (
        missing if ndimage is None else (lambda: ndimage.maximum_filter(image, footprint=footprint))
    )

    def flat():
        return tropic.dilation(image, footprint=footprint, mode="reflect")

    rows += compare(
        "dilation (flat)",
        f"{side}x{side}, footprint {k}x{k}",
        image.size * footprint.size,
        flat,
        _with_numpy_path(flat, [("scipy maximum_filter", maximum_filter)]),
        repeat,
    )
    return rows


def _conv_rows(sizes: Sizes, repeat: int, rng, torch) -> list[Row]:
    B, C_in, C_out, side, k = sizes.conv
    x, w = _random(rng, B, C_in, side, side), _random(rng, C_out, C_in, k, k)
    out_side = side - k + 1
    baselines: list[Baseline] = [("NumPy unfold + max", lambda: numpy_unfold_conv2d(x, w))]
    if torch is None:
        baselines.append(("torch unfold + amax", "torch is not installed"))
    else:
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        baselines.append(("torch unfold + amax", lambda: torch_unfold_conv2d(tx, tw)))
    shape = f"x {B}x{C_in}x{side}x{side}, w {C_out}x{C_in}x{k}x{k}"
    pairs = B * C_out * out_side * out_side * C_in * k * k

    def run():
        return tropic.maxplus_conv2d(x, w)

    return compare("maxplus_conv2d", shape, pairs, run, _with_numpy_path(run, baselines), repeat)


def _training_rows(sizes: Sizes, repeat: int, rng, torch) -> list[Row]:
    batch, n_in, n_out = sizes.train
    x, w, grad = _random(rng, batch, n_in), _random(rng, n_in, n_out), _random(rng, batch, n_out)
    if torch is None:
        autograd: Callable[[], Any] | str = "torch is not installed"
    else:
        tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(grad)
        autograd = _broadcast_reason(batch, n_in, n_out) or (lambda: torch_layer_step(tx, tw, tg))

    def run():
        return tropic_layer_step(x, w, grad)

    return compare(
        "maxplus layer fwd+bwd",
        f"{batch}x{n_in} @ {n_in}x{n_out}",
        None,
        run,
        _with_numpy_path(run, [("torch autograd broadcast", autograd)]),
        repeat,
    )


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


def _format_table(rows: Sequence[Row]) -> list[str]:
    header = ("operator", "shape", "baseline", "tropic ms", "base ms", "speed-up")
    header += ("tropic Gp/s", "base Gp/s", "check")
    cells = []
    for r in rows:
        skipped = r.baseline_s is None
        cells.append(
            (
                r.operator,
                r.shape,
                r.baseline,
                f"{r.tropic_s * 1e3:.2f}",
                "-" if skipped else f"{r.baseline_s * 1e3:.2f}",
                "-" if skipped else f"{r.baseline_s / r.tropic_s:.2f}x",
                "-" if r.pairs is None else f"{r.pairs / r.tropic_s / 1e9:.2f}",
                "-" if skipped or r.pairs is None else f"{r.pairs / r.baseline_s / 1e9:.2f}",
                r.check,
            )
        )
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    numeric = {3, 4, 5, 6, 7}

    def line(row):
        padded = (
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(padded)

    return [line(header).rstrip(), "  ".join("-" * w for w in widths), *(line(row).rstrip() for row in cells)]


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
    return (
        f"{', '.join(parts)}; {platform.machine()} with {os.cpu_count()} CPUs; float32; "
        f"median of {repeat} after 1 warm-up\n"
        "speed-up = base ms / tropic ms (above 1: tropic is faster); Gp/s = 1e9 candidate pairs (x + w "
        "entering a max) per second; check = the results agree bitwise (equal) or to rounding (close)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options (shared by ``tropic bench`` and ``python -m tropic.bench``)."""
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument(
        "--repeat", type=int, default=5, metavar="N", help="timed calls per measurement (default 5)"
    )
    parser.add_argument(
        "--torch-compile",
        action="store_true",
        help="add torch.compile of the broadcast product (compiles ~30 s)",
    )


def run(options: argparse.Namespace) -> int:
    """Print the report for parsed ``options``; returns the exit status."""
    if options.repeat < 1:
        from tropic.cli import CommandError

        raise CommandError("--repeat must be at least 1")
    sizes = QUICK if options.quick else FULL
    torch, ndimage = optional_import("torch"), optional_import("scipy.ndimage")
    rng = np.random.default_rng(0)
    print(_environment(torch, ndimage, options.repeat), flush=True)
    rows = _product_rows(sizes, options.repeat, rng, torch, options.torch_compile)
    rows += _morphology_rows(sizes, options.repeat, rng, ndimage)
    rows += _conv_rows(sizes, options.repeat, rng, torch)
    rows += _training_rows(sizes, options.repeat, rng, torch)
    print("\n".join(_format_table(rows)))
    print()
    print("\n".join(memory_lines(sizes.memory, rng)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tropic.bench``: the same as ``tropic bench``."""
    from tropic.cli import main as cli_main

    return cli_main(["bench", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
