"""Micro-benchmarks of the kernels (pytest-benchmark) and checks of the benchmark tooling.

The tests that take the ``benchmark`` fixture are skipped in the default run (``--benchmark-skip`` in
pyproject's addopts). ``--benchmark-enable`` does not lift that skip; run them with
``pytest tests/test_benchmarks.py --benchmark-only`` (or ``-o addopts=""`` to run everything).
Each benchmark also checks that the timed call computed the right thing.
Tests of the same size share a group, so pytest-benchmark prints tropic next to its baseline.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tropic
from tropic.apps.bench import (
    TORCH_TENSORS,
    broadcast_mib,
    extra_peak_mib,
    loop_maxplus,
    main,
    measure,
    naive_maxplus,
    numpy_unfold_conv2d,
    reference_label,
    scipy_batched_grey_dilation,
)

from .helpers import assert_identical


def random_array(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# --- pytest-benchmark micro-benchmarks (skipped by default) ------------------------------------


@pytest.mark.parametrize("n", [256, 512])
def test_maxplus_matmul_speed(benchmark, n):
    """tropic's n^3 float32 max-plus product; the timed result equals the NumPy loop's bitwise."""
    a, b = random_array(n, n, seed=1), random_array(n, n, seed=2)
    benchmark.group = f"maxplus_matmul {n}^3 float32"
    benchmark.extra_info["pairs"] = n**3
    c = benchmark(tropic.maxplus_matmul, a, b)
    assert_identical(c, loop_maxplus(a, b))


@pytest.mark.parametrize("n", [256, 512])
def test_naive_broadcast_speed(benchmark, n):
    """The baseline ``np.max(a[:, :, None] + b[None], 1)`` on the same inputs, in the same group."""
    a, b = random_array(n, n, seed=1), random_array(n, n, seed=2)
    benchmark.group = f"maxplus_matmul {n}^3 float32"
    benchmark.extra_info["pairs"] = n**3
    c = benchmark(naive_maxplus, a, b)
    assert_identical(c, loop_maxplus(a, b))


def test_dilation_speed(benchmark):
    """5x5 non-flat dilation of a (8, 16, 64, 64) batch; equals SciPy's grey_dilation per image."""
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is the reference")
    images, structure = random_array(8, 16, 64, 64, seed=1), random_array(5, 5, seed=2)
    benchmark.group = "dilation 5x5 (8, 16, 64, 64)"
    out = benchmark(tropic.dilation, images, structure, mode="reflect")
    assert_identical(out, scipy_batched_grey_dilation(images, structure, ndimage))


def test_maxplus_conv2d_speed(benchmark):
    """Max-plus conv2d, x (8, 16, 32, 32), w (16, 16, 3, 3); equals unfold-and-max bitwise."""
    x, w = random_array(8, 16, 32, 32, seed=1), random_array(16, 16, 3, 3, seed=2)
    benchmark.group = "maxplus_conv2d (8, 16, 32, 32) * (16, 16, 3, 3)"
    y = benchmark(tropic.maxplus_conv2d, x, w)
    assert_identical(y, numpy_unfold_conv2d(x, w))


# --- the tooling (these run by default) ---------------------------------------------------------


def test_measure_warms_up_then_times_repeat_calls():
    """``measure`` calls once untimed plus ``repeat`` timed times and returns the first result."""
    calls = []

    def fn():
        calls.append(len(calls))
        return len(calls)

    seconds, first = measure(fn, repeat=3)
    assert (len(calls), first) == (4, 1)
    assert seconds >= 0.0
    with pytest.raises(ValueError, match="repeat"):
        measure(fn, repeat=0)


def test_extra_peak_probe_sees_the_broadcast_intermediate():
    """At 256^3 the broadcast's (M, K, N) intermediate is 64 MiB and the probe reports at least that
    (so the probe sees NumPy's buffers and the memory bound below can fail)."""
    a, b = random_array(256, 256, seed=1), random_array(256, 256, seed=2)
    assert broadcast_mib(256, 256, 256) == 64.0
    assert extra_peak_mib(lambda: naive_maxplus(a, b)) >= 64.0


def test_maxplus_matmul_512_extra_peak_below_64_mib():
    """A (512x512) x (512x512) float32 max-plus product, indices included, allocates well under the
    512 MiB that broadcasting needs: its extra peak (tracemalloc) stays below 64 MiB."""
    a, b = random_array(512, 512, seed=1), random_array(512, 512, seed=2)
    assert extra_peak_mib(lambda: tropic.maxplus_matmul(a, b, return_indices=True)) < 64.0


