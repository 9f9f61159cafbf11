"""Convolutional deep morphological networks (Fotopoulos & Maragos 2025): max-plus-min convolutions,
the depthwise "linear" activation, and the paper's MPM-LeNet-5 and MPM-ResNet-20 with their baselines.

Layers (each defined once for both engines, :mod:`tropic.nn.layer`): :class:`MPMConv2d` (a max-plus
and a min-plus convolution sharing one weight, the reference code's ResNet layer), :class:`SoftMPMConv2d`
(its log-sum-exp relaxation, the reference code's LeNet layer, computed without overflow),
:class:`ConvLinAct` (a per-channel 3x3 "linear" activation, or its SVD-constrained form) and
:class:`GlobalAvgPool2d`. :class:`ResidualBlock` (``post(block(x) + shortcut(x))``) is a plain
container. Architectures: :func:`mpm_lenet5`, :func:`lenet5`, :func:`mpm_resnet20`, :func:`resnet20`,
each a :class:`~tropic.nn.Sequential`; ``tropic.torch.nn.from_tropic`` converts them.

The facts follow the paper's reference code (``kostfoto/Morphological-Networks-as-Universal-
Approximators``): ``mainMNNs.ipynb`` (the LeNet models: soft ``MorphConv2d``, ``ConvLinAct`` with
``N(0, 1)`` or SVD entries) and ``resnet_20_experiments_3.ipynb`` with its CUDA kernel
``conv2d_cuda.cu`` (the ResNet models: hard ``MorphConv2d``, ``ConvLinAct`` initialised to the
identity); each class says where it departs from them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import tropic

from ..core.checks import ints, one_of, positive_int
from . import init as _init
from .activations import ReLU
from .conv import Conv2d, MaxPool2d, _conv_shape
from .dmnn import MPM, DiagonalActivation, SVDActivation
from .layer import Layer, require_image
from .linear import Flatten, Linear
from .module import Module, Sequential
from .normalization import BatchNorm2d

__all__ = [
    "ConvLinAct",
    "GlobalAvgPool2d",
    "MPMConv2d",
    "ResidualBlock",
    "SoftMPMConv2d",
    "lenet5",
    "mpm_lenet5",
    "mpm_resnet20",
    "resnet20",
]


def _std(value: Any) -> float:
    """``std`` as a float if it is a finite number >= 0, else a ``ValueError`` naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"std must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) >= 0.0):
        raise ValueError(f"std must be a finite number >= 0, got {value!r}")
    return float(value)


