"""The torch side of the layers' functional namespace (``Layer.F``, see :mod:`tropic.nn.layer`).

The functions :mod:`tropic.autodiff` offers the layers defined once, with the same names, arguments and
semantics, for torch tensors. The tropical operators are not here: tropic's public functions accept
torch tensors themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as _F

import tropic

__all__ = [
    "clamp",
    "concatenate",
    "conv2d",
    "flip",
    "matmul",
    "maximum",
    "minimum",
    "no_grad",
    "pad",
    "permute_dims",
    "reshape",
    "softplus",
    "sum",
    "tanh",
    "where",
]

clamp = torch.clamp
matmul = torch.matmul
maximum = tropic.maximum  # the first operand wins ties (tropic.autodiff's rule)
minimum = tropic.minimum
no_grad = torch.no_grad
tanh = torch.tanh
where = torch.where


def concatenate(tensors: Sequence[torch.Tensor], axis: int = 0) -> torch.Tensor:
    return torch.cat(list(tensors), dim=axis)


def reshape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return x.reshape(tuple(shape))


def permute_dims(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    return x.permute(tuple(axes))


def flip(x: torch.Tensor, axis: int | Sequence[int]) -> torch.Tensor:
    return torch.flip(x, (axis,) if isinstance(axis, int) else tuple(axis))


def sum(x: torch.Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> torch.Tensor:
    return torch.sum(x) if axis is None else torch.sum(x, dim=axis, keepdim=keepdims)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0) + log1p(e^{-|x|})`` (as :func:`tropic.autodiff.softplus`; torch's own
    ``softplus`` switches to ``x`` above a threshold, this does not)."""
    return torch.clamp_min(x, 0.0) + torch.log1p(torch.exp(-x.abs()))


def conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    groups: int = 1,
) -> torch.Tensor:
    """Linear 2-D convolution (cross-correlation), as :func:`tropic.autodiff.conv2d`."""
    return _F.conv2d(x, w, bias, stride=stride, padding=padding, groups=groups)


def pad(x: torch.Tensor, pad_width: Any, mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    """``x`` padded by ``pad_width`` (NumPy's ``((before, after), ...)`` per axis): with ``value``
    (``mode="constant"``) or by repeating the border entries (``mode="edge"``)."""
    widths = [tuple(int(n) for n in w) for w in pad_width]
    if mode == "constant":
        flat = [n for before, after in reversed(widths) for n in (before, after)]
        return _F.pad(x, flat, value=value)
    if mode != "edge":
        raise ValueError(f"mode must be 'constant' or 'edge', got {mode!r}")
    # Slices and cat rather than F.pad(mode="replicate"): under torch.compile (2.13, CPU) inductor may
    # hand replication_pad2d_backward a channels-last gradient and then fail its own stride assertion.
    for axis, (before, after) in enumerate(widths):
        if before or after:
            first = x.narrow(axis, 0, 1)
            last = x.narrow(axis, x.shape[axis] - 1, 1)
            shape_before = list(x.shape)
            shape_before[axis] = before
            shape_after = list(x.shape)
            shape_after[axis] = after
            x = torch.cat([first.expand(shape_before), x, last.expand(shape_after)], dim=axis)
    return x
