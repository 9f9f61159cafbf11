"""Routing from an operator to the backend kernel for the caller's array library.

A backend module registers kernels with :func:`register` when it is imported. Core never imports a
backend at import time: the first call with, say, a NumPy array imports ``tropic.backends.numpy``.
A kernel takes exactly the (already checked and normalised) arguments of the core reference it
replaces, under the names the operator's spec lists (:mod:`tropic.core.spec`; ``register`` checks
them), and must return bitwise the same values and winners; where no kernel is registered for an
operator, the reference runs. A gradient kernel must raise ``ValueError`` for winners outside
``[-1, candidates)`` before it writes anything (they index the gradients).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from types import ModuleType

from ._array_api import backend_name
from .spec import kernel_signature

_BACKEND_MODULES = {
    "numpy": "tropic.backends.numpy",
    "cupy": "tropic.backends.cupy",
}

_kernels: dict[tuple[str, str], Callable] = {}
_load_status: dict[str, str] = {}  # backend -> "loaded" or the reason it could not be loaded


def register(backend: str, operator: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` the ``backend`` kernel for ``operator`` (a kernel name of a spec).

    ``TypeError`` if no spec names such a kernel or ``fn``'s parameters are not the spec's.
    """

    def decorate(fn: Callable) -> Callable:
        expected = kernel_signature(operator)
        if expected is None:
            raise TypeError(f"no operator spec names a kernel {operator!r}")
        names = tuple(inspect.signature(fn).parameters)
        if names != expected:
            raise TypeError(f"the {backend} kernel {operator!r} must take {expected}, got {names}")
        _kernels[(backend, operator)] = fn
        return fn

    return decorate


def load_backend(backend: str) -> None:
    """Import a backend once (registering its kernels); remember why if it cannot be imported."""
    if backend in _load_status:
        return
    try:
        _import_backend(backend)
    except ImportError as exc:  # a missing optional backend means: use the reference
        _load_status[backend] = f"not available ({exc})"
    else:
        _load_status[backend] = "loaded"


def _import_backend(backend: str) -> None:
    # Import statements, not importlib: torch.compile (dynamo) runs an import statement when it meets
    # one while tracing, but refuses to trace importlib, so a first call inside a compiled function
    # would otherwise break the graph.
    if backend == "numpy":
        import tropic.backends.numpy
    elif backend == "cupy":
        import tropic.backends.cupy  # noqa: F401
    else:
        importlib.import_module(_BACKEND_MODULES[backend])


def kernel_for(operator: str, xp: ModuleType) -> Callable | None:
    """The registered kernel for ``operator`` on namespace ``xp``, or None (use the reference)."""
    backend = backend_name(xp)
    if backend is None:
        return None
    load_backend(backend)
    return _kernels.get((backend, operator))


def capabilities() -> dict[str, dict[str, str]]:
    """``{operator: {backend: "native"}}`` for the backends loaded so far (others use the reference)."""
    table: dict[str, dict[str, str]] = {}
    for backend, operator in sorted(_kernels):
        table.setdefault(operator, {})[backend] = "native"
    return table


def backend_status() -> dict[str, str]:
    """Load status of every known backend: "loaded", "not loaded yet", or why it is unavailable."""
    return {name: _load_status.get(name, "not loaded yet") for name in _BACKEND_MODULES}
