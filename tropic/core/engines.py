"""Engines: the tensor types with an autodiff of their own that tropic's operators accept as peers.

An engine (``tropic.autodiff``'s ``Tensor``, PyTorch's ``torch.Tensor``) registers here by the
module that implements it and a test for its tensors. A public operator given such tensors asks the
engine to apply the operator's spec (:mod:`tropic.core.spec`): the engine unwraps its tensors,
runs the spec on the arrays underneath (so the same kernels serve every engine), wraps the result
and records the spec's derivatives. Core imports no engine at import time: an engine's module is
imported the first time one of its tensors arrives, as a backend is.

An engine module provides:

``array(x)``
    The array under tensor ``x`` (for argument checks: shapes, dtypes, devices).
``apply(operator, inputs, params, winners=True)``
    ``(values, winners)`` as the engine's tensors, the values differentiable. ``winners=False``: the
    caller will not read the winners; where no gradient is recorded and the operator
    ``skips_winners``, the engine may run it without them (and return None for them).
``vjp(operator, grad, winners, shapes, needs, params)``
    The operator's vector-Jacobian product of the engine's tensors (the public ``*_vjp`` functions).
``wrap(array)``
    A constant tensor of the engine holding ``array``.
``RUNS_LATER_NODES_FIRST``
    Whether its backward pass runs, of two recorded operations that both feed one result, the later
    one's vjp first (torch) or the earlier one's (``tropic.autodiff``). An operator that stands for
    several calls (:mod:`tropic.core.mpm`) orders its inputs by it, so that gradients reaching one
    operand are added in the order the separate calls would add them (float sums depend on it).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["arrays", "define_torch_ops_with_torch", "engine_of", "run_vjp"]


def engine_of(*values: Any) -> ModuleType | None:
    """The engine module of the tensors among ``values`` (None: plain arrays, the common case).

    ``TypeError`` if tensors of two engines are mixed: tropic never converts one into the other.
    """
    # The tensor types of the engines whose modules are imported (no tensor of the others exists).
    # Another thread may be importing torch: a half-initialised module has no Tensor yet.
    autodiff_type = getattr(sys.modules.get("tropic.autodiff.tensor"), "Tensor", None)
    torch_type = getattr(sys.modules.get("torch"), "Tensor", None)
    found = None
    for value in values:
        if value is None or type(value).__module__ == "numpy":
            continue
        if autodiff_type is not None and isinstance(value, autodiff_type):
            name = "autodiff"
        elif torch_type is not None and isinstance(value, torch_type):
            name = "torch"
        else:
            continue
        if found is not None and found != name:
            raise TypeError(
                f"cannot mix {found} and {name} tensors in one call: convert one side first "
                "(tropic never converts tensors between engines)"
            )
        found = name
    return None if found is None else load(found)


def load(name: str) -> ModuleType:
    """The engine module ``name`` (imported on first use)."""
    # Import statements, not importlib: torch.compile traces an import statement, not importlib.
    if name == "torch":
        import tropic.torch.engine as module
    else:
        import tropic.autodiff.engine as module
    return module


def run_vjp(operator: Any, grad: Any, winners: Any, shapes: tuple, needs: tuple, params: dict) -> tuple:
    """``operator``'s vjp of arrays or of an engine's tensors (the public ``*_vjp`` functions)."""
    engine = engine_of(grad, winners)
    if engine is None:
        from ._array_api import array_namespace

        xp = array_namespace(grad=grad, indices=winners)
        return operator.vjp(xp, grad, winners, shapes, needs, **params)
    return engine.vjp(operator, grad, winners, shapes, needs, params)


def arrays(*values: Any) -> tuple[Any, ...]:
    """The arrays under ``values`` (an engine's tensors unwrapped; arrays and None as they are)."""
    engine = engine_of(*values)
    if engine is None:
        return values
    return tuple(None if v is None else engine.array(v) for v in values)


class _AfterTorchImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``torch`` is first imported, it runs torch's own loader, then
    loads the torch engine (which defines ``torch.ops.tropic.*``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "torch":
            return None
        try:  # once only; and the lookup below must find torch's real spec, not this finder again
            sys.meta_path.remove(self)
        except ValueError:
            return None
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_torch = spec.loader.exec_module

        def run_torch_then_tropic(module: ModuleType) -> None:
            run_torch(module)
            try:
                load("torch")
            except Exception as error:  # a broken engine must not break ``import torch``
                warnings.warn(
                    f"tropic could not define torch.ops.tropic.* ({type(error).__name__}: {error}); "
                    "import tropic.torch to see the full error",
                    RuntimeWarning,
                    stacklevel=2,
                )

        spec.loader.exec_module = run_torch_then_tropic  # this spec's own loader object
        return spec


def define_torch_ops_with_torch() -> None:
    """Make ``torch.ops.tropic.*`` exist whenever torch does, from ``import tropic`` on.

    Exported programs (``torch.export.load``), AOTInductor packages and traced modules name the ops
    ``torch.ops.tropic.<op>``; a fresh process that imports tropic, before or after torch, can load
    them. If torch is already imported the engine loads now; otherwise it loads right after torch's
    own import finishes (numpy-only users never pay for it).
    """
    if "torch" in sys.modules:
        load("torch")
    elif not any(isinstance(finder, _AfterTorchImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterTorchImport())
