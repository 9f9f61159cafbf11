"""The architectures of :mod:`tropic.nn.dmnn_models` as torch models.

Each function takes the tropic function's arguments (plus torch's ``dtype`` and ``device``), builds
the tropic model with them and converts it with :func:`~tropic.torch.nn.from_tropic`: the same seed
gives the same initial values in both libraries.

Examples
--------
>>> import torch
>>> from tropic.torch import nn as tnn
>>> head = tnn.hybrid_head(64, 32, 10, seed=0)
>>> [type(m).__name__ for m in head]
['Linear', 'BatchNorm1d', 'MaxPlus', 'Linear']
>>> head(torch.zeros(5, 64)).shape
torch.Size([5, 10])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

import tropic
from tropic.nn import dmnn_models as _models

from ._layer import numpy_dtype
from .convert import from_tropic, register

__all__ = list(_models.__all__) + ["GroupMax"]


class GroupMax(torch.nn.Module):
    """Max over consecutive groups of ``pieces`` features (``tropic.maxout``; the fixed max-plus layer
    of maxout heads)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tropic.maxout(x, self.pieces, axis=-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


register(_models._GroupMax)(lambda layer, dtype, device: GroupMax(layer.pieces))


def _torch_model(build: Callable[..., Any]) -> Callable[..., torch.nn.Sequential]:
    @functools.wraps(build)
    def make(*args: Any, dtype: Any = None, device: Any = None, **kwargs: Any) -> torch.nn.Sequential:
        np_dtype, torch_dtype = numpy_dtype(dtype)
        return from_tropic(build(*args, dtype=np_dtype, **kwargs), dtype=torch_dtype, device=device)

    make.__doc__ = (
        f"torch version of :func:`tropic.nn.dmnn_models.{build.__name__}` (same arguments, plus torch's "
        f"``dtype`` and ``device``).\n\n{build.__doc__ or ''}"
    )
    return make


for _name in _models.__all__:
    globals()[_name] = _torch_model(getattr(_models, _name))
