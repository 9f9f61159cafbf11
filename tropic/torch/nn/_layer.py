"""The torch engine's side of the layers defined once (:mod:`tropic.nn.layer`).

:func:`engine_class` turns a :class:`tropic.nn.layer.Layer` class into a ``torch.nn.Module`` class:
the same class body (methods, properties, docstring, constructor signature) on :class:`TorchLayer`,
which implements the engine interface with torch (``torch.nn.Parameter`` from NumPy initial values,
:mod:`tropic.torch.functional` as ``F``, torch-style pruning masks, torch's random numbers for weight
dropout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tropic.nn.layer import Layer, record_arguments
from tropic.nn.linear import linear_init

from .. import engine, functional

__all__ = ["TorchLayer", "engine_class", "numpy_dtype"]

# torch dtype -> the NumPy dtype the initial values are drawn in (bfloat16: drawn in float32, then
# rounded once by the cast, as drawing it directly would).
_NUMPY_DTYPES = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.bfloat16: np.float32,
}
_COMPILE_MESSAGE = (
    "{name}.{what} cannot run under torch.compile: the binarisation (tropic.nn.binarize) is "
    "NumPy code on the detached weights. Compile the float model (binary_mode False) and run the "
    "binarised model eagerly."
)
_CLASSES: dict[type, type] = {}


def numpy_dtype(dtype: Any) -> tuple[Any, torch.dtype]:
    """``(NumPy dtype to draw the initial values in, torch dtype of the result)`` for a ``dtype``
    argument: a torch floating dtype, a NumPy floating dtype, or None (torch's default dtype)."""
    if dtype is None:
        dtype = torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype):
        try:
            np_dtype = np.dtype(dtype)
        except TypeError as err:
            raise TypeError(f"dtype must be a torch or NumPy floating dtype, got {dtype!r}") from err
        dtype = {np.dtype(v): k for k, v in _NUMPY_DTYPES.items() if k != torch.bfloat16}.get(np_dtype)
        if dtype is None:
            raise TypeError(f"dtype must be a floating dtype (float16/32/64, bfloat16), got {np_dtype}")
    if dtype not in _NUMPY_DTYPES:
        raise TypeError(f"dtype must be a floating dtype (float16/32/64, bfloat16), got {dtype}")
    return _NUMPY_DTYPES[dtype], dtype


def as_tensor(values: Any, dtype: torch.dtype | None, device: Any) -> torch.Tensor:
    """A new tensor with the values of ``values`` (NumPy, or any DLPack array); floating ones cast
    to ``dtype`` when given."""
    if isinstance(values, (np.ndarray, np.generic)):
        # Storage of torch's own (resizable, as FSDP needs to free it): from_numpy's is NumPy's.
        t = torch.from_numpy(np.asarray(values, order="C")).clone()
    else:
        t = torch.from_dlpack(values).clone()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t if device is None else t.to(device)


