"""Convolution-type layers: ``Conv2d``, ``MaxPlusConv1d``, ``MinPlusConv1d``, ``MaxPlusConv2d``,
``MinPlusConv2d``, ``MaxPlusConv3d``, ``MinPlusConv3d``, ``Dilation1d``, ``Erosion1d``, ``Dilation2d``,
``Erosion2d``, ``Dilation3d``, ``Erosion3d``, ``MaxPool2d``. Inputs are ``(B, C, L)`` (1-D),
``(B, C, H, W)`` (2-D) or ``(B, C, D, H, W)`` (3-D).

The morphological ones are defined once for both engines (:mod:`tropic.nn.layer`); ``tropic.torch.nn``
has the same classes as ``torch.nn.Module`` s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tropic

from .. import autodiff as ad
from ..core.checks import ints, pair, positive_int
from . import init as _init
from .layer import Layer, require_image
from .linear import linear_init
from .module import Module, Parameter
from .tropical import tropical_weight

__all__ = [
    "Conv2d",
    "Dilation1d",
    "Dilation2d",
    "Dilation3d",
    "Erosion1d",
    "Erosion2d",
    "Erosion3d",
    "MaxPlusConv1d",
    "MaxPlusConv2d",
    "MaxPlusConv3d",
    "MaxPool2d",
    "MinPlusConv1d",
    "MinPlusConv2d",
    "MinPlusConv3d",
]


def _conv_shape(
    in_channels: int, out_channels: int, kernel_size: Any, groups: int, spatial: int = 2
) -> tuple[int, ...]:
    in_channels = positive_int("in_channels", in_channels)
    out_channels = positive_int("out_channels", out_channels)
    groups = positive_int("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by "
            f"groups ({groups})"
        )
    return (out_channels, in_channels // groups, *ints("kernel_size", kernel_size, spatial, 1))


class Conv2d(Module):
    """Linear 2-D convolution (cross-correlation, as ``torch.nn.Conv2d``).

    .. math:: y_{b,o,i,j} = c_o + \\sum_{c,u,v} x_{b,\\,g(o) C_g + c,\\; i s + u - p,\\; j s + v - p}
              \\, w_{o,c,u,v}

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
        Zero padding.
    groups : int
    bias : bool
        Learn ``c`` (init 0).
    init : str
        Linear initialiser of ``w`` (default He normal, fan-in ``C_g kh kw``).
    rng, seed, dtype
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        *,
        init: str = "he_normal",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        shape = _conv_shape(in_channels, out_channels, kernel_size, groups)
        self.stride, self.padding, self.groups = (
            pair("stride", stride, 1),
            pair("padding", padding, 0),
            groups,
        )
        self.weight = Parameter(linear_init(init, shape, _init.as_rng(rng, seed), dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None

    def forward(self, x: Any) -> ad.Tensor:
        return ad.conv2d(
            x, self.weight, self.bias, stride=self.stride, padding=self.padding, groups=self.groups
        )

    def extra_repr(self) -> str:
        o, c, kh, kw = self.weight.shape
        return (
            f"{c * self.groups}, {o}, kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


class _TropicalConv(Layer):
    """Max-plus (``_zero = -inf``) or min-plus (``+inf``) convolution over ``_spatial`` axes."""

    _zero = -np.inf
    _spatial = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        groups: int = 1,
        bias: bool = False,
        *,
        init: str = "dense",
        p: float | None = None,
        count: int | None = None,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        n = self._spatial
        shape = _conv_shape(in_channels, out_channels, kernel_size, groups, n)
        self.stride, self.padding, self.groups = (
            ints("stride", stride, n, 1),
            ints("padding", padding, n, 0),
            groups,
        )
        self.init = init
        gen = _init.as_rng(rng, seed)
        w = tropical_weight(shape, init, gen, dtype, p, count, self._zero)
        self.weight = self.parameter(w, zero=self._zero)
        b = _init.normal((out_channels,), gen, dtype) if bias else None
        self.bias = None if b is None else self.parameter(b, zero=self._zero)

    def forward(self, x: Any) -> Any:
        require_image(self, x, self.weight.shape[1] * self.groups, self._spatial)
        maximise = self._zero < 0
        if self._spatial == 1:
            op = tropic.maxplus_conv1d if maximise else tropic.minplus_conv1d
        elif self._spatial == 3:
            op = tropic.maxplus_conv3d if maximise else tropic.minplus_conv3d
        else:
            op = tropic.maxplus_conv2d if maximise else tropic.minplus_conv2d
        y = op(x, self.weight, stride=self.stride, padding=self.padding, groups=self.groups)
        if self.bias is None:
            return y
        combine = tropic.maximum if maximise else tropic.minimum
        return combine(self.F.reshape(self.bias, (1, self.bias.shape[0]) + (1,) * self._spatial), y)

    def extra_repr(self) -> str:
        o, c, *kernel = self.weight.shape
        return (
            f"{c * self.groups}, {o}, kernel_size={tuple(kernel)}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}, init={self.init!r}"
        )


class MaxPlusConv1d(_TropicalConv):
    """Max-plus 1-D convolution layer (correlation orientation, like ``torch.nn.Conv1d``).

    .. math:: y_{b,o,i} = \\max\\big(c_o,\\; \\max_{c,v}
              x_{b,\\,g(o) C_g + c,\\; i s + v - p} + w_{o,c,v}\\big)

    Inputs ``(B, in_channels, L)``, weight ``(out_channels, in_channels // groups, k)``
    (:func:`tropic.maxplus_conv1d`: :class:`MaxPlusConv2d` with a unit height). Padding is ``-inf``;
    the bias ``c`` is a candidate inside the max, off by default.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int,)
    groups : int
    bias : bool
    init : {"dense", "sparse"}
        ``N(0, 1)`` weights, or sparse with ``p`` / ``count`` and the rest ``-inf``.
    p, count, rng, seed, dtype, device
    """

    _zero = -np.inf
    _spatial = 1


class MinPlusConv1d(_TropicalConv):
    """Min-plus 1-D convolution layer, the dual of :class:`MaxPlusConv1d` (``min``, ``+inf`` padding,
    ``+inf`` as the sparse zero, the bias a candidate inside the min).

    .. math:: y_{b,o,i} = \\min\\big(c_o,\\; \\min_{c,v}
              x_{b,\\,g(o) C_g + c,\\; i s + v - p} + w_{o,c,v}\\big)
    """

    _zero = np.inf
    _spatial = 1


class MaxPlusConv2d(_TropicalConv):
    """Max-plus 2-D convolution layer (correlation orientation, like :class:`Conv2d`).

    .. math:: y_{b,o,i,j} = \\max\\big(c_o,\\; \\max_{c,u,v}
              x_{b,\\,g(o) C_g + c,\\; i s + u - p,\\; j s + v - p} + w_{o,c,u,v}\\big)

    Padding is the tropical zero ``-inf`` (:func:`tropic.maxplus_conv2d`). The bias ``c`` is, as in
    :class:`MaxPlus`, a candidate inside the max; it is off by default (``bias=False``), as in the
    morphological convolution layers of the literature.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
    groups : int
    bias : bool
    init : {"dense", "sparse"}
        ``N(0, 1)`` weights, or sparse with ``p`` / ``count`` and the rest ``-inf``.
    p, count, rng, seed, dtype, device
    """

    _zero = -np.inf


class MinPlusConv2d(_TropicalConv):
    """Min-plus 2-D convolution layer, the dual of :class:`MaxPlusConv2d` (``min``, ``+inf`` padding,
    ``+inf`` as the sparse zero, the bias a candidate inside the min).

    .. math:: y_{b,o,i,j} = \\min\\big(c_o,\\; \\min_{c,u,v}
              x_{b,\\,g(o) C_g + c,\\; i s + u - p,\\; j s + v - p} + w_{o,c,u,v}\\big)
    """

    _zero = np.inf


class MaxPlusConv3d(_TropicalConv):
    """Max-plus 3-D convolution layer (correlation orientation, like ``torch.nn.Conv3d``).

    .. math:: y_{b,o,z,i,j} = \\max\\big(c_o,\\; \\max_{c,a,u,v}
              x_{b,\\,g(o) C_g + c,\\; z s + a - p,\\; i s + u - p,\\; j s + v - p} + w_{o,c,a,u,v}\\big)

    Inputs ``(B, in_channels, D, H, W)``, weight ``(out_channels, in_channels // groups, kd, kh, kw)``
    (:func:`tropic.maxplus_conv3d`). Padding is ``-inf``; the bias ``c`` is a candidate inside the
    max, off by default.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int, int)
    groups : int
    bias : bool
    init : {"dense", "sparse"}
        ``N(0, 1)`` weights, or sparse with ``p`` / ``count`` and the rest ``-inf``.
    p, count, rng, seed, dtype, device
    """

    _zero = -np.inf
    _spatial = 3


class MinPlusConv3d(_TropicalConv):
    """Min-plus 3-D convolution layer, the dual of :class:`MaxPlusConv3d` (``min``, ``+inf`` padding,
    ``+inf`` as the sparse zero, the bias a candidate inside the min).

    .. math:: y_{b,o,z,i,j} = \\min\\big(c_o,\\; \\min_{c,a,u,v}
              x_{b,\\,g(o) C_g + c,\\; z s + a - p,\\; i s + u - p,\\; j s + v - p} + w_{o,c,a,u,v}\\big)
    """

    _zero = np.inf
    _spatial = 3


class _Morphology(Layer):
    """Depthwise dilation (``_dilation``) or erosion over ``_spatial`` axes, one learnable element per
    channel."""

    _dilation = True
    _spatial = 2

    def __init__(
        self,
        channels: int,
        kernel_size: Any = 3,
        *,
        init: str = "zeros",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.channels = positive_int("channels", channels)
        self.kernel_size = ints("kernel_size", kernel_size, self._spatial, 1)
        shape = (self.channels, *self.kernel_size)
        if init == "zeros":
            structure = np.zeros(shape, dtype=dtype)
        elif init == "normal":
            structure = _init.normal(shape, _init.as_rng(rng, seed), dtype, std=0.1)
        else:
            raise ValueError(f"init must be 'zeros' or 'normal', got {init!r}")
        # An absent (pruned) entry is -inf for both: the erosion subtracts s, so -inf never wins its min.
        self.structure = self.parameter(structure, zero=-np.inf)

    def forward(self, x: Any) -> Any:
        require_image(self, x, self.channels, self._spatial)
        return self._filter(x)

    def _filter(self, x: Any) -> Any:
        # One depthwise call: the structure has one more axis than `axes`, so channel c (axis 1, the
        # last axis before the filtered ones) is filtered by structure[c]; "neutral" borders (-inf
        # for the dilation, +inf for the erosion) and SciPy's centre k // 2 are the defaults.
        op = tropic.dilation if self._dilation else tropic.erosion
        return op(x, self.structure, axes=tuple(range(-self._spatial, 0)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


class _Morphology2d(_Morphology):
    """The 2-D layers keep their depthwise-convolution form: same values as :meth:`_Morphology._filter`
    (max and + are exact), but among tied candidates of a dilation the convolution's winner is the
    lowest index of the *reflected* element, so their gradients under ties stay what they were."""

    _spatial = 2

    def _filter(self, x: Any) -> Any:
        F = self.F
        kh, kw = self.kernel_size
        # SciPy's centre of an even window is k // 2: rows before/after the output position.
        before = (kh // 2, kw // 2)
        after = (kh - 1 - kh // 2, kw - 1 - kw // 2)
        w = F.reshape(self.structure, (self.channels, 1, kh, kw))
        if self._dilation:
            # (f ⊕ s)(x) = max_y f(x - y) + s(y): a correlation with the reflected element.
            pad = ((0, 0), (0, 0), (after[0], before[0]), (after[1], before[1]))
            xpad = F.pad(x, pad, value=-np.inf)
            return tropic.maxplus_conv2d(xpad, F.flip(w, (2, 3)), groups=self.channels)
        # (f ⊖ s)(x) = min_y f(x + y) - s(y): a min-plus correlation with -s.
        pad = ((0, 0), (0, 0), (before[0], after[0]), (before[1], after[1]))
        xpad = F.pad(x, pad, value=np.inf)
        return tropic.minplus_conv2d(xpad, -w, groups=self.channels)


class Dilation2d(_Morphology2d):
    """Grey-level dilation of every channel of an image by its own learnable structuring element.

    .. math:: y_{b,c} = (x_{b,c} \\oplus s_c)(i, j) = \\max_{u,v} x_{b,c}(i - u, j - v) + s_c(u, v)

    with SciPy's conventions (centre ``k // 2``, output the size of the input, ``-inf`` outside the
    image): ``y[b, c] == tropic.dilation(x[b, c], s[c])``.

    Implemented as one depthwise max-plus convolution (``groups = channels``) of the
    ``-inf``-padded input with the reflected element: one kernel call for all channels (a loop of
    per-channel :func:`tropic.dilation` calls would cost one call and one tape node per channel),
    and the subgradient is the same winner rule.

    Parameters
    ----------
    channels : int
    kernel_size : int or (int, int)
    init : {"zeros", "normal"}
        Flat element (0 everywhere, default) or ``N(0, 0.1^2)``.
    rng, seed, dtype, device

    Attributes
    ----------
    structure : Parameter, shape (channels, kh, kw)
    """

    _dilation = True


class Erosion2d(_Morphology2d):
    """Grey-level erosion of every channel of an image by its own learnable structuring element.

    .. math:: y_{b,c} = (x_{b,c} \\ominus s_c)(i, j) = \\min_{u,v} x_{b,c}(i + u, j + v) - s_c(u, v)

    ``y[b, c] == tropic.erosion(x[b, c], s[c])`` (SciPy conventions, ``+inf`` outside the image);
    implemented as a depthwise min-plus correlation with ``-s``. Parameters as :class:`Dilation2d`.
    A pruned entry of ``s`` is ``-inf`` (absent: ``x - s = +inf`` never wins the min), as for the
    dilation.
    """

    _dilation = False


class Dilation1d(_Morphology):
    """Grey-level dilation of every channel of a signal by its own learnable structuring element.

    .. math:: y_{b,c,i} = (x_{b,c} \\oplus s_c)(i) = \\max_{0 \\le u < k}
              x_{b,c,\\, i + \\lfloor k/2 \\rfloor - u} + s_{c,u}

    on inputs ``(B, channels, L)``, with SciPy's conventions (centre ``k // 2``, output the size of the
    input, ``-inf`` outside the signal): ``y[b, c] == tropic.dilation(x[b, c], s[c], axes=-1)``.
    One depthwise :func:`tropic.dilation` call for all channels (``axes=(-1,)``, the structure
    ``(channels, k)``); the subgradient goes to the winner with the lowest index ``u``.

    Parameters
    ----------
    channels : int
    kernel_size : int or (int,)
    init : {"zeros", "normal"}
        Flat element (0 everywhere, default) or ``N(0, 0.1^2)``.
    rng, seed, dtype, device

    Attributes
    ----------
    structure : Parameter, shape (channels, k)
        A pruned entry is ``-inf`` (never wins).
    """

    _dilation = True
    _spatial = 1


class Erosion1d(_Morphology):
    """Grey-level erosion of every channel of a signal by its own learnable structuring element.

    .. math:: y_{b,c,i} = (x_{b,c} \\ominus s_c)(i) = \\min_{0 \\le u < k}
              x_{b,c,\\, i + u - \\lfloor k/2 \\rfloor} - s_{c,u}

    ``y[b, c] == tropic.erosion(x[b, c], s[c], axes=-1)`` (SciPy conventions, ``+inf`` outside the
    signal). Parameters as :class:`Dilation1d`; a pruned entry of ``s`` is ``-inf`` (absent:
    ``x - s = +inf`` never wins the min).
    """

    _dilation = False
    _spatial = 1


class Dilation3d(_Morphology):
    """Grey-level dilation of every channel of a volume by its own learnable structuring element.

    .. math:: y_{b,c,p} = (x_{b,c} \\oplus s_c)(p) = \\max_{u}
              x_{b,c,\\, p + \\lfloor k/2 \\rfloor - u} + s_c(u)

    with ``p = (d, h, w)`` and ``u = (u_1, u_2, u_3)`` in the ``(kd, kh, kw)`` element (per axis, as
    in :class:`Dilation1d`), on inputs ``(B, channels, D, H, W)``; SciPy's conventions:
    ``y[b, c] == tropic.dilation(x[b, c], s[c], axes=(0, 1, 2))``. One depthwise
    :func:`tropic.dilation` call (``axes=(-3, -2, -1)``, the structure ``(channels, kd, kh, kw)``);
    the subgradient goes to the winner with the lowest flat index into ``s[c]``.

    Parameters
    ----------
    channels : int
    kernel_size : int or (int, int, int)
    init : {"zeros", "normal"}
        Flat element (0 everywhere, default) or ``N(0, 0.1^2)``.
    rng, seed, dtype, device

    Attributes
    ----------
    structure : Parameter, shape (channels, kd, kh, kw)
    """

    _dilation = True
    _spatial = 3


class Erosion3d(_Morphology):
    """Grey-level erosion of every channel of a volume by its own learnable structuring element.

    .. math:: y_{b,c,p} = (x_{b,c} \\ominus s_c)(p) = \\min_{u}
              x_{b,c,\\, p + u - \\lfloor k/2 \\rfloor} - s_c(u)

    ``y[b, c] == tropic.erosion(x[b, c], s[c], axes=(0, 1, 2))`` (SciPy conventions, ``+inf``
    outside the volume). Parameters as :class:`Dilation3d`; a pruned entry of ``s`` is ``-inf``.
    """

    _dilation = False
    _spatial = 3


class MaxPool2d(Module):
    """Max pooling over ``kernel_size`` windows with ``stride`` (default ``kernel_size``), no padding;
    the gradient goes to the lowest-index winner of each window."""

    def __init__(self, kernel_size: Any, stride: Any = None) -> None:
        super().__init__()
        self.kernel_size = pair("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else pair("stride", stride, 1)

    def forward(self, x: Any) -> ad.Tensor:
        return ad.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
