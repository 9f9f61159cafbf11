"""Conversions between :mod:`tropic.nn` models and torch modules.

:func:`from_tropic` builds the torch module of a tropic.nn model and copies its state: a layer defined
for both engines (:mod:`tropic.nn.layer`) becomes its torch class built with the same arguments, then
loaded with the layer's state dict; ``Sequential``, ``Linear``, ``BatchNorm`` and the other plain layers
become torch's own modules. :func:`load_tropic_state` and :func:`tropic_state_dict` move state dicts
between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import tropic.nn as _tnn
from tropic.nn import dmnn_conv as _dmnn_conv
from tropic.nn.layer import Layer

from .. import functional
from ._layer import as_tensor as _to_tensor
from ._layer import engine_class, numpy_dtype

__all__ = [
    "Residual",
    "ResidualBlock",
    "Softplus",
    "from_tropic",
    "load_tropic_state",
    "tropic_state_dict",
    "tropical_zero",
]

_CONVERTERS: dict[type, Callable[..., torch.nn.Module]] = {}


def tropical_zero(module: torch.nn.Module, name: str) -> float:
    """The value that means "no connection" for parameter ``name`` of ``module``: ``-inf`` for a
    max-plus weight, ``+inf`` for a min-plus weight, ``0.0`` otherwise (linear weights, any module
    that is not a tropic mirror). Taken from the tropic layer's ``Parameter.zero``."""
    return getattr(module, "_zeros", {}).get(name, 0.0)


def register(*tropic_classes: type) -> Callable:
    """Decorator: ``fn(layer, dtype, device) -> torch module`` converts instances of these classes."""

    def decorate(fn: Callable) -> Callable:
        for cls in tropic_classes:
            _CONVERTERS[cls] = fn
        return fn

    return decorate


def from_tropic(layer: _tnn.Module, *, dtype: Any = None, device: Any = None) -> torch.nn.Module:
    """The torch module equivalent to a :mod:`tropic.nn` layer or model, with a copy of its state.

    Tropical, binarised and deep-morphological layers become their :mod:`tropic.torch.nn` classes;
    ``Sequential``, ``ModuleList``, ``Linear``, ``Conv2d``, ``BatchNorm1d/2d``, ``ReLU``, ``Tanh``,
    ``Sigmoid``, ``Flatten``, ``Unflatten``, ``Identity``, ``MaxPool2d`` and ``Dropout`` become
    torch's own modules.
    Pruning masks become torch-style pruning (``weight_orig`` + ``weight_mask``, see
    :mod:`tropic.torch.prune`).

    Parameters
    ----------
    layer : tropic.nn.Module
    dtype : torch dtype, optional
        Cast the floating parameters and buffers (default: keep the tropic layer's dtypes).
    device : optional
        Where the tensors go (default CPU).

    Examples
    --------
    >>> import numpy as np, torch, tropic.nn
    >>> from tropic.torch import nn as tnn
    >>> layer = tropic.nn.MaxPlus(3, 2, seed=0, dtype=np.float64)
    >>> module = tnn.from_tropic(layer)
    >>> x = np.ones((4, 3))
    >>> bool(np.array_equal(module(torch.from_numpy(x)).detach().numpy(), layer(x).numpy()))
    True
    """
    if dtype is not None:
        dtype = numpy_dtype(dtype)[1]
    if isinstance(layer, Layer):
        return _from_layer(layer, dtype, device)
    for cls in type(layer).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls](layer, dtype, device)
    raise NotImplementedError(f"no torch equivalent of tropic.nn.{type(layer).__name__} yet")


def _from_layer(layer: Layer, dtype: torch.dtype | None, device: Any) -> torch.nn.Module:
    """The torch class of ``layer`` built with its arguments (another seed: the values are replaced),
    then its state: parameters, buffers, pruning masks, training and binary modes."""
    args, kwargs = layer._arguments
    kwargs = {k: v for k, v in kwargs.items() if k not in ("rng", "seed", "dtype", "device")}
    if dtype is None:
        floating = [p.data for p in layer.parameters()] or [b for b in layer.buffers() if b is not None]
        dtype = _dtype_of(floating[0]) if floating else None
    module = engine_class(type(layer))(*args, **kwargs, seed=0, dtype=dtype, device=device)
    for (_, own), (_, mine) in zip(layer.named_modules(), module.named_modules(), strict=True):
        mine.train(own.training)
        if isinstance(own, Layer):
            mine.binary_mode = own.binary_mode
        _prune_like(mine, own)
    load_tropic_state(module, layer.state_dict())  # pruning masks included, into torch's mask buffers
    return module