def _table_rows(output: str) -> dict[tuple[str, str], list[list[str]]]:
    """{(operator, implementation): [cells, ...]} of the printed table (columns split on 2+ spaces)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("operator "))
    rows: dict[tuple[str, str], list[list[str]]] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows.setdefault((cells[0], cells[2]), []).append(cells)
    return rows


def test_bench_cli_quick_prints_every_comparison(capsys, tmp_path):
    """``tropic bench --quick --repeat 1`` prints a row per implementation: tropic first (the
    reference of its case), every other implementation agreeing with it, a numeric time and peak
    memory; then the extra-peak memory lines; and writes the chart."""
    chart = tmp_path / "bench.png"
    assert main(["--quick", "--repeat", "1", "--plot", str(chart)]) == 0
    output = capsys.readouterr().out
    rows = _table_rows(output)
    reference = reference_label()  # "tropic, compiled C" (or "tropic, pure NumPy" without the C kernels)
    expected = {
        ("maxplus_matmul", reference),
        ("maxplus_matmul", "np.max broadcast"),
        ("maxplus_matmul", "NumPy loop over k"),
        ("maxplus_matmul", "torch broadcast amax"),
        ("maxplus_matmul", TORCH_TENSORS),
        ("dilation (non-flat)", "scipy grey_dilation loop"),
        ("dilation (flat)", "scipy maximum_filter"),
        ("maxplus_conv2d", "NumPy unfold + max"),
        ("maxplus_conv2d", "torch unfold + amax"),
        ("maxplus layer fwd+bwd", "torch autograd broadcast"),
    }
    assert expected <= set(rows), sorted(set(rows))
    for (_operator, implementation), group in rows.items():
        for cells in group:
            check = cells[-1]
            if implementation == reference:
                assert check == "reference" and cells[6] == "1.00x", cells
            else:
                assert check in ("equal", "close") or check.startswith("skipped: "), cells
            if not check.startswith("skipped: "):
                assert float(cells[3]) > 0.0 and cells[6].endswith("x"), cells
                assert cells[5] == "-" or float(cells[5]) >= 0.0, cells
    assert len(rows[("maxplus_matmul", "np.max broadcast")]) >= 2  # several product shapes
    # the broadcast's (M, K, N) intermediate shows in its peak: 64 MiB at 256^3; tropic's does not
    broadcast_256 = next(c for c in rows[("maxplus_matmul", "np.max broadcast")] if c[1].startswith("256x"))
    tropic_256 = next(c for c in rows[("maxplus_matmul", reference)] if c[1].startswith("256x"))
    if broadcast_256[5] != "-":
        assert float(broadcast_256[5]) >= 60.0 and float(tropic_256[5]) < 16.0, (broadcast_256, tropic_256)
    peak = re.search(r"tropic\.maxplus_matmul\s+([\d.]+) MiB", output)
    assert peak is not None and float(peak.group(1)) < 64.0, output
    assert re.search(r"np\.max broadcast\s+512\.0 MiB", output), output  # 512^3 x 4 bytes in quick mode
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_asv_suite_runs(tmp_path):
    """``asv check`` and one quick pass over every benchmark (tiny sizes: ``TROPIC_BENCH_SMOKE=1``) in
    this environment, with asv's machine file in a temporary home and a copy of the configuration
    whose results go there too (asv rewrites ``benchmarks.json`` even in a dry run, and the one in
    ``benchmarks/results`` belongs to the stored history)."""
    asv = shutil.which("asv")
    if asv is None:
        if os.environ.get("CI"):
            pytest.fail("asv is part of the test extra: CI must run the asv suite")
        pytest.skip("asv is not installed (pip install asv)")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HOME": str(tmp_path), "TROPIC_BENCH_SMOKE": "1"}

    def asv_run(*args: str) -> str:
        result = subprocess.run([asv, *args], cwd=root, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    spec = importlib.util.spec_from_file_location("asv_history", root / "scripts" / "asv_history.py")
    asv_history = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(asv_history)
    config = str(asv_history.write_config(tmp_path, tmp_path / "results"))
    asv_run("machine", "--yes", "--machine", "ci")
    assert "No problems found" in asv_run("check", "--python=same", "--config", config)
    out = asv_run(
        "run", "--python=same", "--quick", "--dry-run", "--machine", "ci", "--show-stderr", "--config", config
    )
    finished = re.findall(r"··· (\S+)\s+(ok|failed)$", out, flags=re.M)
    assert len(finished) >= 20, out
    assert all(state == "ok" for _, state in finished), [name for name, state in finished if state != "ok"]


def test_gpu_report_arithmetic_without_a_gpu(monkeypatch):
    """bench_cupy.report (what scripts/gpu_check.sh prints on a lent GPU, where time is scarce) on
    stand-ins: throughput from seconds, the gradient as a multiple of the forward, memory pairs, and
    a failing or skipped implementation reported without stopping the report."""
    from benchmarks import bench_cupy

    def fake(*args):
        if args[0] == "torch_compile":
            raise NotImplementedError("no compile here")
        if args[0] == "kornia":
            raise MemoryError("out of memory")
        return lambda: 2.0

    monkeypatch.setattr(bench_cupy, "PRODUCTS", ("100x30x70",))
    for name in ("product", "product_gradient", "layer_step", "dilation"):
        monkeypatch.setattr(bench_cupy, name, fake)
    seconds = iter([0.5, 0.25, 0.5, 0.5] + [0.125] * 10)  # products, gradient, then the rest
    monkeypatch.setattr(bench_cupy, "gpu_seconds", lambda run, repeat: next(seconds))
    monkeypatch.setattr(bench_cupy, "extra_device_mib", lambda run: 3.0)
    lines: list[str] = []
    results = bench_cupy.report(lines.append)
    row = results["100x30x70"]
    assert row["tropic_cupy"] == pytest.approx(100 * 30 * 70 / 0.5 / 1e9)
    assert row["tropic_cupy_simple"] == pytest.approx(100 * 30 * 70 / 0.25 / 1e9)
    assert row["torch_compile"] == "skipped: no compile here"
    assert results["100x30x70 gradient"] == 0.5
    assert "1.00x the forward's time" in lines[1]
    assert results["layer"]["tropic_torch_cuda"] == (0.125, 3.0)
    assert results["dilation"]["kornia"].startswith("failed: MemoryError")
    assert any(line.startswith("dilation 7x7") and "125.00 ms, +3 MiB" in line for line in lines)
