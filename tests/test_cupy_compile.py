"""Every CUDA source of the CuPy backend compiles without an error or a warning for sm_80 and sm_90.

No GPU needed: the machine's ``nvcc`` builds a cubin of exactly the text NVRTC gets at run time
(``module.source_text``, header inlined) with every templated kernel instantiated for every dtype
(the name expressions of ``module.py``, per type group, forced by taking the kernels' addresses), and
``-Werror all-warnings`` plus ``-Xptxas -Werror`` turn front-end and assembler warnings into
errors; any other compiler output than ptxas's report of each kernel (``-Xptxas -v``, which the
register test reads) fails too. Skipped (with the reason) only where nvcc is missing.
"""

from __future__ import annotations

import functools
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

CUPY_DIR = Path(__file__).resolve().parents[1] / "tropic" / "backends" / "cupy"
ARCHES = ("sm_80", "sm_90")
FLAGS = ("-cubin", "-Werror", "all-warnings", "-Xptxas", "-Werror")


def _glue_module():
    """``tropic/backends/cupy/module.py`` without importing CuPy (the package's ``__init__`` does)."""
    if "tropic_cupy_glue.module" not in sys.modules:
        package = types.ModuleType("tropic_cupy_glue")
        package.__path__ = [str(CUPY_DIR)]
        sys.modules["tropic_cupy_glue"] = package
    return importlib.import_module("tropic_cupy_glue.module")


module = _glue_module()


@pytest.fixture(scope="module")
def nvcc():
    path = shutil.which("nvcc")
    if path is None:
        pytest.skip("nvcc is not installed (the CUDA sources are compiled on CI machines that have it)")
    return path


def forced_text(source: str, group: str) -> str:
    """The NVRTC text of ``source`` plus a table of every instantiation's address."""
    lines = [module.source_text(source, group), "", "void* tropic_force_instantiation[] = {"]
    lines += [f"    (void*)&{expression}," for expression in module.name_expressions(source, group)]
    return "\n".join([*lines, "};", ""])


def compile_cubin(nvcc: str, text: str, arch: str, directory: Path, extra: tuple[str, ...] = ()):
    source, cubin = directory / "source.cu", directory / "source.cubin"
    source.write_text(text)
    command = [nvcc, f"-arch={arch}", *FLAGS, *extra, str(source), "-o", str(cubin)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120), cubin


# ptxas's report of what it built (-Xptxas -v, for the register test below): information, not a
# diagnostic; every other line of compiler output is one.
_REPORT_LINE = re.compile(
    r"^(ptxas info\s*:.*|\s+\d+ bytes stack frame, \d+ bytes spill stores, \d+ bytes spill loads)$"
)


@functools.cache
def built(nvcc: str, source: str, group: str, arch: str) -> tuple[int, str, bytes]:
    """``(return code, compiler output, cubin)`` of one nvcc run per (source, group, arch), shared by
    the tests below (each run takes seconds): with ``-ftz=true``, as CuPy compiles, and ptxas's
    report of every kernel (``-Xptxas -v``)."""
    with tempfile.TemporaryDirectory() as directory:
        text = forced_text(source, group)
        result, cubin = compile_cubin(nvcc, text, arch, Path(directory), ("-ftz=true", "-Xptxas", "-v"))
        binary = cubin.read_bytes() if result.returncode == 0 else b""
        return result.returncode, result.stdout + result.stderr, binary


def diagnostics(output: str) -> str:
    """The compiler output that is not ptxas's report."""
    return "\n".join(line for line in output.splitlines() if line.strip() and not _REPORT_LINE.match(line))


def _cases():
    # Every type group (float/double without the half headers; __half; __nv_bfloat16) on each arch.
    for source in module.SOURCES:
        for arch in ARCHES:
            for group in module.GROUPS:
                yield pytest.param(source, group, arch, id=f"{source}-{arch}-{group}")


@pytest.mark.parametrize(("source", "group", "arch"), list(_cases()))
def test_source_compiles_without_warnings(nvcc, source, group, arch):
    code, output, binary = built(nvcc, source, group, arch)
    assert code == 0 and not diagnostics(output), f"nvcc {arch} {source}:\n{output}"
    for kernel in module.KERNELS[source]:
        assert kernel.encode() in binary, f"{kernel} missing from the {arch} cubin of {source}"
    for cuda_type in module.GROUPS[group]:  # every dtype was instantiated (mangled names name it)
        if cuda_type.startswith("__"):
            assert cuda_type.encode() in binary


def test_warnings_are_errors(nvcc, tmp_path):
    """The flags catch a warning (an unused variable), so a clean compile above means no warning, and
    the filter of ptxas's report keeps it; a clean kernel's report is all filtered out."""
    extra = ("-ftz=true", "-Xptxas", "-v")  # the flags of `built`
    text = "__global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }\n"
    result, _ = compile_cubin(nvcc, text, "sm_80", tmp_path, extra)
    assert result.returncode != 0
    assert "unused" in diagnostics(result.stdout + result.stderr)
    clean = "__global__ void k(float* x) { x[0] = 1.0f; }\n"
    result, _ = compile_cubin(nvcc, clean, "sm_80", tmp_path, extra)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "ptxas info" in output and not diagnostics(output), output


