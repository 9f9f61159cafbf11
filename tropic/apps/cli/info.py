"""``tropic info``: version, backends, compiled kernels, optional libraries, threads."""

from __future__ import annotations

import argparse
import importlib
import json

HELP = "version, backends and what serves each operator, threads (JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(options: argparse.Namespace) -> int:
    del options
    import tropic
    from tropic.backends import info

    report = {"tropic": tropic.__version__, **info(), "libraries": _libraries()}
    print(json.dumps(report, indent=2))
    return 0


def _libraries() -> dict[str, str]:
    """Versions of the optional libraries tropic can use, or why they are unavailable."""
    found = {}
    for name in ("numpy", "scipy", "torch", "cupy", "sklearn", "matplotlib", "kornia"):
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