def load_tropic_state(module: torch.nn.Module, state: dict[str, Any], strict: bool = True) -> Any:
    """Load a :mod:`tropic.nn` state dict into a torch module built from the same tropic layer.

    Keys are the same on both sides (``"0.weight"``, ``"dilation.bias"``, ...). Values are copied
    exactly and cast to the torch tensors' dtypes; a tropic pruning mask ``"<name>_mask"`` goes to
    the torch module's ``"<name>_mask"`` buffer (the module must be pruned already). Returns
    ``torch.nn.Module.load_state_dict``'s result.
    """
    own = module.state_dict()
    converted = {}
    for key, value in state.items():
        tensor = torch.from_numpy(np.array(np.asarray(value), copy=True, order="C"))
        target = own.get(key, own.get(f"{key}_orig"))
        if target is not None:
            tensor = tensor.to(dtype=target.dtype, device=target.device)
            key = key if key in own else f"{key}_orig"
        converted[key] = tensor
    return module.load_state_dict(converted, strict=strict)


def tropic_state_dict(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The state of a torch module as a :mod:`tropic.nn` state dict (NumPy arrays, tropic's keys):
    ``tropic_layer.load_state_dict(tropic_state_dict(module))`` reverses :func:`from_tropic`.

    A pruned parameter is stored as its pruned value (``weight_orig`` with the mask applied, under
    ``"weight"``) and its mask as a boolean ``"weight_mask"``. bfloat16 tensors are widened to
    float32 (NumPy has no bfloat16); cast the tropic layer accordingly.
    """
    state = {}
    pruned = {
        (prefix, hook._tensor_name): hook
        for prefix, m in module.named_modules()
        for hook in m._forward_pre_hooks.values()
        if isinstance(hook, torch.nn.utils.prune.BasePruningMethod)
    }
    modules = dict(module.named_modules())
    for key, value in module.state_dict().items():
        prefix, _, name = key.rpartition(".")
        if name.endswith("_orig") and (prefix, name[: -len("_orig")]) in pruned:
            base = name[: -len("_orig")]
            value = pruned[(prefix, base)].apply_mask(modules[prefix])
            key = f"{prefix}.{base}" if prefix else base
        elif name.endswith("_mask") and (prefix, name[: -len("_mask")]) in pruned:
            value = value != 0
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        state[key] = np.array(np.from_dlpack(value))  # a copy, without pinning the module's storage
    return state


# -- torch's own modules for the plain layers of tropic.nn ------------------------------------------


def _copy_into(target: torch.nn.Module, layer: _tnn.Module, dtype: Any, device: Any) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in layer._parameters.items():
            if p is not None:
                getattr(target, name).copy_(_to_tensor(p.data, None, None))
        for name, b in _plain_buffers(layer):
            if b is not None:
                getattr(target, name).copy_(_to_tensor(b, None, None))
    if dtype is not None:
        target = target.to(dtype)
    if device is not None:
        target = target.to(device)
    return _prune_like(target.train(layer.training), layer)


def _plain_buffers(layer: _tnn.Module) -> list[tuple[str, Any]]:
    """The buffers of ``layer`` except its pruning masks (``"<param>_mask"``)."""
    return [
        (name, b)
        for name, b in layer._buffers.items()
        if not (name.endswith("_mask") and name[: -len("_mask")] in layer._parameters)
    ]


def _prune_like(module: torch.nn.Module, layer: _tnn.Module) -> torch.nn.Module:
    """Give ``module`` the pruning masks of ``layer`` (torch-style, see :mod:`tropic.torch.prune`)."""
    from ..prune import custom_from_mask

    for name, p in layer._parameters.items():
        if p is not None and p.mask is not None:
            device = getattr(module, name).device
            custom_from_mask(module, name, _to_tensor(p.mask, None, device))
    return module


def _dtype_of(array: Any) -> torch.dtype:
    """The torch dtype of a tropic layer's array (to build torch's module in it, then copy exactly)."""
    return _to_tensor(array, None, None)[:0].dtype


@register(_tnn.Linear)
def _linear(layer, dtype, device):
    target = torch.nn.Linear(
        layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=_dtype_of(layer.weight.data)
    )
    return _copy_into(target, layer, dtype, device)


@register(_tnn.Conv2d)
def _conv2d(layer, dtype, device):
    o, c, kh, kw = layer.weight.shape
    target = torch.nn.Conv2d(
        c * layer.groups, o, (kh, kw), stride=layer.stride, padding=layer.padding, groups=layer.groups,
        bias=layer.bias is not None, dtype=_dtype_of(layer.weight.data),
    )  # fmt: skip
    return _copy_into(target, layer, dtype, device)


@register(_tnn.BatchNorm1d, _tnn.BatchNorm2d)
def _batch_norm(layer, dtype, device):
    cls = torch.nn.BatchNorm2d if isinstance(layer, _tnn.BatchNorm2d) else torch.nn.BatchNorm1d
    target = cls(
        layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.weight is not None,
        dtype=_dtype_of(layer.running_mean),
    )  # fmt: skip
    return _copy_into(target, layer, dtype, device)


@register(_tnn.Sequential)
def _sequential(layer, dtype, device):
    modules = [from_tropic(m, dtype=dtype, device=device) for m in layer]
    return torch.nn.Sequential(*modules).train(layer.training)


@register(_tnn.ModuleList)
def _module_list(layer, dtype, device):
    return torch.nn.ModuleList([from_tropic(m, dtype=dtype, device=device) for m in layer])


for _tropic_cls, _make in (
    (_tnn.ReLU, torch.nn.ReLU),
    (_tnn.Tanh, torch.nn.Tanh),
    (_tnn.Sigmoid, torch.nn.Sigmoid),
    (_tnn.Identity, torch.nn.Identity),
):
    register(_tropic_cls)(lambda layer, dtype, device, _make=_make: _make().train(layer.training))
register(_tnn.Flatten)(lambda layer, dtype, device: torch.nn.Flatten(layer.start_dim))
register(_tnn.Unflatten)(lambda layer, dtype, device: torch.nn.Unflatten(1, layer.shape))
# Same inverted dropout (zero with probability p, scale the rest by 1 / (1 - p)); masks come from
# torch's generator, not the tropic layer's.
register(_tnn.Dropout)(lambda layer, dtype, device: torch.nn.Dropout(layer.p).train(layer.training))
register(_tnn.MaxPool2d)(
    lambda layer, dtype, device: torch.nn.MaxPool2d(layer.kernel_size, stride=layer.stride)
)


class Softplus(torch.nn.Module):
    """``y = log(1 + e^x)`` without a threshold (the formula of :class:`tropic.nn.Softplus`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.softplus(x)


register(_tnn.Softplus)(lambda layer, dtype, device: Softplus().train(layer.training))


class Residual(torch.nn.Module):
    """``y = x + block(x)`` (:class:`tropic.nn.Residual`)."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


register(_tnn.Residual)(
    lambda layer, dtype, device: Residual(from_tropic(layer.block, dtype=dtype, device=device)).train(
        layer.training
    )
)


class ResidualBlock(torch.nn.Module):
    """``y = post(block(x) + shortcut(x))`` (:class:`tropic.nn.dmnn_conv.ResidualBlock`; a missing
    shortcut is the identity, a missing ``post`` nothing)."""

    def __init__(
        self,
        block: torch.nn.Module,
        shortcut: torch.nn.Module | None = None,
        post: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.block, self.shortcut, self.post = block, shortcut, post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x) + (x if self.shortcut is None else self.shortcut(x))
        return y if self.post is None else self.post(y)


def _residual_block(layer, dtype, device):
    def convert(module):
        return None if module is None else from_tropic(module, dtype=dtype, device=device)

    return ResidualBlock(convert(layer.block), convert(layer.shortcut), convert(layer.post)).train(
        layer.training
    )


register(_dmnn_conv.ResidualBlock)(_residual_block)
