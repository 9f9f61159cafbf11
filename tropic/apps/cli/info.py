"""``tropic info``: version, backends, the kernels that serve each operator, compiled CPU kernels,
threads, environment variables tropic ignores, optional libraries (JSON)."""

from __future__ import annotations

import argparse
import importlib
import json

HELP = "version, backends and what serves each operator, threads (JSON)"

#: Operators whose NumPy kernel is NumPy code even when the compiled C kernels are in use (the others
#: call C for float32 and float64: products, morphology, convolutions and the three gradients).
_NUMPY_CODE_ONLY = frozenset({"maxout"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(options: argparse.Namespace) -> int:
    del options
    print(json.dumps(report(), indent=2))
    return 0


def report() -> dict[str, object]:
    """What ``tropic info`` prints.

    ``kernels`` maps each operator to what runs it for each array library with a backend of its own:
    for NumPy arrays "compiled C" (tropic's C kernels, float32 and float64; other dtypes run NumPy
    code) or "pure NumPy" (the fallback, when the C kernels are not built or are switched off: ``cpu``
    says why); for CuPy arrays, CUDA kernels. Array libraries not listed (array-api-strict, say) run
    the array-API reference of ``tropic.core``.
    """
    import tropic
    from tropic.backends import info

    from . import environment_problems

    found = info()
    cpu = found["cpu"]
    kernels = {
        operator: [_kernel(operator, name, cpu["in use"]) for name in names]
        for operator, names in found["native"].items()
    }
    environment = environment_problems()
    return {
        "tropic": tropic.__version__,
        "backends": found["backends"],
        "kernels": kernels,
        "cpu": cpu,
        "environment": environment or "no problems (TROPIC_* variables unset or valid)",
        "libraries": _libraries(),
    }


def _kernel(operator: str, backend: str, compiled: bool) -> str:
    if backend == "numpy":
        if not compiled:
            return "NumPy arrays: pure NumPy (compiled C kernels not in use, see cpu)"
        if operator in _NUMPY_CODE_ONLY:
            return "NumPy arrays: NumPy code (no C kernel for this operator)"
        return "NumPy arrays: compiled C (float32, float64)"
    if backend == "cupy":
        return "CuPy arrays: CUDA kernels"
    return f"{backend} arrays: tropic's {backend} backend"


def _libraries() -> dict[str, str]:
    """Versions of the optional libraries tropic can use, or why they are unavailable."""
    found = {}
    for name in ("numpy", "scipy", "torch", "cupy", "sklearn", "matplotlib", "kornia", "tqdm"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            found[name] = "not installed"
            continue
        version = getattr(module, "__version__", "unknown version")
        if name == "cupy":
            try:
                version += f", {module.cuda.runtime.getDeviceCount()} CUDA device(s)"
            except Exception as exc:  # no driver / no device: say so, never fail `info`
                version += f", no usable CUDA device ({type(exc).__name__})"
        found[name] = version
    return found