class TorchLayer(torch.nn.Module):
    """Base of the torch classes of the layers defined once (see the module docstring).

    Attributes
    ----------
    binary_mode : bool
        As :attr:`tropic.nn.Module.binary_mode`; set on a whole tree by :meth:`binary`.
    """

    F = functional

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = record_arguments(cls.__dict__["__init__"])

    def _setup(self, dtype: Any = None, device: Any = None) -> np.dtype:
        torch.nn.Module.__init__(self)
        np_dtype, torch_dtype = numpy_dtype(dtype)
        self._dtype, self._device = torch_dtype, device
        self._zeros: dict[str, float] = {}  # parameter name -> its tropical zero (pruning writes it)
        self.binary_mode = False
        return np.dtype(np_dtype)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, torch.nn.Parameter) and hasattr(value, "_tropic_zero"):
            self._zeros[name] = value._tropic_zero
        torch.nn.Module.__setattr__(self, name, value)

    def parameter(self, values: np.ndarray, zero: float = 0.0) -> torch.nn.Parameter:
        p = torch.nn.Parameter(as_tensor(values, self._dtype, self._device))
        p._tropic_zero = zero  # recorded under the parameter's name by __setattr__
        return p

    def buffer(self, name: str, values: np.ndarray) -> None:
        self.register_buffer(name, as_tensor(values, self._dtype, self._device))

    def engine_layer(self, cls: type) -> type:
        return engine_class(cls)

    def linear_layer(self, in_features: int, out_features: int, bias: bool, init: str, rng: Any, dtype: Any):
        """``torch.nn.Linear`` with tropic's initial values (``init`` drawn from ``rng``, bias 0)."""
        layer = torch.nn.Linear(in_features, out_features, bias=bias, dtype=self._dtype, device=self._device)
        with torch.no_grad():
            layer.weight.copy_(
                as_tensor(linear_init(init, (out_features, in_features), rng, dtype), None, None)
            )
            if bias:
                layer.bias.zero_()
        return layer

    def keep_mask(self, name: str) -> torch.Tensor | None:
        # torch.nn.utils.prune's buffer (or a plain attribute of that name), looked up where it would
        # be: getattr(self, key, None) of a missing name runs Module.__getattr__ to its AttributeError,
        # some 20 us of every unpruned forward
        key = f"{name}_mask"
        mask = self.__dict__.get(key)
        if mask is None:
            mask = self._buffers.get(key)
        return None if mask is None else mask != 0

    def dropout_keep_mask(self, shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
        """Keep each entry with probability ``1 - p``, from torch's generator (``torch.manual_seed``)."""
        return torch.rand(shape, device=like.device) >= p

    def host(self, x: torch.Tensor) -> np.ndarray:
        value = x.detach().cpu()
        # NumPy has no bfloat16: its values are exact in float32. A copy through DLPack: .numpy() would
        # pin the parameter's storage (FSDP frees parameters by resizing theirs).
        return np.array(np.from_dlpack(value.float() if value.dtype == torch.bfloat16 else value))

    def constant(self, values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(values)).to(dtype=like.dtype, device=like.device)

    def with_host_values(self, x: torch.Tensor, host_values: Callable[[], np.ndarray]) -> torch.Tensor:
        """``x`` with the values ``host_values()`` computes in NumPy and ``x``'s gradient:
        ``v + (x - x.detach())`` adds an exact 0 to ``v``. Where torch's ``exp`` / ``log1p`` round
        differently from NumPy's (an ulp, on some CPUs), this keeps a value that the binarisation
        reads on the host the forward's exactly. On plain CPU tensors in eager mode; under
        ``torch.compile``, ``torch.func`` transforms, forward-mode AD, dispatch modes and on other
        devices ``x`` itself (no host round trip in a graph or of wrapped tensors, no device sync)."""
        if not engine.eager_cpu(x):
            return x
        return self.constant(host_values(), like=x) + (x - x.detach())

    def require_eager(self, what: str) -> None:
        """A clear ``RuntimeError`` under ``torch.compile`` for NumPy code on the weights."""
        if torch.compiler.is_compiling():
            raise RuntimeError(_COMPILE_MESSAGE.format(name=type(self).__name__, what=what))

    def binary_map(self, x: torch.Tensor, masks: np.ndarray, threshold: np.ndarray, flipped: np.ndarray):
        """As :meth:`tropic.nn.layer.Layer.binary_map`; eager only (a clear ``RuntimeError`` under
        ``torch.compile``)."""
        self.require_eager("binary_forward")
        dtype, device = torch.promote_types(x.dtype, self.theta.dtype), self.theta.device
        masks, threshold = (torch.from_numpy(v).to(dtype=dtype, device=device) for v in (masks, threshold))
        flipped = torch.from_numpy(flipped).to(device)
        with torch.no_grad():
            z = self._linear(x.detach().to(dtype), masks)
            out = (z >= self._broadcast(threshold)) != self._broadcast(flipped)
        return out.to(dtype)

    def load_tropic_state(self, state: dict[str, Any], strict: bool = True) -> Any:
        """Load a :mod:`tropic.nn` state dict (NumPy arrays, as ``Module.state_dict()`` or
        ``tropic.nn.load_state`` give): :func:`tropic.torch.nn.load_tropic_state`."""
        from .convert import load_tropic_state

        return load_tropic_state(self, state, strict=strict)

    def binary(self, mode: bool = True) -> TorchLayer:
        """Set ``binary_mode`` on every layer of the tree (binarised layers read it); return self."""
        set_binary(self, mode)
        return self


def set_binary(model: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    """Set ``binary_mode`` on every tropic layer of ``model`` (any torch model); return ``model``."""
    if not isinstance(mode, bool):
        raise TypeError(f"mode must be a bool, got {type(mode).__name__}")
    for module in model.modules():
        if isinstance(module, TorchLayer):
            module.binary_mode = mode
    return model


def engine_class(cls: type) -> type:
    """The ``torch.nn.Module`` class of layer class ``cls`` (:class:`tropic.nn.layer.Layer`): its class
    body on :class:`TorchLayer` in place of :class:`~tropic.nn.layer.Layer`, made once."""
    if cls is Layer:
        return TorchLayer
    made = _CLASSES.get(cls)
    if made is None:
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"{cls!r} is not a tropic.nn layer defined for both engines")
        bases = tuple(engine_class(b) if issubclass(b, Layer) else b for b in cls.__bases__)
        body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        body["__module__"] = "tropic.torch.nn"
        body["_tropic_cls"] = cls  # the tropic.nn class it is made from
        made = _CLASSES[cls] = type(cls.__name__, bases, body)
    return made
