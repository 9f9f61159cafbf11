"""CUDA tensors on the CuPy backend's kernels: devices, DLPack views, torch's stream.

The engine's CUDA kernels (:mod:`tropic.torch.engine`) run an operator's spec on zero-copy CuPy views
of the tensors (``cupy.from_dlpack``; the CuPy kernels copy what they need contiguous), on torch's
current stream of the tensors' device, and return the results with ``torch.from_dlpack``, without a
synchronisation. The results live in CuPy's memory pool, not torch's caching allocator. bfloat16
needs CuPy >= 14 with ``ml_dtypes`` (CuPy's bfloat16 arrays and their DLPack exchange are built on
ml_dtypes' NumPy dtype); elsewhere bfloat16 CUDA tensors raise ``TypeError`` saying so, before any
DLPack exchange (older CuPy versions crash on a bfloat16 DLPack tensor). Without CuPy, CUDA tensors
raise ``NotImplementedError`` saying what to install; tensors on different devices raise
``ValueError`` (tropic never moves a tensor).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tropic.core import dispatch

__all__ = ["check_device", "run"]

CUPY_INSTALL = "install CuPy built for your CUDA version (`pip install cupy-cuda12x`, or cupy-cuda13x)"


def check_device(name: str, device: torch.device) -> None:
    """Raise unless ``device`` is the CPU, or a CUDA device with the CuPy backend available: tropic
    never moves a tensor between devices itself."""
    if device.type == "cpu":
        return
    if device.type == "cuda":
        require_cupy(f"{name} is on {device}")
        return
    raise NotImplementedError(
        f"tropic's torch operators run on CUDA tensors (with CuPy) and CPU tensors only, got {name} on "
        f"{device}"
    )


def require_cupy(where: str) -> None:
    """Load the CuPy backend (once), or raise ``NotImplementedError`` saying what to install."""
    dispatch.load_backend("cupy")
    status = dispatch.backend_status()["cupy"]
    if status != "loaded":
        raise NotImplementedError(
            f"CUDA kernels for torch tensors need the CuPy backend, which is {status}: {CUPY_INSTALL} "
            f"({where})"
        )


def cuda_device(**tensors: Tensor | None) -> torch.device:
    """The one CUDA device holding every given tensor; ``ValueError`` naming them otherwise (a call
    mixing devices reaches a CUDA kernel whenever one tensor is on CUDA)."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    first = next(iter(devices.values()))
    if first.type != "cuda" or any(d != first for d in devices.values()):
        described = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(
            f"all tensors must be on one CUDA device (tropic never moves tensors), got {described}"
        )
    return first


@functools.cache
def bfloat16_unsupported() -> str | None:
    """Why CuPy cannot hold bfloat16 arrays in this process, or None where it can (CuPy >= 14 with
    ml_dtypes importable). Decided from what is installed, without touching a GPU; once per process."""
    try:
        import ml_dtypes  # noqa: F401  (CuPy imports it itself where it can; this only asks)
    except ImportError:
        return "ml_dtypes is not installed"
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    major = re.match(r"\d+", cupy.__version__)
    if major is None or int(major[0]) < 14:
        return f"CuPy {cupy.__version__} has no bfloat16 arrays"
    return None


def refuse_bfloat16(**tensors: Tensor | None) -> None:
    """``TypeError`` for a bfloat16 CUDA tensor where CuPy cannot hold it, before any DLPack exchange."""
    for name, t in tensors.items():
        if t is not None and t.dtype == torch.bfloat16:
            reason = bfloat16_unsupported()
            if reason is None:
                return
            raise TypeError(
                f"{name} is a bfloat16 CUDA tensor: the CUDA kernels take bfloat16 through CuPy >= 14 with "
                f"ml_dtypes only ({reason}); install both (`pip install ml_dtypes`, CuPy >= 14), or use "
                "float16, float32 or float64 on CUDA (bfloat16 runs on CPU tensors)"
            )


@functools.cache
def cupy_modules() -> tuple[Any, Any]:
    """CuPy and its array-API namespace (the ``xp`` the CuPy backend's kernels take)."""
    import array_api_compat.cupy as cupy_namespace
    import cupy

    return cupy, cupy_namespace


def cupy_stream(cupy: Any, device: torch.device) -> Any:
    """torch's current stream of ``device`` as a CuPy stream (the same CUDA stream, not a new one)."""
    stream = torch.cuda.current_stream(device)
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(stream, "__cuda_stream__"):
        return from_external(stream)  # CuPy 14: the CUDA stream protocol (ExternalStream deprecated)
    return cupy.cuda.ExternalStream(stream.cuda_stream, device.index)


def as_cupy(cupy: Any, t: Tensor) -> Any:
    """A zero-copy CuPy view of ``t`` (strides kept: the kernels copy what they need contiguous; a
    lazily negated view is resolved first, as DLPack would drop its sign)."""
    t = t.detach().resolve_neg()
    if t.numel() == 0:  # nothing to share (and no data pointer to hand over)
        return cupy.empty(tuple(t.shape), str(t.dtype).removeprefix("torch."))
    return cupy.from_dlpack(t)


def as_torch(x: Any, device: torch.device) -> Tensor:
    """``torch.from_dlpack`` of a kernel result, contiguous (as the fake kernels promise)."""
    if x.size == 0:
        return torch.empty(tuple(x.shape), dtype=getattr(torch, x.dtype.name), device=device)
    return torch.from_dlpack(x).contiguous()


def run(compute: Callable[..., Any], device: torch.device, what: str, *args: Any) -> Any:
    """``compute(xp, *args)`` with CuPy's namespace and the tensors among ``args`` as CuPy views, on
    torch's current stream of ``device``; array results as tensors. Everything, the DLPack exchanges
    included, happens inside the stream context, so producer and consumer share one stream. ``what``
    names the op in errors."""
    require_cupy(f"{what} on {device}")
    cupy, xp = cupy_modules()
    with cupy.cuda.Device(device.index), cupy_stream(cupy, device):
        result = compute(xp, *(as_cupy(cupy, a) if isinstance(a, Tensor) else a for a in args))
        return tuple(None if r is None else as_torch(r, device) for r in result)
