"""Layers defined once for both engines: tropic's own autodiff and PyTorch.

A layer class deriving from :class:`Layer` is written once, here in :mod:`tropic.nn`, against a small
engine interface instead of a tensor library:

``self._setup(dtype, device)``
    First call of ``__init__`` (in place of ``super().__init__()``): makes the object a module of its
    engine and returns the NumPy dtype in which to draw the initial values.
``self.parameter(values, zero=0.0)`` / ``self.buffer(name, values)``
    The engine's parameter and buffer from NumPy initial values; ``zero`` is the value meaning "no
    connection" (``-inf`` for a max-plus weight), which pruning writes.
``self.F``
    The engine's functional namespace: :mod:`tropic.autodiff` here, :mod:`tropic.torch.functional`
    for PyTorch (same names: ``concatenate``, ``reshape``, ``pad``, ``conv2d``, ``softplus``, ...).
    The tropical operators are tropic's public functions, which accept both engines' tensors.
``self.engine_layer(cls)`` / ``self.linear_layer(...)``
    The engine's version of another layer class, and its affine layer, for sub-layers.
``self.keep_mask(name)`` / ``self.dropout_keep_mask(shape, p, like)``
    A parameter's pruning mask (None if unpruned), a fresh weight-dropout mask.
``self.host(x)`` / ``self.constant(values, like)``
    A NumPy copy of a tensor's values; NumPy values as a constant of ``like``'s dtype and device.
``self.binary_map(x, masks, threshold, flipped)`` / ``self.require_eager(what)``
    The binarised layers' exact 0/1 forward (:mod:`tropic.nn.binary`), eager, without gradient;
    a clear error where NumPy code cannot run (under ``torch.compile``).

:mod:`tropic.torch.nn` derives the ``torch.nn.Module`` of each layer from the same class
(:func:`tropic.torch.nn.engine_class`): the methods are shared, only this interface differs. So
``tropic.nn.MaxPlus`` and ``tropic.torch.nn.MaxPlus`` are one definition with one constructor
signature; for the same seed they start from the same values. The definitions call no zero-argument
``super()`` (the torch class has other bases); a layer that builds on another calls its
``__init__`` by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import autodiff
from . import init as _init
from .module import Module, Parameter

__all__ = ["Layer", "record_arguments", "require_features", "require_image"]


def record_arguments(init: Any) -> Any:
    """Wrap a layer's ``__init__`` so that the outermost call keeps its arguments in
    ``self._arguments`` (``tropic.torch.nn.from_tropic`` rebuilds the layer on the other engine from
    them, then copies the state)."""
    if getattr(init, "_records_arguments", False):
        return init

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        outermost = "_arguments" not in self.__dict__
        if outermost:
            self.__dict__["_arguments"] = None  # a layer built inside this one keeps its own
        try:
            init(self, *args, **kwargs)
        except TypeError as error:
            # Python names the function that defines __init__ ("_TropicalDense.__init__() got an
            # unexpected keyword argument"): name the class the user called.
            prefix = f"{init.__qualname__}()"
            if not str(error).startswith(prefix):
                raise
            raise TypeError(f"{type(self).__name__}(){str(error)[len(prefix) :]}") from None
        if outermost:
            self.__dict__["_arguments"] = (args, kwargs)

    wrapper._records_arguments = True  # type: ignore[attr-defined]
    return wrapper


def require_features(layer: Any, x: Any, features: int) -> None:
    """``ValueError`` naming ``layer`` unless ``x`` has shape ``(..., features)`` (an ``x`` without a
    shape, a nested list, is left to the operators)."""
    shape = getattr(x, "shape", None)
    if shape is not None and (len(shape) == 0 or shape[-1] != features):
        shape = tuple(shape)
        raise ValueError(f"{type(layer).__name__}: x must have shape (..., {features}), got {shape}")


_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def require_image(layer: Any, x: Any, channels: int, spatial: int = 2) -> None:
    """``ValueError`` naming ``layer`` unless ``x`` has shape ``(B, channels, H, W)`` (``spatial=2``),
    ``(B, channels, L)`` (1) or ``(B, channels, D, H, W)`` (3)."""
    shape = getattr(x, "shape", None)
    if shape is not None and (len(shape) != 2 + spatial or shape[1] != channels):
        shape = tuple(shape)
        layout = _SPATIAL.get(spatial) or ", ".join(f"N{i}" for i in range(1, spatial + 1))
        raise ValueError(f"{type(layer).__name__}: x must have shape (B, {channels}, {layout}), got {shape}")


class Layer(Module):
    """Base of the layers defined once for both engines (see the module docstring); this class is
    the :mod:`tropic.autodiff` engine's side of the interface."""

    F = autodiff

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = record_arguments(cls.__dict__["__init__"])

    def _setup(self, dtype: Any = None, device: Any = None) -> np.dtype:
        Module.__init__(self)
        if device not in (None, "cpu"):
            raise ValueError(
                "tropic.nn layers are built on the CPU (NumPy); move them with .to(cupy), got "
                f"device={device!r}"
            )
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if dtype.kind != "f":
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        return dtype

    def parameter(self, values: np.ndarray, zero: float = 0.0) -> Parameter:
        return Parameter(values, zero=zero)

    def buffer(self, name: str, values: np.ndarray) -> None:
        self.register_buffer(name, values)

    def engine_layer(self, cls: type) -> type:
        return cls

    def linear_layer(self, in_features: int, out_features: int, bias: bool, init: str, rng: Any, dtype: Any):
        from .linear import Linear

        return Linear(in_features, out_features, bias, init=init, rng=rng, dtype=dtype)

    def keep_mask(self, name: str) -> Any:
        return getattr(self, name).mask

    def dropout_keep_mask(self, shape: tuple[int, ...], p: float, like: Any) -> Any:
        """Keep each entry with probability ``1 - p``, from the layer's NumPy generator ``self.rng``."""
        from .dropout import _keep_mask

        return _keep_mask(self.rng, shape, p, like.data)

    def host(self, x: Any) -> np.ndarray:
        return x.numpy()

    def constant(self, values: np.ndarray, like: Any) -> Any:
        xp = like.xp
        return xp.astype(xp.asarray(values, device=like.device), like.dtype)

    def require_eager(self, what: str) -> None:
        """Nothing here: tropic.autodiff always runs eagerly."""

    def with_host_values(self, x: Any, host_values: Callable[[], np.ndarray]) -> Any:
        """``x`` whose values are ``host_values()`` (NumPy): ``x`` itself here, where the engine's
        NumPy arithmetic is the host's formula already (see the torch mirror's)."""
        return x

    def binary_map(self, x: Any, masks: np.ndarray, threshold: np.ndarray, flipped: np.ndarray) -> Any:
        """``(self._linear(x, masks) >= threshold) != flipped`` per neuron, as 0/1 in the float
        forward's dtype (``x``'s promoted with the parameters'): 0/1 sums are exact integers in
        floating point, so comparing with ``k - 1/2`` is rounding-free."""
        x = x if isinstance(x, autodiff.Tensor) else autodiff.Tensor(x)
        xp = x.xp
        dtype = xp.result_type(x.dtype, self.theta.dtype)

        def raw(v: Any) -> Any:
            return v.data if isinstance(v, autodiff.Tensor) else v

        masks, threshold = (xp.astype(xp.asarray(v, device=x.device), dtype) for v in (masks, threshold))
        with autodiff.no_grad():
            z = raw(self._linear(x.detach(), masks))
        out = (z >= raw(self._broadcast(threshold))) != raw(
            self._broadcast(xp.asarray(flipped, device=x.device))
        )
        return autodiff.Tensor(xp.astype(out, dtype))

    @staticmethod
    def as_generator(rng: Any, seed: int | None) -> np.random.Generator:
        return _init.as_rng(rng, seed)
