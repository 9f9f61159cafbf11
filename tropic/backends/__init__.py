"""Backends: fast kernels that register themselves with ``tropic.core.dispatch``.

``numpy`` (CPU: compiled C kernels, NumPy fallback) and ``torch`` (CPU tensors: ``torch.library``
custom ops over the NumPy kernels, with autograd and ``torch.compile`` support) ship with tropic.
``cupy`` (CUDA kernels compiled with NVRTC through CuPy; needs CuPy and a CUDA device) is written,
compiled for sm_80/sm_90 and tested in a CPU emulation, but has not run on a GPU yet; CUDA torch
tensors raise until the torch adapter routes them to it.
"""

from __future__ import annotations

from tropic.core.dispatch import backend_status, capabilities, load_backend


def info() -> dict[str, object]:
    """What serves each operator: ``{"backends": {name: status}, "native": {operator: [backends]},
    "cpu": {...}}``, the last saying whether the compiled CPU kernels were built and are in use.

    Loads the NumPy backend first so that the report is complete for the default CPU path.
    """
    load_backend("numpy")
    from tropic.backends.numpy import compiled
    from tropic.core.config import get_num_threads

    native = {op: sorted(backends) for op, backends in capabilities().items()}
    cpu = {
        "compiled kernels": compiled.status(),
        "in use": compiled.available(),
        "threads": get_num_threads(),
    }
    return {"backends": backend_status(), "native": native, "cpu": cpu}
