"""Morphological convolution layers as torch modules: ``MaxPlusConv2d``, ``MinPlusConv2d``,
``Dilation2d``, ``Erosion2d`` (inputs ``(B, C, H, W)``), mirroring :mod:`tropic.nn.conv`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tropic
import tropic.nn as _tnn

from ._mirror import INF, TropicMirror, maximum, minimum, mirror

__all__ = ["Dilation2d", "Erosion2d", "MaxPlusConv2d", "MinPlusConv2d"]


class _TropicalConv2d(TropicMirror):
    _config = ("stride", "padding", "groups", "init")

    def extra_repr(self) -> str:
        o, c, kh, kw = self.weight.shape
        return (
            f"{c * self.groups}, {o}, kernel_size={(kh, kw)}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}, init={self.init!r}"
        )


@mirror
class MaxPlusConv2d(_TropicalConv2d):
    """Max-plus 2-D convolution (:class:`tropic.nn.MaxPlusConv2d`, correlation orientation):
    ``y[b,o,i,j] = max(c_o, max_{c,u,v} x[b, g(o) C_g + c, i s + u - p, j s + v - p] + w[o,c,u,v])``,
    ``-inf`` padding.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
    groups : int
    bias : bool
        Off by default; a candidate inside the max when on.
    init, p, count, rng, seed
        As :class:`tropic.nn.MaxPlusConv2d`.
    dtype, device
        torch's.
    """

    _tropic_cls = _tnn.MaxPlusConv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = tropic.maxplus_conv2d(
            x, self.weight, stride=self.stride, padding=self.padding, groups=self.groups
        )
        return y if self.bias is None else maximum(self.bias.reshape(1, -1, 1, 1), y)


@mirror
class MinPlusConv2d(_TropicalConv2d):
    """Min-plus 2-D convolution (:class:`tropic.nn.MinPlusConv2d`): the dual of
    :class:`MaxPlusConv2d` (``min``, ``+inf`` padding and sparse zero, bias inside the min)."""

    _tropic_cls = _tnn.MinPlusConv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = tropic.minplus_conv2d(
            x, self.weight, stride=self.stride, padding=self.padding, groups=self.groups
        )
        return y if self.bias is None else minimum(self.bias.reshape(1, -1, 1, 1), y)


class _Morphology2d(TropicMirror):
    _config = ("channels", "kernel_size")
    _dilation = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        kh, kw = self.kernel_size
        # SciPy's centre of an even window is k // 2 (as tropic.nn.Dilation2d / Erosion2d).
        before = (kh // 2, kw // 2)
        after = (kh - 1 - kh // 2, kw - 1 - kw // 2)
        w = self.structure.reshape(self.channels, 1, kh, kw)
        if self._dilation:
            # (f ⊕ s)(x) = max_y f(x - y) + s(y): a correlation with the reflected element.
            xpad = F.pad(x, (after[1], before[1], after[0], before[0]), value=-INF)
            return tropic.maxplus_conv2d(xpad, torch.flip(w, (2, 3)), groups=self.channels)
        # (f ⊖ s)(x) = min_y f(x + y) - s(y): a min-plus correlation with -s.
        xpad = F.pad(x, (before[1], after[1], before[0], after[0]), value=INF)
        return tropic.minplus_conv2d(xpad, -w, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


@mirror
class Dilation2d(_Morphology2d):
    """Grey-level dilation of every channel by its own learnable structuring element
    (:class:`tropic.nn.Dilation2d`, SciPy conventions, ``-inf`` outside the image): one depthwise
    max-plus convolution, memory O(output) plus the winners' indices.

    Parameters
    ----------
    channels : int
    kernel_size : int or (int, int)
    init : {"zeros", "normal"}
    rng, seed, dtype, device

    Attributes
    ----------
    structure : Parameter (channels, kh, kw)

    Examples
    --------
    >>> import torch
    >>> from tropic.torch import nn as tnn
    >>> layer = tnn.Dilation2d(2, 3)
    >>> x = torch.zeros(1, 2, 5, 5); x[0, :, 2, 2] = 1
    >>> int(layer(x).sum())  # a flat 3x3 dilation of a point: 9 ones per channel
    18
    """

    _tropic_cls = _tnn.Dilation2d
    _dilation = True


@mirror
class Erosion2d(_Morphology2d):
    """Grey-level erosion of every channel by its own learnable structuring element
    (:class:`tropic.nn.Erosion2d`, ``+inf`` outside the image); parameters as :class:`Dilation2d`."""

    _tropic_cls = _tnn.Erosion2d
    _dilation = False

    def _adopt(self, layer, dtype=None, device=None) -> None:
        super()._adopt(layer, dtype, device)
        # In (f ⊖ s)(x) = min_y f(x + y) - s(y) an absent element entry is s = -inf (then -s = +inf,
        # neutral in the min), as for a dilation; tropic.nn.Erosion2d marks its structure with +inf,
        # which would make every pruned window's minimum -inf. Pruning (tropic.torch.prune) reads this.
        self._zeros["structure"] = -INF
