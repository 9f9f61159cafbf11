"""CUDA sources of the CuPy backend and their compiled modules.

The sources are package data (``cuda/*.cu`` plus the shared headers ``cuda/*.cuh``, ``HEADERS``,
inlined here so that NVRTC needs no include path for them). Each source is compiled once per (device,
source, type group) into a ``cupy.RawModule`` whose ``name_expressions`` instantiate every kernel
template for the group's dtypes; :func:`get_kernel` hands out the instantiated kernels. The half types
(``__half``, ``__nv_bfloat16``) have a group each, so a missing ``cuda_fp16.h`` / ``cuda_bf16.h``
only affects its own dtype. This module imports no CuPy at import time: the source list, the name
expressions and the launch arithmetic are plain Python, tested without a GPU.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

__all__ = ["CUDA_DIR", "KERNELS", "SOURCES", "get_kernel", "name_expressions", "source_text"]

# Each source and the kernel templates it defines (each takes one dtype template argument).
KERNELS: dict[str, tuple[str, ...]] = {
    "matmul.cu": ("tropic_matmul", "tropic_matmul_tiled"),
    "matmul_vjp.cu": ("tropic_matmul_vjp_scatter", "tropic_matmul_vjp_finish"),
    "morphology.cu": ("tropic_morphology", "tropic_morphology_tiled", "tropic_morphology_vjp_image"),
    "conv.cu": ("tropic_conv2d", "tropic_conv2d_tiled", "tropic_conv2d_vjp_x"),
    "maxout.cu": ("tropic_maxout", "tropic_maxout_vjp"),
    "sums.cu": ("tropic_tap_partials", "tropic_tap_finish"),
}
SOURCES: tuple[str, ...] = tuple(KERNELS)
# The shared headers (cuda/*.cuh), inlined into the sources that include them.
HEADERS: tuple[str, ...] = ("common.cuh", "tiled.cuh")
# CUDA type of each dtype name, and the type group compiled together.
CUDA_TYPES: dict[str, str] = {
    "float32": "float",
    "float64": "double",
    "float16": "__half",
    "bfloat16": "__nv_bfloat16",
}
GROUPS: dict[str, tuple[str, ...]] = {
    "full": ("float", "double"),
    "fp16": ("__half",),
    "bf16": ("__nv_bfloat16",),
}
DEFINES: dict[str, str] = {"full": "", "fp16": "#define TROPIC_FP16 1\n", "bf16": "#define TROPIC_BF16 1\n"}
CUDA_DIR = Path(__file__).resolve().parent / "cuda"
_INCLUDE = re.compile(r'^#include "([\w.]+\.cuh)"\n', re.MULTILINE)


def read_source(name: str) -> str:
    """The text of ``cuda/<name>`` (package data)."""
    return (CUDA_DIR / name).read_text()


def _inline_headers(text: str, seen: set[str]) -> str:
    """``text`` with each ``#include "<header>.cuh"`` replaced by the header's own text (its includes
    inlined likewise), a header already in ``seen`` by nothing: each one once, where first included,
    as ``#pragma once`` would have it."""

    def inline(match: re.Match) -> str:
        name = match[1]
        if name not in HEADERS:
            raise ValueError(f"{name} is not one of the shared headers {HEADERS}")
        if name in seen:
            return ""
        seen.add(name)
        return _inline_headers(read_source(name).replace("#pragma once\n", ""), seen)

    return _INCLUDE.sub(inline, text)


def source_text(source: str, group: str) -> str:
    """``source`` ready for NVRTC: the shared headers inlined (each once), after the group's define
    (``TROPIC_FP16``, ``TROPIC_BF16``), which pulls in the half type's header."""
    return DEFINES[group] + _inline_headers(read_source(source), set())


def name_expression(kernel: str, cuda_type: str) -> str:
    return f"{kernel}<{cuda_type}>"


def name_expressions(source: str, group: str) -> list[str]:
    """Every instantiation compiled for ``source`` and type ``group`` (RawModule name_expressions)."""
    return [name_expression(k, t) for k in KERNELS[source] for t in GROUPS[group]]


def group_of(cuda_type: str) -> str:
    return next(g for g, types in GROUPS.items() if cuda_type in types)


def cuda_type(dtype) -> str:
    """The CUDA type for a floating dtype (``TypeError`` for one without kernels)."""
    import numpy as np

    try:
        name = np.dtype(dtype).name
    except TypeError:  # a name NumPy does not know without ml_dtypes ("bfloat16")
        name = str(dtype)
    if name not in CUDA_TYPES:
        raise TypeError(f"the CuPy backend has no kernels for dtype {name}")
    return CUDA_TYPES[name]


def toolkit_include() -> str | None:
    """A directory holding ``cuda_fp16.h`` and ``cuda_bf16.h``: the toolkit's ``include`` (CUDA_PATH,
    CUDA_HOME, /usr/local/cuda) or that of the ``nvidia-cuda-runtime-cu12`` wheel; None if none."""
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    candidates = [os.path.join(root, "include") for root in roots if root]
    try:
        import nvidia.cuda_runtime  # the pip wheel of the CUDA 12 runtime ships the headers

        candidates += [os.path.join(path, "include") for path in nvidia.cuda_runtime.__path__]
    except ImportError:
        pass
    for include in candidates:
        if os.path.isfile(os.path.join(include, "cuda_fp16.h")):
            return include
    return None


@functools.cache
def _module(device_id: int, source: str, group: str):
    """The compiled module. NVRTC's own options first (recent NVRTC versions carry the half headers
    built in, and CuPy adds its bundled ones); if a half group fails to compile that way, once more
    with the toolkit's include directory, when the machine has one. The sources need only C++11."""
    import cupy

    attempts = [()]
    include = toolkit_include()
    if group != "full" and include is not None:
        attempts.append(("-I" + include,))
    code, names = source_text(source, group), name_expressions(source, group)
    with cupy.cuda.Device(device_id):
        for i, options in enumerate(attempts):
            module = cupy.RawModule(code=code, options=options, name_expressions=names)
            try:
                module.compile()
            except cupy.cuda.compiler.CompileException:
                if i == len(attempts) - 1:
                    raise
            else:
                return module
    raise AssertionError("unreachable")


def source_of(kernel: str) -> str:
    return next(s for s, kernels in KERNELS.items() if kernel in kernels)


def get_kernel(kernel: str, dtype):
    """The compiled ``kernel<dtype>`` for the current device (compiled on first use, then cached)."""
    import cupy

    t = cuda_type(dtype)
    module = _module(cupy.cuda.Device().id, source_of(kernel), group_of(t))
    return module.get_function(name_expression(kernel, t))
