"""Dense tropical layers as torch modules: ``MaxPlus``, ``MinPlus``, ``DilationErosion``, ``Maxout``.

Same constructor arguments and semantics as :mod:`tropic.nn.tropical` (plus torch's ``dtype`` and
``device``); the initial values are drawn by the tropic layer's own code.
"""

from __future__ import annotations

import torch

import tropic
import tropic.nn as _tnn

from ._mirror import TropicMirror, maximum, minimum, mirror

__all__ = ["DilationErosion", "MaxPlus", "Maxout", "MinPlus"]


class _TropicalDense(TropicMirror):
    _config = ("in_features", "out_features", "init")

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, init={self.init!r}"
        )


@mirror
class MaxPlus(_TropicalDense):
    """Dense max-plus layer ``y_j = max(b_j, max_i x_i + W_ji)`` (:class:`tropic.nn.MaxPlus`).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    init : {"dense", "sparse"}
        ``"sparse"`` keeps each entry with probability ``p`` (or ``count / size``), the rest ``-inf``.
    p, count : float, optional
    rng, seed : optional
        NumPy random source of the initialisation (as tropic.nn: same seed, same values).
    dtype : torch dtype, optional
        float32 (torch's default dtype), float64, float16 or bfloat16.
    device : optional

    Attributes
    ----------
    weight : Parameter (out, in)
    bias : Parameter (out,) or None

    Examples
    --------
    >>> import torch
    >>> from tropic.torch import nn as tnn
    >>> layer = tnn.MaxPlus(4, 3, init="sparse", count=6, seed=0)
    >>> layer(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    _tropic_cls = _tnn.MaxPlus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = tropic.maxplus_matmul(x, self.weight.T)
        return y if self.bias is None else maximum(self.bias, y)


@mirror
class MinPlus(_TropicalDense):
    """Dense min-plus layer ``y_j = min(b_j, min_i x_i + W_ji)`` (:class:`tropic.nn.MinPlus`);
    parameters as :class:`MaxPlus`, with ``+inf`` as the sparse zero."""

    _tropic_cls = _tnn.MinPlus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = tropic.minplus_matmul(x, self.weight.T)
        return y if self.bias is None else minimum(self.bias, y)


@mirror
class DilationErosion(TropicMirror):
    """Dilation neurons and erosion neurons side by side (:class:`tropic.nn.DilationErosion`):
    ``[d, e]`` (``combine="concat"``) or ``d + e`` (``combine="sum"``).

    Attributes
    ----------
    dilation : MaxPlus
    erosion : MinPlus
    """

    _tropic_cls = _tnn.DilationErosion
    _config = ("combine",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, e = self.dilation(x), self.erosion(x)
        return d + e if self.combine == "sum" else torch.cat([d, e], dim=-1)

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}"


@mirror
class Maxout(TropicMirror):
    """Maxout unit (:class:`tropic.nn.Maxout`): ``Linear(in, out * pieces)`` then the max over each
    group of ``pieces`` consecutive features (``tropic.maxout``: the gradient goes to one winner).

    Attributes
    ----------
    linear : torch.nn.Linear
    """

    _tropic_cls = _tnn.Maxout
    _config = ("pieces",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tropic.maxout(self.linear(x), self.pieces, axis=-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
