"""Elementwise activations as modules: ``ReLU``, ``Tanh``, ``Sigmoid``, ``Softplus``."""

from __future__ import annotations

from typing import Any

from .. import autodiff as ad
from .module import Module

__all__ = ["ReLU", "Sigmoid", "Softplus", "Tanh"]


class ReLU(Module):
    """``y = max(x, 0)`` (gradient 0 at 0)."""

    def forward(self, x: Any) -> ad.Tensor:
        return ad.relu(x)


class Tanh(Module):
    """``y = tanh(x)``."""

    def forward(self, x: Any) -> ad.Tensor:
        return ad.tanh(x)


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``."""

    def forward(self, x: Any) -> ad.Tensor:
        return ad.sigmoid(x)


class Softplus(Module):
    """``y = log(1 + exp(x))`` (the stable form of :func:`tropic.autodiff.softplus`)."""

    def forward(self, x: Any) -> ad.Tensor:
        return ad.softplus(x)
