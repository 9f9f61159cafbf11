"""Every way to run tropic's operators, behind one interface, for tests written once.

``Place`` is one array library or engine on one device: the compiled NumPy kernels, the pure NumPy
path, array-api-strict (the core reference), ``tropic.autodiff`` tensors, torch CPU tensors, and, where
a GPU is present, CuPy arrays and torch CUDA tensors. The table ``PLACES`` says what each can do
(``gradients``: the results are differentiable, ``float16``); the ``place`` fixture of conftest.py runs
a test on each (``gradient_place`` and ``float16_place`` on those with the capability), skipping
only for a missing optional library or GPU.

A test converts its NumPy inputs with ``place.array(x)`` (``place.leaf(x)`` for one whose gradient it
wants), calls ``tropic.*`` on them, and compares ``place.numpy(result)`` with the expected NumPy result;
``place.backward(result, g, leaves)`` backpropagates ``sum(loss * g)`` where the place can.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from .helpers import gpu_unavailable, require_gpu, skip_gpu_test


@dataclass
class Place:
    """One array library or engine on one device (see the module docstring)."""

    name: str
    gradients: bool = False
    float16: bool = True
    needs: tuple[str, ...] = ()  # optional modules it needs (skipped without them)
    gpu: bool = False
    _state: dict[str, Any] = field(default_factory=dict)

    # -- set up ----------------------------------------------------------------------------------
    def enter(self, monkeypatch: pytest.MonkeyPatch) -> Place:
        for module in self.needs:
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{self.name} needs {module}, which is not installed")
        if self.gpu:
            if self.name.startswith("torch"):
                import torch

                if not torch.cuda.is_available():
                    skip_gpu_test(f"this torch ({torch.__version__}) has no usable CUDA device")
            reason = gpu_unavailable()
            if reason is not None:
                skip_gpu_test(reason)
            require_gpu()
        from tropic.backends.numpy import compiled

        if self.name == "numpy-compiled" and not compiled.available():
            pytest.skip(f"compiled kernels not built: {compiled.status()}")
        monkeypatch.setattr(compiled, "enabled", self.name != "numpy-path")
        return self

    def require(self, capability: str) -> None:
        """Skip unless the place has ``capability`` (a field of the table)."""
        if not getattr(self, capability):
            pytest.skip(f"{self.name} has no {capability}")

    # -- data in and out -------------------------------------------------------------------------
    def array(self, x: np.ndarray) -> Any:
        """``x`` as this place's array or tensor (a constant)."""
        x = np.ascontiguousarray(x)
        if self.name in ("numpy-compiled", "numpy-path"):
            return x
        if self.name == "array-api-strict":
            import array_api_strict as xs

            return xs.asarray(x)
        if self.name == "autodiff":
            import tropic.autodiff as ad

            return ad.Tensor(x)
        if self.name.startswith("torch"):
            import torch

            t = torch.from_numpy(x)
            return t.cuda() if self.gpu else t
        if self.name == "cupy":
            import cupy

            return cupy.asarray(x)
        raise AssertionError(self.name)

    def leaf(self, x: np.ndarray) -> Any:
        """``x`` as a tensor whose gradient the test wants (places with ``gradients`` only)."""
        self.require("gradients")
        t = self.array(x)
        if self.name == "autodiff":
            t.requires_grad = True
        else:
            t.requires_grad_()
        return t

    def numpy(self, x: Any) -> np.ndarray:
        """A NumPy copy of a result (values or winners)."""
        if isinstance(x, np.ndarray):
            return x
        if self.name == "autodiff":
            return x.numpy()
        if self.name.startswith("torch"):
            return x.detach().cpu().numpy()
        if self.name == "cupy":
            return x.get()
        return np.from_dlpack(x)

    def backward(self, result: Any, grad: np.ndarray, leaves: list[Any]) -> list[np.ndarray | None]:
        """``d sum(result * grad) / d leaf`` for each leaf (None where nothing reaches it)."""
        self.require("gradients")
        if self.name == "autodiff":
            result.backward(grad)
            return [None if t.grad is None else np.asarray(t.grad) for t in leaves]
        import torch

        result.backward(torch.as_tensor(grad, device=result.device))
        return [None if t.grad is None else t.grad.detach().cpu().numpy() for t in leaves]


PLACES = [
    Place("numpy-compiled"),
    Place("numpy-path"),
    Place("array-api-strict", float16=False, needs=("array_api_strict",)),
    Place("autodiff", gradients=True),
    Place("torch-cpu", gradients=True, needs=("torch",)),
    Place("cupy", needs=("cupy",), gpu=True),
    Place("torch-cuda", gradients=True, needs=("torch", "cupy"), gpu=True),
]
