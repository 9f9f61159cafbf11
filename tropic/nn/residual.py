"""Residual connection: ``Residual(block)(x) = x + block(x)``."""

from __future__ import annotations

from typing import Any

from .. import autodiff as ad
from .module import Module

__all__ = ["Residual"]


class Residual(Module):
    """Identity shortcut around ``block``: ``y = x + block(x)`` (the block must keep the shape).

    Attributes
    ----------
    block : Module
    """

    def __init__(self, block: Module) -> None:
        super().__init__()
        if not isinstance(block, Module):
            raise TypeError(f"block must be a Module, got {type(block).__name__}")
        self.block = block

    def forward(self, x: Any) -> ad.Tensor:
        y = self.block(x)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"the block changed the shape from {tuple(x.shape)} to {tuple(y.shape)}")
        return x + y if isinstance(x, ad.Tensor) else y + x
