"""Batch normalisation: ``BatchNorm1d``, ``BatchNorm2d``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import autodiff as ad
from ..core._array_api import array_namespace
from ..core.checks import positive_int
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class BatchNorm1d(Module):
    """Batch normalisation over the batch axis of ``(B, C)`` inputs (Ioffe & Szegedy).

    .. math:: y = \\gamma \\, \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta

    In training mode ``mu`` and ``sigma^2`` are the batch mean and biased batch variance, and the
    running statistics are updated as ``r <- (1 - momentum) r + momentum * s`` with the *unbiased*
    batch variance (as in PyTorch). In evaluation mode the running statistics are used.

    Parameters
    ----------
    num_features : int
        ``C``.
    eps : float
    momentum : float in [0, 1]
    affine : bool
        Learn ``gamma`` (init 1) and ``beta`` (init 0).
    dtype : floating dtype

    Attributes
    ----------
    running_mean, running_var : arrays (C,)
        Buffers (in the state dict).
    num_batches_tracked : int64 array ()
        Buffer.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = positive_int("num_features", num_features)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        else:
            self.weight = self.bias = None
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))

    _layout = "(B, C)"

    def forward(self, x: Any) -> ad.Tensor:
        ndim = len(self._layout.split(","))
        if x.ndim != ndim or x.shape[1] != self.num_features:
            layout = self._layout.replace("C", str(self.num_features))
            raise ValueError(f"x must have shape {layout}, got {tuple(x.shape)}")
        axes = (0, *range(2, ndim))  # every axis but the channels
        shape = (1, self.num_features) + (1,) * (ndim - 2)  # per-channel values broadcast on x
        if self.training:
            n = math.prod(x.shape[a] for a in axes)
            if n < 2:
                raise ValueError(f"training mode needs at least 2 values per channel, got {n}")
            mean = ad.mean(x, axis=axes, keepdims=True)
            centred = x - mean
            var = ad.mean(centred * centred, axis=axes, keepdims=True)
            with ad.no_grad():
                m, c = self.momentum, self.num_features
                xp = array_namespace(r=self.running_mean)
                mean_data, var_data = xp.reshape(_data(mean), (c,)), xp.reshape(_data(var), (c,))
                self.running_mean = (1 - m) * self.running_mean + m * mean_data
                self.running_var = (1 - m) * self.running_var + m * var_data * (n / (n - 1))
                count = self.num_batches_tracked
                self.num_batches_tracked = xp.asarray(count + 1)
            y = centred / ad.sqrt(var + self.eps)
        else:
            xp = array_namespace(r=self.running_mean)
            scale = 1.0 / xp.sqrt(self.running_var + self.eps)
            y = (x - xp.reshape(self.running_mean, shape)) * xp.reshape(scale, shape)
        if self.weight is not None:
            y = y * ad.reshape(self.weight, shape) + ad.reshape(self.bias, shape)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.weight is not None}"
        )


def _data(t: Any) -> Any:
    return t.data if isinstance(t, ad.Tensor) else t


class BatchNorm2d(BatchNorm1d):
    """Batch normalisation of ``(B, C, H, W)`` inputs: statistics per channel over the batch and both
    spatial axes (``n = B H W`` values each); otherwise as :class:`BatchNorm1d`.

    .. math:: y_{bchw} = \\gamma_c \\, \\frac{x_{bchw} - \\mu_c}{\\sqrt{\\sigma_c^2 + \\epsilon}} + \\beta_c
    """

    _layout = "(B, C, H, W)"