class MPMConv2d(Layer):
    """Max-plus-min convolution: a max-plus and a min-plus convolution that share one weight.

    .. math:: y^{\\vee}_{b,o,i,j} = \\max\\big(c_o,\\; \\max_{c,u,v}
              x_{b,c,\\, i s + u - p,\\, j s + v - p} + w_{o,c,u,v}\\big), \\qquad
              y^{\\wedge}_{b,o,i,j} = \\min\\big(c'_o,\\; \\min_{c,u,v}
              x_{b,c,\\, i s + u - p,\\, j s + v - p} + w_{o,c,u,v}\\big)

    .. math:: y = \\tfrac12 \\big(y^{\\vee} + y^{\\wedge}\\big) \\;\\; (\\texttt{combine="mean"}), \\qquad
              y = y^{\\vee} + y^{\\wedge} \\;\\; (\\texttt{combine="sum"})

    ``"mean"`` is the reference code's ResNet layer (``resnet_20_experiments_3.ipynb``,
    ``MorphConv2d``); ``"sum"`` is the convolutional form of tropic's dense :class:`~tropic.nn.MPM`.
    Computed with :func:`tropic.maxplus_conv2d` and :func:`tropic.minplus_conv2d` (correlation
    orientation, like ``conv2d``), so the gradient of each branch goes to its single winner: the
    lowest flat index ``(c, u, v)`` on ties, or the bias where it wins (ties with the bias go to the
    bias, as in :class:`~tropic.nn.MaxPlusConv2d`; the reference kernel lets the bias win only when
    strictly larger).

    Padding is the tropical zero of each branch (``-inf`` in the max, ``+inf`` in the min): positions
    outside the image are no candidates, as in the reference CUDA kernel (``conv2d_cuda.cu`` skips
    them). Without a bias (the reference's ResNet: ``bias=False``) the biases are the tropical zeros
    and are not stored (the reference keeps learnable biases at ``-1e9`` / ``+1e9`` that never win).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
    groups : int
        Grouped convolution (the reference has ``groups=1``).
    bias : bool
        Learn ``c`` (``bias_max``) and ``c'`` (``bias_min``), each ``N(0, 1)``.
    combine : {"mean", "sum"}
    std : float
        ``w ~ N(0, std^2)`` (the reference's ``alpha``, default 1).
    rng, seed, dtype, device
        As :class:`~tropic.nn.MaxPlusConv2d`; draws ``w``, then ``c``, then ``c'``.

    Attributes
    ----------
    weight : Parameter (out_channels, in_channels // groups, kh, kw)
        A pruned entry (``weight.mask`` False) is the tropical zero of both branches.
    bias_max, bias_min : Parameter (out_channels,) or None
    """

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
        combine: str = "mean",
        std: float = 1.0,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        shape = _conv_shape(in_channels, out_channels, kernel_size, groups)
        self.stride, self.padding, self.groups = (
            ints("stride", stride, 2, 1),
            ints("padding", padding, 2, 0),
            groups,
        )
        self.combine = one_of("combine", combine, ("mean", "sum"))
        self.std = _std(std)
        gen = _init.as_rng(rng, seed)
        self.weight = self.parameter(_init.normal(shape, gen, dtype, std=self.std))
        if bias:
            self.bias_max = self.parameter(_init.normal((out_channels,), gen, dtype), zero=-np.inf)
            self.bias_min = self.parameter(_init.normal((out_channels,), gen, dtype), zero=np.inf)
        else:
            self.bias_max = self.bias_min = None

    def forward(self, x: Any) -> Any:
        require_image(self, x, self.weight.shape[1] * self.groups)
        F, w = self.F, self.weight
        keep = self.keep_mask("weight")
        w_max, w_min = (w, w) if keep is None else (F.where(keep, w, -math.inf), F.where(keep, w, math.inf))
        geometry = {"stride": self.stride, "padding": self.padding, "groups": self.groups}
        dilation = tropic.maxplus_conv2d(x, w_max, **geometry)
        erosion = tropic.minplus_conv2d(x, w_min, **geometry)
        if self.bias_max is not None:
            shape = (1, self.bias_max.shape[0], 1, 1)
            dilation = tropic.maximum(F.reshape(self.bias_max, shape), dilation)
            erosion = tropic.minimum(F.reshape(self.bias_min, shape), erosion)
        y = dilation + erosion
        return y * 0.5 if self.combine == "mean" else y  # * 0.5 is exactly / 2

    def extra_repr(self) -> str:
        o, c, kh, kw = self.weight.shape
        return (
            f"{c * self.groups}, {o}, kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}, "
            f"groups={self.groups}, bias={self.bias_max is not None}, combine={self.combine!r}"
        )


