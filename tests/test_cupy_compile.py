"""Every CUDA source of the CuPy backend compiles without an error or a warning for sm_80 and sm_90.

No GPU needed: the machine's ``nvcc`` builds a cubin of exactly the text NVRTC gets at run time
(``module.source_text``, header inlined) with every templated kernel instantiated for every dtype
(the name expressions of ``module.py``, per type group, forced by taking the kernels' addresses), and
``-Werror all-warnings`` plus ``-Xptxas -Werror`` turn front-end and assembler warnings into
errors; any other compiler output fails too. Skipped (with the reason) only where nvcc is missing.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
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


def compile_cubin(nvcc: str, text: str, arch: str, directory: Path):
    source, cubin = directory / "source.cu", directory / "source.cubin"
    source.write_text(text)
    command = [nvcc, f"-arch={arch}", *FLAGS, str(source), "-o", str(cubin)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120), cubin


def _cases():
    # Every type group (float/double without the half headers; __half; __nv_bfloat16) on each arch.
    for source in module.SOURCES:
        for arch in ARCHES:
            for group in module.GROUPS:
                yield pytest.param(source, group, arch, id=f"{source}-{arch}-{group}")


@pytest.mark.parametrize(("source", "group", "arch"), list(_cases()))
def test_source_compiles_without_warnings(nvcc, tmp_path, source, group, arch):
    result, cubin = compile_cubin(nvcc, forced_text(source, group), arch, tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, f"nvcc {arch} {source}:\n{output}"
    binary = cubin.read_bytes()
    for kernel in module.KERNELS[source]:
        assert kernel.encode() in binary, f"{kernel} missing from the {arch} cubin of {source}"
    for cuda_type in module.GROUPS[group]:  # every dtype was instantiated (mangled names name it)
        if cuda_type.startswith("__"):
            assert cuda_type.encode() in binary


def test_warnings_are_errors(nvcc, tmp_path):
    """The flags catch a warning (an unused variable), so a clean compile above means no warning."""
    text = "__global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }\n"
    result, _ = compile_cubin(nvcc, text, "sm_80", tmp_path)
    assert result.returncode != 0
    assert "unused" in result.stderr


def test_every_source_is_listed():
    """module.KERNELS names exactly the .cu files shipped, and exactly the kernels each defines."""
    shipped = sorted(p.name for p in (CUPY_DIR / "cuda").glob("*.cu"))
    assert sorted(module.SOURCES) == shipped
    for source, kernels in module.KERNELS.items():
        text = module.read_source(source)
        defined = set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(", text))
        assert defined == set(kernels), source