def test_every_source_is_listed():
    """module.KERNELS names exactly the .cu files shipped, and exactly the kernels each defines."""
    shipped = sorted(p.name for p in (CUPY_DIR / "cuda").glob("*.cu"))
    assert sorted(module.SOURCES) == shipped
    for source, kernels in module.KERNELS.items():
        text = module.read_source(source)
        defined = set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(", text))
        assert defined == set(kernels), source


def test_shared_headers_are_inlined_once(monkeypatch):
    """NVRTC gets each source with every shared header inlined exactly once (tiled.cuh includes
    common.cuh, and matmul.cu / conv.cu include both), no local #include left; HEADERS lists exactly
    the headers shipped, and an include of any other header is refused."""
    assert sorted(module.HEADERS) == sorted(p.name for p in (CUPY_DIR / "cuda").glob("*.cuh"))
    for source in module.SOURCES:
        text = module.source_text(source, "full")
        assert not re.search(r'^#include "', text, re.MULTILINE) and "#pragma once" not in text
        assert text.count("struct Best {") == 1
        uses_tile = '#include "tiled.cuh"' in module.read_source(source)
        assert text.count("struct TileMap {") == (1 if uses_tile else 0), source
    assert {"matmul.cu", "conv.cu"} <= {s for s in module.SOURCES if "tiled_product" in module.read_source(s)}
    read = module.read_source
    other = '#include "other.cuh"\n'
    monkeypatch.setattr(module, "read_source", lambda name: other if name == "x.cu" else read(name))
    with pytest.raises(ValueError, match=r"other\.cuh"):
        module.source_text("x.cu", "full")


# ptxas -v reports, per entry function: "Function properties for NAME" then "N bytes stack frame,
# N bytes spill stores, N bytes spill loads".
_PROPERTIES = re.compile(
    r"Function properties for (\w+)\s+(\d+) bytes stack frame, "
    r"(\d+) bytes spill stores, (\d+) bytes spill loads"
)


# ... and then "Used N registers, used N barriers, N bytes smem, ...".
_SHARED = re.compile(
    r"Function properties for (\w+)\s+[^\n]*\n[^\n]*?Used \d+ registers[^\n]*? (\d+) bytes smem"
)
# The tiled kernels and their sources.
TILED_KERNELS = (
    ("matmul.cu", "tropic_matmul_tiled"),
    ("conv.cu", "tropic_conv2d_tiled"),
    ("morphology.cu", "tropic_morphology_tiled"),
)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("group", list(module.GROUPS))
@pytest.mark.parametrize(("source", "kernel"), TILED_KERNELS, ids=[k for _, k in TILED_KERNELS])
def test_tiled_kernels_keep_their_state_in_registers(nvcc, source, kernel, group, arch):
    """The tiled kernels' per-thread state (the product and conv2d, tiled.cuh's block tile: the best,
    its index and the step's best of every output of the register tile; morphology: those of the
    thread's 4 outputs) fits in registers for every dtype: no local memory (stack frame) and no spill
    stores or loads, compiled with -ftz=true as CuPy does; and their static shared memory stays under
    the 48 KiB a block may have without opting in to more."""
    code, report, _ = built(nvcc, source, group, arch)
    assert code == 0, report
    found = [m.groups() for m in _PROPERTIES.finditer(report) if kernel in m[1]]
    assert len(found) == len(module.GROUPS[group]), f"no ptxas report of {kernel}:\n{report}"
    for name, stack, stores, loads in found:
        assert (stack, stores, loads) == ("0", "0", "0"), f"{arch} {name}: {stack} {stores} {loads}"
    shared = [int(m[2]) for m in _SHARED.finditer(report) if kernel in m[1]]
    assert len(shared) == len(found), f"no shared memory report of {kernel}:\n{report}"
    assert all(0 < b < 48 * 1024 for b in shared), shared


def test_tile_geometry_matches_layout():
    """layout.py's launch constants are the ones tiled.cuh's block tile (the tiled product's and the
    tiled conv2d's) is written for."""
    layout = importlib.import_module("tropic_cupy_glue.layout")
    text = module.read_source("tiled.cuh")
    defines = dict(re.findall(r"^#define TROPIC_TILE_(\w+) (\d+)", text, re.MULTILINE))
    tm, tn, rm, rn = (int(defines[k]) for k in ("TM", "TN", "RM", "RN"))
    assert (layout.TILE_M, layout.TILE_N, layout.TILE_THREADS) == (tm * rm, tn * rn, tm * tn)


def test_morphology_tile_geometry_matches_layout():
    """layout.py's morphology tile constants are the ones morphology.cu's tiled kernel is written for,
    and its fit rule admits exactly the elements whose halo the staged region holds."""
    layout = importlib.import_module("tropic_cupy_glue.layout")
    text = module.read_source("morphology.cu")
    defines = dict(re.findall(r"^#define TROPIC_MORPH_(\w+) (\d+)", text, re.MULTILINE))
    tx, ty, rm, kmax, ld = (int(defines[k]) for k in ("TX", "TY", "RM", "KMAX", "LD"))
    assert (layout.MORPH_TILE, layout.MORPH_THREADS, layout.MORPH_MAX_K) == (tx, tx * ty, kmax)
    assert ty * rm == tx  # a square tile
    for k in range(1, 40):
        fits = layout.morphology_tiled_fits(100, k, 1) and layout.morphology_tiled_fits(100, 1, k)
        assert fits == (tx + k - 1 <= ld and k <= kmax)
    assert layout.morphology_tile_grid(65, 33, 3) == (2, 3, 3)
    assert layout.morphology_tile_grid(1, 1, 70000) == (1, 1, 65535)
    tallest = tx * layout.GRID_YZ  # rows the grid's y dimension covers
    assert layout.morphology_tiled_fits(tallest, 3, 3) and not layout.morphology_tiled_fits(tallest + 1, 3, 3)