class SoftMPMConv2d(Layer):
    """Log-sum-exp ("soft") max-plus-min convolution, the reference code's LeNet layer.

    .. math:: y^{\\vee}_{b,o,i,j} = \\log\\Big(e^{c_o} + \\sum_{c,u,v}
              e^{x_{b,c,\\, i s + u - p,\\, j s + v - p} + w_{o,c,u,v}}\\Big), \\qquad
              y^{\\wedge}_{b,o,i,j} = -\\log\\Big(e^{-c'_o} + \\sum_{c,u,v}
              e^{-x_{b,c,\\, i s + u - p,\\, j s + v - p} - w_{o,c,u,v}}\\Big)

    and ``y = y^∨`` (``method="max"``), ``y^∧`` (``"min"``) or ``y^∨ + y^∧`` (``"sum"``, the
    reference's ``"max-plus-min"``). The reference (``mainMNNs.ipynb``, ``MorphConv2d``) computes
    ``log(conv2d(exp(x), exp(w)) + exp(c))``, temperature 1, with zero padding of ``exp(x)``: a padded
    position adds ``e^{-inf} = 0``, so padding is the tropical zero here too (no candidate).

    Computed stably: with ``m_{b,i,j} = max`` of ``x`` over the window (all channels) and
    ``n_o = max_{c,u,v} w_{o,c,u,v}``,

    .. math:: \\log \\sum e^{x + w} = m + n + \\log \\sum e^{x - m} \\, e^{w - n}

    where every exponent is <= 0 (no overflow, whatever the magnitude of ``x``) and the sum is at
    least ``exp(-(max w_o - min w_o))`` (no underflow unless a filter's own range exceeds about 87 in
    float32); the bias enters through a stable ``logaddexp``. The sum is a 1x1 linear convolution of
    the unfolded window (the unfolding by :func:`tropic.maxplus_conv2d` with a tropical one-hot
    kernel, ``-inf`` padding): memory ``O(B C kh kw H' W')``, the im2col cost of a linear convolution.
    The values equal the reference formula evaluated in float64 wherever that is finite, up to
    rounding; the reference's float32 ``exp`` overflows for inputs above about 88 (``inf``/``nan``
    outputs), this does not. The shifts ``m``, ``n`` are constants of the gradient (the formula does
    not depend on them), so the gradient is the exact softmax weighting of the candidates.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
        ``padding < kernel_size`` on each axis, so that every window holds a pixel.
    bias : bool
        Learn ``c`` (``bias_max``, for ``"max"`` and ``"sum"``) and ``c'`` (``bias_min``, for
        ``"min"`` and ``"sum"``), each ``N(0, 1)`` (the reference's default ``bias=True``).
    method : {"sum", "max", "min"}
    std : float
        ``w ~ N(0, std^2)`` (the reference's ``alpha``; its MPM-LeNet-5 uses 0.001 in the first layer).
    rng, seed, dtype, device
        Draws ``w``, then ``c``, then ``c'``.

    Attributes
    ----------
    weight : Parameter (out_channels, in_channels, kh, kw)
    bias_max, bias_min : Parameter (out_channels,) or None
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        bias: bool = True,
        *,
        method: str = "sum",
        std: float = 1.0,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        shape = _conv_shape(in_channels, out_channels, kernel_size, 1)
        self.stride, self.padding = ints("stride", stride, 2, 1), ints("padding", padding, 2, 0)
        if any(p >= k for p, k in zip(self.padding, shape[2:], strict=True)):
            raise ValueError(f"padding must be < kernel_size {shape[2:]} on each axis, got {padding!r}")
        self.method = one_of("method", method, ("sum", "max", "min"))
        self.std = _std(std)
        gen = _init.as_rng(rng, seed)
        self.weight = self.parameter(_init.normal(shape, gen, dtype, std=self.std))
        self.bias_max = self.bias_min = None
        if bias and method != "min":
            self.bias_max = self.parameter(_init.normal((out_channels,), gen, dtype), zero=-np.inf)
        if bias and method != "max":
            self.bias_min = self.parameter(_init.normal((out_channels,), gen, dtype), zero=np.inf)
        # Unfolding kernel, (C kh kw, 1, kh, kw) with groups=C: output channel (c, u, v) picks x[c] at
        # offset (u, v) (0 there, -inf elsewhere: the max-plus one-hot), -inf outside the image.
        _, c, kh, kw = shape
        one_hot = np.full((kh * kw, 1, kh, kw), -np.inf)
        one_hot.reshape(kh * kw, kh * kw)[np.arange(kh * kw), np.arange(kh * kw)] = 0.0
        self._unfolding = np.tile(one_hot, (c, 1, 1, 1))

    def forward(self, x: Any) -> Any:
        require_image(self, x, self.weight.shape[1])
        x = self.F.reshape(x, tuple(x.shape))  # the engine's tensor (tropic.autodiff wraps an array)
        y = None
        if self.method != "min":
            y = self._soft_dilation(x, self.weight, self.bias_max)
        if self.method != "max":
            erosion = -self._soft_dilation(
                -x, -self.weight, None if self.bias_min is None else -self.bias_min
            )
            y = erosion if y is None else y + erosion
        return y

    def _soft_dilation(self, x: Any, w: Any, b: Any) -> Any:
        """``log(e^b + sum_{c,u,v} e^{x_window + w})`` per output, shifted by maxima (see the class)."""
        F = self.F
        out_channels, c, kh, kw = w.shape
        k = c * kh * kw
        geometry = {"stride": self.stride, "padding": self.padding}
        like = self.weight
        with F.no_grad():
            shift_x = tropic.maxplus_conv2d(x, self.constant(np.zeros((1, c, kh, kw)), like), **geometry)
            flat_w = F.reshape(w, (out_channels, k))
            shift_w = tropic.maxplus_matmul(flat_w, self.constant(np.zeros((k, 1)), like))  # (O, 1)
        windows = tropic.maxplus_conv2d(x, self.constant(self._unfolding, like), groups=c, **geometry)
        scaled_w = (w - F.reshape(shift_w, (out_channels, 1, 1, 1))).exp()
        total = F.conv2d((windows - shift_x).exp(), F.reshape(scaled_w, (out_channels, k, 1, 1)))
        y = total.log() + shift_x + F.reshape(shift_w, (1, out_channels, 1, 1))
        if b is None:
            return y
        b = F.reshape(b, (1, out_channels, 1, 1))
        with F.no_grad():
            top = tropic.maximum(y, b)
        return top + ((y - top).exp() + (b - top).exp()).log()

    def extra_repr(self) -> str:
        o, c, kh, kw = self.weight.shape
        bias = self.bias_max is not None or self.bias_min is not None
        return (
            f"{c}, {o}, kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}, bias={bias}, "
            f"method={self.method!r}"
        )


class ConvLinAct(Layer):
    """Per-channel "linear" activation of a convolutional MPM network: a 3x3 convolution, padding 1.

    ``method="simple"``: a depthwise convolution, one 3x3 kernel ``a_c`` per channel (9 parameters per
    channel; the reference builds it as a diagonal ``C x C x 3 x 3`` kernel, the same map).

    .. math:: y_{b,c,i,j} = \\sum_{u,v} a_{c,u,v} \\, x_{b,c,\\, i + u - 1,\\, j + v - 1}

    ``init="identity"`` (``a_{c,1,1} = 1``, the rest 0: ``resnet_20_experiments_3.ipynb``) or
    ``"normal"`` (``a ~ N(0, 1)``: ``mainMNNs.ipynb``).

    ``method="svd"``: a full ``C x C x 3 x 3`` convolution whose kernel at each offset ``(u, v)`` is
    ``U_{uv} diag(a_{:,u,v}) V_{uv}^T``, with ``U_{uv}``, ``V_{uv}`` the frozen singular vectors of
    the ``(u, v)`` slice of a default-initialised kernel ``K_0`` and ``a`` (its singular values at the
    start) learnable, so the layer starts as ``K_0`` (both reference notebooks' ``"svd"``):

    .. math:: y_{b,o,i,j} = \\sum_{c,u,v} \\big(U_{uv} \\mathrm{diag}(a_{:,u,v}) V_{uv}^T\\big)_{oc}
              \\, x_{b,c,\\, i + u - 1,\\, j + v - 1}

    ``K_0`` is drawn ``U(±1/sqrt(9 C))`` (``init="fan_in_uniform"``, torch's ``nn.Conv2d`` default, as
    in the reference) or with any :class:`~tropic.nn.Linear` ``init``; the SVD is taken in float64
    (the reference: float32).

    Parameters
    ----------
    channels : int
    method : {"simple", "svd"}
    init : str, optional
        ``"identity"`` (default) or ``"normal"`` for ``"simple"``; ``"fan_in_uniform"`` (default) or a
        linear initialiser for ``"svd"``.
    rng, seed, dtype, device

    Attributes
    ----------
    weight : Parameter (channels, 3, 3)
        ``a`` (the reference stores it as ``(3, 3, channels)``).
    u, v : buffers (3, 3, channels, channels), ``"svd"`` only
        ``U_{uv}`` and ``V_{uv}`` (not transposed), never trained.
    """

    def __init__(
        self,
        channels: int,
        *,
        method: str = "simple",
        init: str | None = None,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.channels = c = positive_int("channels", channels)
        self.method = one_of("method", method, ("simple", "svd"))
        gen = _init.as_rng(rng, seed)
        if method == "simple":
            self.init = one_of("init", "identity" if init is None else init, ("identity", "normal"))
            if self.init == "identity":
                a = np.zeros((c, 3, 3), dtype=dtype)
                a[:, 1, 1] = 1.0
            else:
                a = _init.normal((c, 3, 3), gen, dtype)
            self.weight = self.parameter(a)
            return
        self.init = "fan_in_uniform" if init is None else init
        shape = (c, c, 3, 3)
        if self.init == "fan_in_uniform":
            k0 = _init.fan_in_uniform(shape, gen, np.float64)
        else:
            from .linear import _LINEAR_INITS, linear_init

            if self.init not in _LINEAR_INITS:
                allowed = ", ".join(map(repr, sorted([*_LINEAR_INITS, "fan_in_uniform"])))
                raise ValueError(f"init must be one of {allowed} for method='svd', got {init!r}")
            k0 = linear_init(self.init, shape, gen, np.float64)
        u, s, vh = np.linalg.svd(k0.transpose(2, 3, 0, 1))  # per offset (u, v): (C, C) slices
        self.buffer("u", u.astype(dtype))
        self.buffer("v", np.ascontiguousarray(np.swapaxes(vh, -1, -2)).astype(dtype))
        self.weight = self.parameter(np.ascontiguousarray(s.transpose(2, 0, 1)).astype(dtype))

    def kernel(self) -> Any:
        """The convolution kernel: ``(C, 1, 3, 3)`` (``"simple"``, depthwise) or ``(C, C, 3, 3)``."""
        F, c = self.F, self.channels
        if self.method == "simple":
            return F.reshape(self.weight, (c, 1, 3, 3))
        a = F.reshape(F.permute_dims(self.weight, (1, 2, 0)), (3, 3, 1, c))
        per_offset = F.matmul(a * self.u, F.permute_dims(self.v, (0, 1, 3, 2)))  # U diag(a) V^T
        return F.permute_dims(per_offset, (2, 3, 0, 1))

    def forward(self, x: Any) -> Any:
        require_image(self, x, self.channels)
        groups = self.channels if self.method == "simple" else 1
        return self.F.conv2d(x, self.kernel(), padding=1, groups=groups)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, method={self.method!r}, init={self.init!r}"


class GlobalAvgPool2d(Layer):
    """Mean over the image: ``(B, C, H, W) -> (B, C)`` (no parameters).

    .. math:: y_{b,c} = \\frac{1}{H W} \\sum_{i,j} x_{b,c,i,j}

    The reference ResNets' ``avg_pool2d(out, out.shape[2])`` followed by a flatten (for square maps).

    Parameters
    ----------
    rng, seed, dtype, device : optional
        Ignored (nothing is drawn or stored); accepted for the common layer signature.
    """

    def __init__(
        self, *, rng: Any = None, seed: int | None = None, dtype: Any = None, device: Any = None
    ) -> None:
        self._setup(dtype, device)

    def forward(self, x: Any) -> Any:
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4:
            raise ValueError(f"{type(self).__name__}: x must have shape (B, C, H, W), got {shape}")
        return self.F.sum(x, axis=(2, 3)) / float(shape[2] * shape[3])


class ResidualBlock(Module):
    """``y = post(block(x) + shortcut(x))``: a residual block with an optional projection shortcut
    (identity if None) and an optional module after the sum (none if None).

    Parameters
    ----------
    block : Module
    shortcut : Module, optional
    post : Module, optional

    Notes
    -----
    ``tropic.torch.nn.from_tropic`` converts it to ``tropic.torch.nn.convert.ResidualBlock``.
    """

    def __init__(self, block: Module, shortcut: Module | None = None, post: Module | None = None) -> None:
        super().__init__()
        for name, module in (("block", block), ("shortcut", shortcut), ("post", post)):
            if module is not None and not isinstance(module, Module):
                raise TypeError(f"{name} must be a Module, got {type(module).__name__}")
        self.block, self.shortcut, self.post = block, shortcut, post

    def forward(self, x: Any) -> Any:
        y = self.block(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if tuple(y.shape) != tuple(skip.shape):
            raise ValueError(f"block gives shape {tuple(y.shape)}, the shortcut {tuple(skip.shape)}")
        y = y + skip
        return y if self.post is None else self.post(y)


# -- architectures ---------------------------------------------------------------------------------


def _torch_default(layer: Module, gen: np.random.Generator) -> Module:
    """Redraw a ``Conv2d`` / ``Linear``'s weight and bias as torch's defaults: ``U(±1/sqrt(fan_in))``."""
    shape = layer.weight.shape
    dtype = layer.weight.data.dtype
    layer.weight.data = _init.fan_in_uniform(shape, gen, dtype)
    if layer.bias is not None:
        fan_in, _ = _init.fans(shape)
        layer.bias.data = _init.fan_in_uniform(layer.bias.shape, gen, dtype, fan_in=fan_in)
    return layer


def _conv(gen: np.random.Generator, dtype: Any, *args: Any, **kwargs: Any) -> Conv2d:
    return _torch_default(Conv2d(*args, **kwargs, rng=gen, dtype=dtype), gen)


def _linear(gen: np.random.Generator, dtype: Any, *args: Any, **kwargs: Any) -> Linear:
    return _torch_default(Linear(*args, **kwargs, rng=gen, dtype=dtype), gen)


def mpm_lenet5(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    linact: str = "simple",
    conv: str = "soft",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """MPM-LeNet-5 (``mainMNNs.ipynb``: ``MPM_LeNet5``, ``linact="svd"``: ``MPM_SVD_LeNet5``), for
    ``(B, in_channels, 28, 28)`` inputs::

        SoftMPMConv2d(in, 6, 5, padding=1, std=0.001) -> ConvLinAct(6) -> MaxPool2d(2)
        -> SoftMPMConv2d(6, 16, 5, padding=1) -> ConvLinAct(16) -> MaxPool2d(2)
        -> SoftMPMConv2d(16, 120, 5, padding=1) -> ConvLinAct(120) -> MaxPool2d(2) -> Flatten
        -> MPM(120, 84) -> activation(84) -> MPM(84, num_classes)

    The convolutions are ``method="sum"`` with biases (``N(0, 1)``), weights ``N(0, 1)`` except the
    first (``N(0, 0.001^2)``); the dense :class:`~tropic.nn.MPM` layers ``W, b, b' ~ N(0, 1)``.

    Parameters
    ----------
    in_channels, num_classes : int
    linact : {"simple", "svd"}
        ``"simple"``: :class:`ConvLinAct` ``init="normal"`` and
        :class:`~tropic.nn.DiagonalActivation` (``preset="reference"``, ``N(0, 1)/3.46``);
        ``"svd"``: :class:`ConvLinAct` ``method="svd"`` and :class:`~tropic.nn.SVDActivation`
        (``preset="reference"``).
    conv : {"soft", "hard"}
        :class:`SoftMPMConv2d` (the reference) or :class:`MPMConv2d` (``combine="sum"``, biases).
    rng, seed, dtype
        One generator initialises the layers in order.
    """
    in_channels, num_classes = (
        positive_int("in_channels", in_channels),
        positive_int("num_classes", num_classes),
    )
    linact = one_of("linact", linact, ("simple", "svd"))
    conv = one_of("conv", conv, ("soft", "hard"))
    gen = _init.as_rng(rng, seed)

    def morph(n_in: int, n_out: int, std: float = 1.0) -> Layer:
        if conv == "soft":
            return SoftMPMConv2d(
                n_in, n_out, 5, padding=1, bias=True, method="sum", std=std, rng=gen, dtype=dtype
            )
        return MPMConv2d(n_in, n_out, 5, padding=1, bias=True, combine="sum", std=std, rng=gen, dtype=dtype)

    def act(n: int) -> Layer:
        if linact == "simple":
            return ConvLinAct(n, init="normal", rng=gen, dtype=dtype)
        return ConvLinAct(n, method="svd", rng=gen, dtype=dtype)

    layers: list[Module] = []
    for n_in, n_out, std in ((in_channels, 6, 0.001), (6, 16, 1.0), (16, 120, 1.0)):
        layers += [morph(n_in, n_out, std), act(n_out), MaxPool2d(2)]
    dense_act = DiagonalActivation if linact == "simple" else SVDActivation
    layers += [
        Flatten(),
        MPM(120, 84, rng=gen, dtype=dtype),
        dense_act(84, preset="reference", rng=gen, dtype=dtype),
        MPM(84, num_classes, rng=gen, dtype=dtype),
    ]
    return Sequential(*layers)


def lenet5(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """LeNet-5 baseline (``mainMNNs.ipynb``: ``LeNet5``), for ``(B, in_channels, 28, 28)`` inputs::

        Conv2d(in, 6, 5, padding=1) -> ReLU -> MaxPool2d(2) -> Conv2d(6, 16, 5, padding=1) -> ReLU
        -> MaxPool2d(2) -> Conv2d(16, 120, 5, padding=1) -> ReLU -> MaxPool2d(2) -> Flatten
        -> Linear(120, 84) -> ReLU -> Linear(84, num_classes, bias=False)

    Weights and biases drawn as torch's defaults, ``U(±1/sqrt(fan_in))`` (from NumPy).
    """
    in_channels, num_classes = (
        positive_int("in_channels", in_channels),
        positive_int("num_classes", num_classes),
    )
    gen = _init.as_rng(rng, seed)
    layers: list[Module] = []
    for n_in, n_out in ((in_channels, 6), (6, 16), (16, 120)):
        layers += [_conv(gen, dtype, n_in, n_out, 5, padding=1), ReLU(), MaxPool2d(2)]
    layers += [
        Flatten(),
        _linear(gen, dtype, 120, 84),
        ReLU(),
        _linear(gen, dtype, 84, num_classes, bias=False),
    ]
    return Sequential(*layers)


def _blocks(blocks: Any) -> tuple[int, int, int]:
    try:
        values = tuple(blocks)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in values
    ):
        raise ValueError(f"blocks must be three positive ints (blocks per stage), got {blocks!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _resnet(stem: list[Module], block: Any, blocks: tuple[int, int, int], head: Linear) -> Sequential:
    layers = list(stem)
    planes_in = 16
    for stage, planes in enumerate((16, 32, 64)):
        for _ in range(blocks[stage]):
            layers.append(block(planes_in, planes))
            planes_in = planes
        if stage < 2:
            layers.append(MaxPool2d(2, 2))
    return Sequential(*layers, GlobalAvgPool2d(), head)


def mpm_resnet20(
    in_channels: int = 3,
    num_classes: int = 10,
    *,
    blocks: Any = (3, 3, 3),
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """MPM-ResNet-20 (``resnet_20_experiments_3.ipynb``: ``MPM_ResNet20``; BatchNorm and ReLU removed)::

        MPMConv2d(in, 16, 3, padding=1) -> ConvLinAct(16)
        -> blocks[0] x block(16) -> MaxPool2d(2) -> blocks[1] x block(32) -> MaxPool2d(2)
        -> blocks[2] x block(64) -> GlobalAvgPool2d -> Linear(64, num_classes)

    with ``block(planes)`` a :class:`ResidualBlock` (``MPM_BasicBlock``)::

        y = ConvLinAct(MPMConv2d(ConvLinAct(MPMConv2d(x, 3x3)), 3x3) + shortcut(x))

    the shortcut the identity, or a 1x1 :class:`MPMConv2d` where the width changes. Every
    :class:`MPMConv2d` is ``combine="mean"``, no bias, ``w ~ N(0, 1)``; every :class:`ConvLinAct` starts
    as the identity; the linear head is drawn as torch's default.

    Parameters
    ----------
    in_channels, num_classes : int
    blocks : three positive ints
        Residual blocks per stage (ResNet-20: 3, 3, 3).
    rng, seed, dtype
    """
    in_channels, num_classes = (
        positive_int("in_channels", in_channels),
        positive_int("num_classes", num_classes),
    )
    blocks = _blocks(blocks)
    gen = _init.as_rng(rng, seed)

    def mpm(n_in: int, n_out: int, k: int) -> MPMConv2d:
        return MPMConv2d(n_in, n_out, k, padding=k // 2, combine="mean", rng=gen, dtype=dtype)

    def block(n_in: int, n_out: int) -> ResidualBlock:
        main = Sequential(mpm(n_in, n_out, 3), ConvLinAct(n_out, dtype=dtype), mpm(n_out, n_out, 3))
        shortcut = None if n_in == n_out else mpm(n_in, n_out, 1)
        return ResidualBlock(main, shortcut, ConvLinAct(n_out, dtype=dtype))

    stem = [mpm(in_channels, 16, 3), ConvLinAct(16, dtype=dtype)]
    return _resnet(stem, block, blocks, _linear(gen, dtype, 64, num_classes))


def resnet20(
    in_channels: int = 3,
    num_classes: int = 10,
    *,
    blocks: Any = (3, 3, 3),
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """ResNet-20 baseline as in the reference code (``resnet_20_experiments_3.ipynb``: ``ResNet20``;
    max pooling between the stages, no strided convolutions)::

        Conv2d(in, 16, 3, padding=1, bias=False) -> BatchNorm2d -> ReLU
        -> blocks[0] x block(16) -> MaxPool2d(2) -> blocks[1] x block(32) -> MaxPool2d(2)
        -> blocks[2] x block(64) -> GlobalAvgPool2d -> Linear(64, num_classes)

    with ``block(planes)`` a :class:`ResidualBlock` (``BasicBlock``)::

        y = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x))

    the shortcut the identity, or a 1x1 convolution without bias (and without BatchNorm) where the
    width changes. Convolutions have no bias; weights (and the head's bias) drawn as torch's defaults.
    """
    in_channels, num_classes = (
        positive_int("in_channels", in_channels),
        positive_int("num_classes", num_classes),
    )
    blocks = _blocks(blocks)
    gen = _init.as_rng(rng, seed)

    def conv(n_in: int, n_out: int, k: int) -> Conv2d:
        return _conv(gen, dtype, n_in, n_out, k, padding=k // 2, bias=False)

    def block(n_in: int, n_out: int) -> ResidualBlock:
        main = Sequential(
            conv(n_in, n_out, 3), BatchNorm2d(n_out, dtype=dtype), ReLU(),
            conv(n_out, n_out, 3), BatchNorm2d(n_out, dtype=dtype),
        )  # fmt: skip
        shortcut = None if n_in == n_out else conv(n_in, n_out, 1)
        return ResidualBlock(main, shortcut, ReLU())

    stem = [conv(in_channels, 16, 3), BatchNorm2d(16, dtype=dtype), ReLU()]
    return _resnet(stem, block, blocks, _linear(gen, dtype, 64, num_classes))
