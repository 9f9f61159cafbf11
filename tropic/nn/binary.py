"""Binarised morphological layers: ``BiSE``, ``LUI``, ``BiSEL``, ``DenseLUI`` and their regularisers.

After Aouad & Talbot, "A foundation for exact binarized morphological neural networks" (2024). A BiSE
(binary structuring element) neuron is a smooth threshold of a non-negative convolution,

.. math:: \\mathrm{BiSE}(x) = \\xi\\big(p\\,(x \\star W - B)\\big),\\qquad
          \\xi(u) = \\tfrac12 \\tanh(u) + \\tfrac12,\\qquad W = \\mathrm{softplus}(\\theta),\\;
          B = \\mathrm{softplus}(\\beta),

trained in float like any layer. On binary inputs it is *exactly* a dilation or an erosion by a
structuring element ``S`` when its weights pass the activation tests of :mod:`tropic.nn.binarize`;
``module.binary(True)`` then switches every BiSE-type layer of a model to the binary morphology
(``x ⋆ 1_S >= 1`` for a dilation, ``>= |S|`` for an erosion, outputs 0/1), using the closest
structuring element (``binarization`` method) for neurons that are not activated.

Border: the convolution pads the image by ``k // 2`` replicated border pixels (``mode="edge"``), as
the reference code. The binary forward pads the same way, so it is the SciPy binary morphology of the
edge-padded image, cropped back. Orientation: ``⋆`` is a cross-correlation, so the binary dilation by
``S`` is ``scipy.ndimage.binary_dilation(x, S[::-1, ::-1])`` and the erosion is
``scipy.ndimage.binary_erosion(x, S)`` (the same thing for symmetric ``S``).

A negative scale ``p`` flips the smooth output around 1/2; the binary forward then returns the
complement of the morphology, so that binary and float outputs agree on which side of 1/2 they are.

Presets. Every layer takes ``preset="tropic"`` (the default) or ``preset="reference"``, the settings of
the paper's code (``TheodoreAouad/WANT2023``, commit 04088a9, and its experiment configurations);
tropic's / the reference's:

- initial weights (``init``): ``"dense"``, ``|1 + 0.3 N(0, 1)| / sqrt(n)`` / ``"uniform"``,
  ``U(2a/n - h, 2a/n + h]`` with ``a = atanh(0.9)`` and ``h`` about ``1.97/n`` (a LUI: ``"constant"``,
  every weight ``2a/n``); ``n`` weights per neuron;
- initial bias: ``input_mean * sum(W)`` / ``input_mean * sum(W) * (1 + u)``, ``u ~ U(-0.01, 0.01)``
  drawn once per layer;
- initial scale ``p`` (``scale_init``): 1 / 0;
- ``bias_mode``: ``"softplus"`` (``"projected"`` with ``bias_clamp=True``) / ``"reparametrized"``;
- a LUI with ``in = out = groups`` (the LUI of ``BiSEL(1, C)``): learned / the identity;
- a real-valued ``DenseLUI`` (``output``): ``p (x W^T - B)`` (logits) / ``xi(p (x W^T - B))``.

Each piece is also an argument of its own (``init``, ``scale_init``, ``bias_mode``, ``input_mean``,
``LUI(identity=)``, ``BiSEL(identity_lui=)``, ``DenseLUI(output=)``), which overrides the preset. The
regularisers take ``preset`` too (the reference halves the activable-set distance and also regularises
the real-valued head). tropic's defaults are kept, for compatibility and because they measured no
worse: in ``tropic reproduce bimonn`` (3 seeds, docs/reproductions.md) both presets recover every
7 x 7 dilation / erosion element exactly in 1200 steps (18 of 18 runs), the reference's neurons
then pass the exact activation test more often (9 of 18 runs, tropic's 0), and tropic's two chained
BiSEs learn 4 of 6 openings / closings within the paper's 0.072 where the reference's learn 1.
``preset="reference"`` gives the paper code's.

The layers are defined once for both engines (:mod:`tropic.nn.layer`); ``tropic.torch.nn`` has the same
classes as ``torch.nn.Module`` s. The binarisation (activation tests, projections) is NumPy code on
the weights' values (:mod:`tropic.nn.binarize`): the binary forward and the regularisers run eagerly
(under ``torch.compile`` the binary forward raises a ``RuntimeError`` saying so).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

import tropic

from ..core.checks import one_of, positive_int
from . import binarize as _bz
from . import init as _init
from .conv import _conv_shape
from .layer import Layer, require_features, require_image

__all__ = [
    "BIAS_MODES",
    "DENSE_OUTPUTS",
    "INITS",
    "LUI",
    "PRESETS",
    "BiSE",
    "BiSEL",
    "BinarizedNeurons",
    "DenseLUI",
    "activable_set_regularization",
    "constant_set_regularization",
]

#: ``preset=`` values: tropic's own settings, or those of the paper's code (module docstring).
PRESETS = ("tropic", "reference")
#: ``bias_mode=`` values: ``B = softplus(beta)``, clamped with constant bounds, or clamped with the
#: gradient through the bounds (the reference code's default, ``POSITIVE_INTERVAL_REPARAMETRIZED``).
BIAS_MODES = ("softplus", "projected", "reparametrized")
#: ``init=`` values: tropic's two, and the reference code's two (uniform and constant weights).
INITS = ("dense", "sparse", "uniform", "constant")
#: ``DenseLUI(output=)`` values for a real-valued head: ``p (x W^T - B)`` or ``xi`` of it.
DENSE_OUTPUTS = ("preactivation", "xi")

# The reference initialisation (WANT2023 deep_morpho/initializer/bise_initializer.py): the weights are
# drawn so that xi(p0 (x * W - B)) reaches _REFERENCE_MAX_OUTPUT, and the bias is perturbed by a
# relative U(-_REFERENCE_BIAS_NOISE, _REFERENCE_BIAS_NOISE).
_REFERENCE_MAX_OUTPUT = 0.95
_REFERENCE_BIAS_NOISE = 1e-2


def _reference_weight_range(n: int) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the reference's initial weights for ``n`` weights per neuron.

    ``InitBiseConstantVarianceWeights`` with ``p_for_init="auto"``: ``a = atanh(2 * 0.95 - 1)``,
    ``p0 = (sqrt(3) + 2) sqrt(n) / (8 a)``, ``mean = (sqrt(3) + 2) / (4 p0 sqrt(n))`` (``= 2a/n``),
    ``var = 1 / (p0^2 n) - mean^2``, ``[low, high] = mean -+ sqrt(3 var)`` (about ``[0.98, 4.91] / n``).
    """
    a = float(np.arctanh((_REFERENCE_MAX_OUTPUT - 0.5) * 2))
    p0 = (np.sqrt(3) + 2) * np.sqrt(n) / (4 * 2 * a)
    mean = (np.sqrt(3) + 2) / (4 * p0 * np.sqrt(n))
    half = np.sqrt(3 * (1 / (p0**2 * n) - mean**2))
    return float(mean), float(mean - half), float(mean + half)


class BinarizedNeurons(NamedTuple):
    """The binary reading of a bank of BiSE-type neurons.

    Attributes
    ----------
    is_erosion : numpy.ndarray of bool, shape (out,)
    structuring_elements : numpy.ndarray of bool, shape (out, *neuron_shape)
        ``S`` of each neuron (``(C_in / groups, kh, kw)`` for a BiSE, ``(in_features,)`` for a DenseLUI).
    activated : numpy.ndarray of bool, shape (out,)
        Whether the reading is exact (the neuron passed an activation test) or an approximation.
    """

    is_erosion: np.ndarray
    structuring_elements: np.ndarray
    activated: np.ndarray

    @property
    def operations(self) -> list[str]:
        """``"dilation"`` or ``"erosion"`` per neuron."""
        return [_bz.EROSION if e else _bz.DILATION for e in self.is_erosion]


def _inverse_softplus(y: np.ndarray) -> np.ndarray:
    """``log(exp(y) - 1)``, stable for large ``y`` (float64)."""
    y = np.asarray(y, dtype=np.float64)
    return y + np.log(-np.expm1(-y))


def _host_softplus(x: np.ndarray) -> np.ndarray:
    """``max(x, 0) + log1p(e^{-|x|})`` in ``x``'s dtype, as :func:`tropic.autodiff.softplus` computes it."""
    return np.maximum(x, x.dtype.type(0)) + np.log1p(np.exp(-np.abs(x)))


def _clamp_bounds(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``bias_clamp``'s bounds ``[(w_(1) + w_(2))/2, sum(W) - w_(1)/2]`` per neuron of the float64
    weights ``w`` (out, n), ``w_(1) <= w_(2)`` the two smallest."""
    w = np.sort(w, axis=1)
    low = (w[:, 0] + w[:, 1]) / 2 if w.shape[1] > 1 else np.zeros(w.shape[0])
    return low, w.sum(axis=1) - w[:, 0] / 2


def _xi(F: Any, u: Any) -> Any:
    """``tanh(u) / 2 + 1 / 2`` (equal to ``sigmoid(2u)``)."""
    return F.tanh(u) * 0.5 + 0.5


class _BinaryReading:
    """The binary reading of a bank of BiSE-type neurons, shared by these layers and their torch
    mirrors: ``W = softplus(theta)`` and ``B = softplus(beta)`` (clamped where ``bias_clamp``) as
    float64 NumPy, one row per neuron, from the parameters' values through one NumPy formula.

    One formula, not each engine's own softplus: the engines' ``exp``/``log1p`` may differ by an ulp
    (torch's vectorised ones against the C library's), which can flip an exact tie of the activation
    test and so the binarised operation. Computed in the parameters' dtype, then widened; the
    forward's :attr:`weight` / :attr:`bias` hold the same values (the torch mirror's through
    ``with_host_values``: eagerly on the CPU; under ``torch.compile``, ``torch.func`` transforms and
    on CUDA torch's own rounding, which may differ by an ulp).

    Under ``bias_mode="reparametrized"`` the bias is the same clamp as under ``"projected"`` (only its
    gradient differs), so the reading uses the effective, clamped bias in both. An identity LUI
    (``identity``) reads as what it computes: the dilation by ``S = {its one input}``, activated.
    """

    out_channels: int
    binarization: str
    bias_mode: str
    identity: bool
    _neuron_shape: tuple[int, ...]

    def _host_parameter(self, name: str) -> np.ndarray:  # pragma: no cover - abstract
        """The value of parameter ``name`` as a NumPy array of its dtype (no gradient)."""
        raise NotImplementedError

    def _neuron_weights(self) -> np.ndarray:
        """``W`` of every neuron as float64 NumPy, shape (out, n)."""
        weights = _host_softplus(self._host_parameter("theta"))
        return weights.astype(np.float64).reshape(self.out_channels, -1)

    def _neuron_biases(self) -> np.ndarray:
        """``B`` of every neuron as float64 NumPy: the effective bias, clamped as :attr:`bias` under the
        clamping ``bias_mode`` s (0 for an identity LUI, as the reference's)."""
        b = _host_softplus(self._host_parameter("beta"))
        if self.identity:
            return np.zeros(self.out_channels)
        if self.bias_mode != "softplus":
            low, high = _clamp_bounds(self._neuron_weights())
            b = np.minimum(np.maximum(b, low.astype(b.dtype)), high.astype(b.dtype))
        return b.astype(np.float64)

    def _index(self, neuron: int | None) -> int:
        if neuron is None:
            if self.out_channels != 1:
                raise ValueError(f"this layer has {self.out_channels} neurons: give neuron=")
            return 0
        if not isinstance(neuron, (int, np.integer)) or not 0 <= neuron < self.out_channels:
            raise ValueError(f"neuron must be an int in [0, {self.out_channels}), got {neuron!r}")
        return int(neuron)

    def find_operation(self, neuron: int | None = None) -> str:
        """``"dilation"`` if ``B <= sum(W) / 2``, else ``"erosion"`` (``neuron`` may be omitted for one)."""
        i = self._index(neuron)
        if self.identity:
            return _bz.DILATION
        erosion = _bz.find_operation(self._neuron_weights()[i], self._neuron_biases()[i])
        return _bz.EROSION if erosion else _bz.DILATION

    def is_activated(self, neuron: int | None = None) -> tuple[str, np.ndarray] | None:
        """``(operation, S)`` if the neuron is exactly a dilation or an erosion by ``S``, else None.

        ``S`` is a boolean array of the neuron's weight shape. See
        :func:`tropic.nn.binarize.activation_test` for the tests.
        """
        i = self._index(neuron)
        if self.identity:
            return _bz.DILATION, np.ones(self._neuron_shape, dtype=bool)
        activated, erosion, s = _bz.activation_test(self._neuron_weights()[i], self._neuron_biases()[i])
        if not activated:
            return None
        return (_bz.EROSION if erosion else _bz.DILATION), s.reshape(self._neuron_shape)

    def binarized(self, method: str | None = None) -> BinarizedNeurons:
        """Operation and structuring element of every neuron (exact where activated).

        Parameters
        ----------
        method : str, optional
            Approximation for neurons that are not activated (default: the layer's
            ``binarization``); see :func:`tropic.nn.binarize.binarize`.
        """
        method = self.binarization if method is None else method
        if method not in _bz.METHODS:
            raise ValueError(f"method must be one of {_bz.METHODS}, got {method!r}")
        if self.identity:
            out = self.out_channels
            ones = np.ones((out, *self._neuron_shape), dtype=bool)
            return BinarizedNeurons(np.zeros(out, dtype=bool), ones, np.ones(out, dtype=bool))
        erosion, s, activated = _bz.binarize(self._neuron_weights(), self._neuron_biases(), method)
        return BinarizedNeurons(erosion, s.reshape(self.out_channels, *self._neuron_shape), activated)


class _BiSEBase(_BinaryReading, Layer):
    """Parameters, smooth forward and binarisation shared by ``BiSE``, ``LUI`` and ``DenseLUI``.

    A subclass sets ``_neuron_shape`` (shape of one neuron's weights) and implements ``_linear(x, W)``
    (the non-negative linear map: a convolution or a dense product) and ``_broadcast(v)`` (a per-neuron
    vector shaped to broadcast against the output).
    """

    _neuron_shape: tuple[int, ...]
    _binarisable = True  # (the regularisers and model.binary() find these layers by this mark)

    _reference_init = "uniform"  # the weights of preset="reference" (a LUI's: "constant")

    def _init_parameters(
        self,
        out: int,
        neuron_shape: tuple[int, ...],
        *,
        preset: str,
        init: str | None,
        density: float,
        bias_clamp: bool,
        bias_mode: str | None,
        scale_init: float | None,
        input_mean: float,
        binarization: str,
        rng: Any,
        seed: int | None,
        dtype: Any,
    ) -> None:
        preset = one_of("preset", preset, PRESETS)
        reference = preset == "reference"
        if init is None:
            init = self._reference_init if reference else "dense"
        one_of("init", init, INITS)
        density = float(density)
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density!r}")
        if binarization not in _bz.METHODS:
            raise ValueError(f"binarization must be one of {_bz.METHODS}, got {binarization!r}")
        if not isinstance(bias_clamp, bool):
            raise TypeError(f"bias_clamp must be a bool, got {type(bias_clamp).__name__}")
        if bias_mode is None:
            bias_mode = "projected" if bias_clamp else ("reparametrized" if reference else "softplus")
        one_of("bias_mode", bias_mode, BIAS_MODES)
        if bias_clamp and bias_mode == "softplus":
            raise ValueError(
                "bias_clamp=True clamps the bias: bias_mode must be 'projected' or 'reparametrized'"
            )
        scale_init = (0.0 if reference else 1.0) if scale_init is None else float(scale_init)
        if not np.isfinite(scale_init):
            raise ValueError(f"scale_init must be finite, got {scale_init!r}")
        input_mean = float(input_mean)
        if not 0.0 <= input_mean <= 1.0:
            raise ValueError(f"input_mean must be in [0, 1], got {input_mean!r}")
        generator = _init.as_rng(rng, seed)
        n = int(np.prod(neuron_shape))
        shape = (out, n)
        if init == "dense":
            # Weights near 1/sqrt(n) (std 30 %): for a binary input of density 1/2, p (x * W - B) then
            # has a spread of order 1 whatever the fan-in.
            w0 = np.abs(1.0 + 0.3 * generator.standard_normal(shape)) / np.sqrt(n)
        elif init == "sparse":
            # A random subset of about density * n weights (at least one) at 2 / sqrt(its size), the
            # others 100 times smaller: each neuron starts near a small structuring element.
            on = generator.random(shape) < density
            on[np.arange(out), generator.integers(0, n, out)] = True
            high = 2.0 / np.sqrt(max(density * n, 1.0))
            w0 = np.where(on, high, high / 100)
        else:
            # The reference's: U(low, high] drawn as rand * (low - high) + high, or the mean alone.
            mean, low, high = _reference_weight_range(n)
            w0 = generator.random(shape) * (low - high) + high if init == "uniform" else np.full(shape, mean)
        w0 = w0.reshape(out, *neuron_shape)
        # The bias at input_mean * sum(W) (1/2: halfway, between a dilation and an erosion). The
        # reference's inits perturb it by a relative u ~ U(-0.01, 0.01), one draw per layer, added as
        # B + u B.
        b0 = w0.reshape(out, -1).sum(axis=1) * input_mean
        if init in ("uniform", "constant"):
            u = generator.random() * (2 * _REFERENCE_BIAS_NOISE) - _REFERENCE_BIAS_NOISE
            b0 = b0 + u * b0
        self._neuron_shape = tuple(neuron_shape)
        self.preset = preset
        self.bias_mode = bias_mode
        self.identity = False  # (an identity LUI sets it)
        self.binarization = binarization
        self.theta = self.parameter(_inverse_softplus(w0).astype(dtype))
        self.beta = self.parameter(_inverse_softplus(b0).astype(dtype))
        self.scale = self.parameter(np.full(out, scale_init, dtype=dtype))
        self._binary_cache = None

    # -- the smooth layer ---------------------------------------------------------------------

    @property
    def out_channels(self) -> int:
        return int(self.theta.shape[0])

    @property
    def weight(self) -> Any:
        """``W = softplus(theta)`` (non-negative), with the gradient to ``theta``; the values those
        the binarisation reads (:meth:`_neuron_weights`' formula, see ``with_host_values``)."""
        return self._softplus_of("theta")

    def _softplus_of(self, name: str) -> Any:
        """``softplus`` of parameter ``name`` on the engine, with the host formula's values."""
        return self.with_host_values(
            self.F.softplus(getattr(self, name)), lambda: _host_softplus(self._host_parameter(name))
        )

    @property
    def bias_clamp(self) -> bool:
        """Whether :attr:`bias` is clamped (``bias_mode`` ``"projected"`` or ``"reparametrized"``)."""
        return self.bias_mode != "softplus"

    @property
    def bias(self) -> Any:
        """``B``, the effective bias: ``softplus(beta)``, clamped under the clamping ``bias_mode`` s.

        .. math:: B = \\mathrm{clamp}\\big(\\mathrm{softplus}(\\beta),\\;
                  \\tfrac12 (w_{(1)} + w_{(2)}),\\; \\textstyle\\sum_k w_k - \\tfrac12 w_{(1)}\\big)

        (``w_(1) <= w_(2)`` the two smallest weights of the neuron; with one weight the lower bound
        is 0). ``"projected"``: the bounds are constants, no gradient flows through them (a projected
        gradient). ``"reparametrized"``: the gradient also flows through the bounds to ``theta``, as
        the reference's ``torch.clamp(softplus(beta), bmin, bmax)``. The values are the same in both,
        and are those the binarisation reads. An identity LUI's bias is 0.
        """
        b = self._softplus_of("beta")
        if self.identity:
            return b * 0.0
        if self.bias_mode == "softplus":
            return b
        w_host = self._neuron_weights()
        low, high = (self.constant(v, like=b) for v in _clamp_bounds(w_host))
        if self.bias_mode == "reparametrized":
            low, high = self._bounds_with_gradient(w_host, low, high)
        return tropic.minimum(tropic.maximum(b, low), high)

    def _bounds_with_gradient(self, w_host: np.ndarray, low: Any, high: Any) -> tuple[Any, Any]:
        """The clamp bounds ``low``, ``high`` (constants of the host values) with the gradient of
        ``(w_(1) + w_(2)) / 2`` and ``sum(W) - w_(1) / 2`` to the weights.

        The order statistics are picked on the host (the smallest first, ties to the lowest index) as
        one-hot masks; the value stays the host's exactly (``v + (e - e.detach())`` adds an exact 0),
        so that the forward and the binarisation read the same bias.
        """
        F = self.F
        out, n = w_host.shape
        w = F.reshape(self.weight, (out, n))
        order = np.argsort(w_host, axis=1, kind="stable")
        rows = np.arange(out)
        first = np.zeros((out, n))
        first[rows, order[:, 0]] = 1.0
        high_e = F.sum(w, axis=1) - F.sum(w * self.constant(first, like=w), axis=1) * 0.5
        high = high + (high_e - high_e.detach())
        if n > 1:
            two = first.copy()
            two[rows, order[:, 1]] = 1.0
            low_e = F.sum(w * self.constant(two, like=w), axis=1) * 0.5
            low = low + (low_e - low_e.detach())
        return low, high

    def _linear(self, x: Any, w: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _broadcast(self, v: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def preactivation(self, x: Any) -> Any:
        """``p (x ⋆ W - B)``, the argument of ``xi`` (``2 u`` is a logit: ``xi(u) = sigmoid(2u)``)."""
        z = self._linear(x, self.weight)
        return (z - self._broadcast(self.bias)) * self._broadcast(self.scale)

    def _identity_forward(self, x: Any) -> Any:
        """``x`` itself, as an engine tensor (an identity LUI's float and binary forward)."""
        require_image(self, x, self.in_channels)
        return self.F.reshape(x, tuple(x.shape))

    def forward(self, x: Any) -> Any:
        if self.identity:
            return self._identity_forward(x)
        if self.binary_mode:
            return self.binary_forward(x)
        return _xi(self.F, self.preactivation(x))

    # -- binarisation -------------------------------------------------------------------------

    def _host_parameter(self, name: str) -> np.ndarray:
        return self.host(getattr(self, name))

    def _binary_state(self) -> tuple[BinarizedNeurons, np.ndarray]:
        """The binarisation (recomputed only when the parameters or the method changed) and ``p < 0``."""
        key = (self.binarization, self.bias_mode, self.host(self.theta), self.host(self.beta))
        cache = self._binary_cache
        if not (
            cache is not None
            and cache[0][:2] == key[:2]
            and all(np.array_equal(a, b) for a, b in zip(cache[0][2:], key[2:], strict=True))
        ):
            self._binary_cache = cache = (key, self.binarized())
        return cache[1], self.host(self.scale) < 0

    def binary_forward(self, x: Any) -> Any:
        """The exact binary morphology of the binarised neurons (0/1 floats, no gradient).

        The output has the float forward's dtype (``x``'s promoted with the parameters').

        Dilation: ``x ⋆ 1_S >= 1``; erosion: ``x ⋆ 1_S >= |S|``; complemented where ``p < 0``.
        ``x`` should be binary (0/1).
        """
        self.require_eager("binary_forward")
        if self.identity:
            return self._identity_forward(x)
        state, flipped = self._binary_state()
        size = state.structuring_elements.reshape(self.out_channels, -1).sum(axis=1)
        threshold = np.where(state.is_erosion, size, 1).astype(np.float64) - 0.5
        masks = state.structuring_elements.astype(np.float64)
        return self.binary_map(x, masks, threshold, flipped)


class BiSE(_BiSEBase):
    """A bank of 2-D BiSE neurons (a non-negative convolution with a smooth threshold).

    .. math:: y_{b,o} = \\xi\\big(p_o\\,\\big((\\mathrm{pad}_{edge}(x) \\star W)_{b,o} - B_o\\big)\\big),
              W = \\mathrm{softplus}(\\theta),\\; B = \\mathrm{softplus}(\\beta)

    where ``⋆`` is the grouped cross-correlation (``tropic.autodiff.conv2d``) and the input is padded by
    ``k // 2`` replicated border pixels, so the output has the input's size. Each neuron ``o`` reads
    the ``in_channels / groups`` channels of its group; binarised, it is the dilation or the erosion of
    that stack by a 3-D structuring element ``S_o`` (see the module docstring for the border and
    orientation conventions).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
        Odd sizes only (the ``k // 2`` padding keeps the size and the centre).
    groups : int
        As ``Conv2d``: both channel counts must be divisible by it.
    preset : {"tropic", "reference"}
        The defaults of ``init``, ``scale_init`` and ``bias_mode``: tropic's (default), or those of
        the paper's code, ``preset="reference"`` (see the module docstring). An argument given
        explicitly overrides the preset.
    init : {"dense", "sparse", "uniform", "constant"}, optional
        Initial weights, ``n`` per neuron. ``"dense"`` (tropic's default): every weight
        ``|1 + 0.3 N(0, 1)| / sqrt(n)``; ``"sparse"``: a random ``density`` fraction of the weights (at
        least one) at ``2/sqrt(density n)``, the others 100 times smaller (sparse starts binarise far
        better for wide fan-ins, a ``DenseLUI`` on images). The reference code's: ``"uniform"``
        (default of ``preset="reference"``), ``W ~ U(m - h, m + h]`` with
        ``m = 2 atanh(0.9) / n`` (about ``2.94/n``) and ``h = sqrt(3 (1/(p0^2 n) - m^2))`` (about
        ``1.97/n``), ``p0 = (sqrt(3) + 2) sqrt(n) / (8 atanh(0.9))``; ``"constant"``: every weight
        ``m``. tropic keeps ``"dense"`` for compatibility; ``preset='reference'`` gives the paper
        code's.
    density : float
        For ``init="sparse"`` (default 0.1).
    bias_clamp : bool
        Clamp ``B`` into the interval where both activations stay possible (see :attr:`bias`):
        ``bias_mode="projected"`` unless ``bias_mode`` says otherwise.
    bias_mode : {"softplus", "projected", "reparametrized"}, optional
        ``B = softplus(beta)``; or clamped to ``[(w_(1) + w_(2))/2, sum(W) - w_(1)/2]`` with constant
        bounds (``"projected"``) or with the gradient through the bounds (``"reparametrized"``, the
        reference code's default and that of ``preset="reference"``). Default ``"softplus"``
        (``"projected"`` with ``bias_clamp=True``), kept for compatibility; ``preset='reference'``
        gives the paper code's.
    scale_init : float, optional
        Initial ``p``: 1 (tropic's default: the initial weights are scaled so that ``p (x ⋆ W - B)`` is
        of order 1 on binary inputs) or 0 (``preset="reference"``, the paper's experiment
        configurations: every output starts at ``xi(0) = 1/2`` and only ``p`` gets a gradient at
        first). 1 is kept for compatibility; ``preset='reference'`` gives the paper code's.
    input_mean : float
        Mean of the (binary) input, in [0, 1]: the initial bias is ``B = input_mean * sum(W)``
        (``* (1 + u)``, ``u ~ U(-0.01, 0.01)`` drawn once per layer, for the reference's inits
        ``"uniform"`` and ``"constant"``). Default 1/2; the reference gives the first layer the mean of
        a batch of training inputs, and 1/2 to the others.
    binarization : {"constant", "activable", "threshold_2/3", "threshold_3/4"}
        How ``binary(True)`` reads a neuron that is not activated (``tropic.nn.binarize.binarize``).
    rng, seed, dtype
        Initialisation randomness and parameter dtype (default float32).

    Attributes
    ----------
    theta : Parameter, shape (out_channels, in_channels / groups, kh, kw)
    beta : Parameter, shape (out_channels,)
    scale : Parameter, shape (out_channels,)
        ``p``.
    preset, bias_mode : str
        As resolved from the arguments.
    identity : bool
        Whether the layer is the identity (only a LUI can be: :class:`LUI`).

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn.binary import BiSE
    >>> bise = BiSE(1, 1, 3, seed=0)
    >>> x = np.zeros((1, 1, 5, 5), dtype=np.float32); x[0, 0, 2, 2] = 1
    >>> bise(x).shape
    (1, 1, 5, 5)
    >>> y = bise.binary()(x)  # binarised: a dilation or an erosion by the closest S
    >>> sorted(set(y.numpy().ravel().tolist())) in ([0.0], [0.0, 1.0], [1.0])
    True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        *,
        groups: int = 1,
        preset: str = "tropic",
        init: str | None = None,
        density: float = 0.1,
        bias_clamp: bool = False,
        bias_mode: str | None = None,
        scale_init: float | None = None,
        input_mean: float = 0.5,
        binarization: str = "constant",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        out_channels, c_g, kh, kw = _conv_shape(in_channels, out_channels, kernel_size, groups)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred window), got {kernel_size!r}")
        self.in_channels, self.groups, self.kernel_size = c_g * groups, groups, (kh, kw)
        self._init_parameters(
            out_channels,
            (c_g, kh, kw),
            preset=preset,
            init=init,
            density=density,
            bias_clamp=bias_clamp,
            bias_mode=bias_mode,
            scale_init=scale_init,
            input_mean=input_mean,
            binarization=binarization,
            rng=rng,
            seed=seed,
            dtype=dtype,
        )

    def _linear(self, x: Any, w: Any) -> Any:
        require_image(self, x, self.in_channels)
        kh, kw = self.kernel_size
        if kh == kw == 1:
            return self._one_by_one(x, w)
        x = self.F.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)), mode="edge")
        return self.F.conv2d(x, w, groups=self.groups)

    def _one_by_one(self, x: Any, w: Any) -> Any:
        """The 1x1 cross-correlation ``(x ⋆ W)_{b,o} = sum_c W_{o,c} x_{b, g(o) C_g + c}`` (``C_g``
        channels per group, ``g(o)`` the group of output ``o``; the LUIs' kernel) as products over
        the channels of each pixel: with one input channel per group a product per pixel (the
        convolution's values, bit for bit), else a matrix product per group over the pixels (the
        same sums, in the matrix product's order). Torch's CPU convolution spends far longer on a
        1x1 kernel over a few channels (forward and backward of a (32, 3, 50, 50) LUI: 10.6 ms
        against 1.6 ms as a product on this project's 2-core VM)."""
        F = self.F
        batch, _, height, width = x.shape  # (symbolic sizes under torch.compile stay symbolic)
        groups, out = self.groups, self.out_channels
        per_group, out_per_group = self.in_channels // groups, out // groups
        pixels = height * width
        if per_group == 1:  # output o scales channel g(o)
            y = F.reshape(x, (batch, groups, 1, pixels)) * F.reshape(w, (1, groups, out_per_group, 1))
        else:
            w = F.reshape(w, (groups, out_per_group, per_group))
            y = F.matmul(w, F.reshape(x, (batch, groups, per_group, pixels)))
        return F.reshape(y, (batch, out, height, width))

    def _broadcast(self, v: Any) -> Any:
        return self.F.reshape(v, (1, -1, 1, 1))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, groups={self.groups}, "
            f"binarization={self.binarization!r}"
        )


class LUI(BiSE):
    """Logical union / intersection of channels: a BiSE with a 1x1 kernel.

    Binarised, output channel ``o`` is the OR (a dilation) or the AND (an erosion) of the subset
    ``S_o`` of the ``in_channels / groups`` channels of its group.

    Parameters
    ----------
    in_channels, out_channels, groups
        As :class:`BiSE`; other keyword arguments likewise (``preset="reference"``: the weights start
        all equal, ``init="constant"``, as the reference's LUIs).
    identity : bool, optional
        Make the layer the identity (``y = x`` in float and binary mode; it reads as the activated
        dilation by its one input, bias 0; its parameters are kept, unused, as the reference keeps
        them). Only where ``in_channels == out_channels == groups``, each output combining a single
        channel. Default: the identity there under ``preset="reference"`` (the reference's LUI
        skips itself exactly then), never under ``preset="tropic"``, whose single-channel LUI is
        learned (a smooth threshold ``xi(p (w x - B))``, not ``x``): kept for compatibility;
        ``preset='reference'`` gives the paper code's.

    Examples
    --------
    >>> from tropic.nn.binary import LUI
    >>> LUI(4, 2).theta.shape
    (2, 4, 1, 1)
    >>> LUI(3, 3, groups=3, preset="reference").identity
    True
    """

    _reference_init = "constant"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int = 1,
        identity: bool | None = None,
        **kwargs: Any,
    ) -> None:
        BiSE.__init__(self, in_channels, out_channels, 1, groups=groups, **kwargs)
        single = self.in_channels == self.out_channels == self.groups  # one input channel per output
        if identity is None:
            identity = self.preset == "reference" and single
        elif not isinstance(identity, bool):
            raise TypeError(f"identity must be a bool or None, got {type(identity).__name__}")
        elif identity and not single:
            raise ValueError(
                "identity=True needs in_channels == out_channels == groups (one input channel per output), "
                f"got {self.in_channels}, {self.out_channels}, {self.groups}"
            )
        self.identity = identity


class BiSEL(Layer):
    """BiSE layer: one BiSE per (input, output) channel pair, then one LUI per output channel.

    .. math:: y_o = \\mathrm{LUI}_o\\big(\\mathrm{BiSE}_{1,o}(x_1), \\dots,
              \\mathrm{BiSE}_{C_{in},o}(x_{C_{in}})\\big)

    The BiSEs are one grouped convolution (``groups = in_channels``, ``in * out`` neurons; neuron
    ``i * out + o`` reads channel ``i``); the LUIs are one grouped 1x1 layer (``groups = out``).
    Binarised, every output channel is a union or an intersection of dilations and erosions of the
    input channels.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
        Odd.
    identity_lui : bool, optional
        Make the LUIs the identity (``LUI(identity=)``); only for ``in_channels == 1``, where each
        LUI combines a single channel. Default: the identity there under ``preset="reference"`` (the
        reference's ``LUI`` skips itself when ``in = out = groups``, so its ``BiSEL(1, C)`` is ``C``
        BiSEs), a learned LUI under ``preset="tropic"`` (kept for compatibility;
        ``preset='reference'`` gives the paper code's).
    input_mean : float
        Mean of the input, for the BiSEs' initial bias (:class:`BiSE`); the LUIs read BiSE outputs and
        take 1/2, as in the reference.
    rng, seed, dtype, and the other keyword arguments of :class:`BiSE` (given to both parts;
    ``preset="reference"``: uniform BiSE weights, constant LUI weights, as the reference's ``BiMoNN``).

    Attributes
    ----------
    bises : BiSE
    luis : LUI

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn.binary import BiSEL
    >>> layer = BiSEL(2, 3, 5, seed=0)
    >>> layer(np.zeros((4, 2, 8, 8), dtype=np.float32)).shape
    (4, 3, 8, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        *,
        identity_lui: bool | None = None,
        input_mean: float = 0.5,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
        **kwargs: Any,
    ) -> None:
        self._setup(dtype, device)  # the sub-layers take the dtype as given
        kwargs.update(dtype=dtype, device=device)
        in_channels = positive_int("in_channels", in_channels)
        out_channels = positive_int("out_channels", out_channels)
        generator = _init.as_rng(rng, seed)
        if identity_lui is True and in_channels != 1:
            raise ValueError(
                f"identity_lui=True needs in_channels == 1 (one channel per LUI), got {in_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.bises = self.engine_layer(BiSE)(
            in_channels,
            in_channels * out_channels,
            kernel_size,
            groups=in_channels,
            input_mean=input_mean,
            rng=generator,
            **kwargs,
        )
        self.luis = self.engine_layer(LUI)(
            in_channels * out_channels,
            out_channels,
            groups=out_channels,
            identity=identity_lui,
            rng=generator,
            **kwargs,
        )

    def forward(self, x: Any) -> Any:
        require_image(self, x, self.in_channels)
        F = self.F
        z = self.bises(x)
        b, _, h, w = z.shape
        # (B, in, out, H, W) -> (B, out, in, H, W): group o of the LUI gathers BiSE_{i,o} for all i.
        z = F.reshape(z, (b, self.in_channels, self.out_channels, h, w))
        z = F.permute_dims(z, (0, 2, 1, 3, 4))
        return self.luis(F.reshape(z, (b, self.out_channels * self.in_channels, h, w)))


class DenseLUI(_BiSEBase):
    """A LUI on vectors: ``y = xi(p (x W^T - B))`` with ``W = softplus(theta) >= 0``.

    Binarised, output ``j`` is the OR (dilation-type) or the AND (erosion-type) of the input bits in
    ``S_j``. With ``real_valued=True`` the layer is a classifier head, never binarised, whose output
    is set by ``output``.

    Parameters
    ----------
    in_features, out_features : int
    real_valued : bool
    output : {"preactivation", "xi"}, optional
        For ``real_valued=True``: ``"preactivation"``, the scores ``u = p (x W^T - B)`` (logits for
        ``cross_entropy``; ``2u`` is the logit of ``xi(u)``), tropic's default; or ``"xi"``,
        ``xi(u) = tanh(u)/2 + 1/2`` in (0, 1), the reference's (its classifiers apply the last
        activation and train with ``BCELoss``), the default of ``preset="reference"``. The scores are
        kept for compatibility (a ``cross_entropy`` on them is exact where ``BCE`` on ``xi`` saturates);
        ``preset='reference'`` gives the paper code's. A binarisable layer (``real_valued=False``)
        always returns ``xi``.
    preset, init, density, bias_clamp, bias_mode, scale_init, input_mean, binarization, rng, seed, dtype
        As :class:`BiSE` (``preset="reference"``: uniform weights, as the reference's ``BimonnDense``).

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn.binary import DenseLUI
    >>> head = DenseLUI(16, 10, real_valued=True, seed=0)
    >>> head(np.ones((3, 16), dtype=np.float32)).shape
    (3, 10)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        real_valued: bool = False,
        output: str | None = None,
        preset: str = "tropic",
        init: str | None = None,
        density: float = 0.1,
        bias_clamp: bool = False,
        bias_mode: str | None = None,
        scale_init: float | None = None,
        input_mean: float = 0.5,
        binarization: str = "constant",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.in_features = positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        if not isinstance(real_valued, bool):
            raise TypeError(f"real_valued must be a bool, got {type(real_valued).__name__}")
        self.real_valued = real_valued
        self._init_parameters(
            out_features,
            (self.in_features,),
            preset=preset,
            init=init,
            density=density,
            bias_clamp=bias_clamp,
            bias_mode=bias_mode,
            scale_init=scale_init,
            input_mean=input_mean,
            binarization=binarization,
            rng=rng,
            seed=seed,
            dtype=dtype,
        )
        if output is None:
            output = "xi" if (self.preset == "reference" or not real_valued) else "preactivation"
        one_of("output", output, DENSE_OUTPUTS)
        if not real_valued and output != "xi":
            raise ValueError(f"output={output!r} needs real_valued=True (a binarisable DenseLUI returns xi)")
        self.output = output

    @property
    def out_features(self) -> int:
        return self.out_channels

    def _linear(self, x: Any, w: Any) -> Any:
        require_features(self, x, self.in_features)
        return self.F.matmul(x, w.T)

    def _broadcast(self, v: Any) -> Any:
        return v

    def forward(self, x: Any) -> Any:
        if self.real_valued:
            u = self.preactivation(x)
            return _xi(self.F, u) if self.output == "xi" else u
        return _BiSEBase.forward(self, x)

    def extra_repr(self) -> str:
        extra = f", output={self.output!r}" if self.real_valued else ""
        return f"{self.in_features}, {self.out_features}, real_valued={self.real_valued}{extra}"


def _regularised(model: Any, preset: str, include_real_valued: bool | None) -> list[_BiSEBase]:
    """The BiSE-type layers of ``model`` (either engine's) that a regulariser sums over: the
    binarisable ones, and the real-valued heads where ``include_real_valued`` (default: under
    ``preset="reference"``). Identity LUIs are left out (their distance is 0 in the reference too)."""
    preset = one_of("preset", preset, PRESETS)
    if include_real_valued is None:
        include_real_valued = preset == "reference"
    elif not isinstance(include_real_valued, bool):
        kind = type(include_real_valued).__name__
        raise TypeError(f"include_real_valued must be a bool or None, got {kind}")
    return [
        m
        for m in model.modules()
        if getattr(type(m), "_binarisable", False)
        and not getattr(m, "identity", False)
        and (include_real_valued or not getattr(m, "real_valued", False))
    ]


def constant_set_regularization(
    model: Any, *, preset: str = "tropic", include_real_valued: bool | None = None
) -> Any:
    """Sum over the model's BiSE-type neurons of ``d(W, A(S*))^2 = ||W||^2 - (sum_{S*} W)^2 / |S*|``.

    ``S*`` is the closest constant set of each neuron (``project_constant_set``), recomputed at every
    call from the current weights and held fixed for the gradient. Add
    ``c * constant_set_regularization(model)`` to the data loss (the paper uses ``c`` = 0.01 or
    0.001). Either engine's model (eagerly under torch). The reference's ``RegularizationProjConstant``
    (``mode="exact"``) has the same distance, with no factor.

    Parameters
    ----------
    model : module
    preset : {"tropic", "reference"}
        The default of ``include_real_valued``.
    include_real_valued : bool, optional
        Also regularise real-valued ``DenseLUI`` heads. Default: not under ``preset="tropic"`` (a
        head is never binarised: kept for compatibility), yes under ``preset="reference"`` (the
        reference sums over every ``BiSEBase`` module, its real-valued head included).

    Examples
    --------
    >>> from tropic.nn.binary import BiSE, constant_set_regularization
    >>> float(constant_set_regularization(BiSE(1, 1, 3, seed=0)).item()) >= 0
    True
    """
    total = None
    for layer in _regularised(model, preset, include_real_valued):
        F = layer.F
        w = F.reshape(layer.weight, (layer.out_channels, -1))
        s, _ = _bz.project_constant_set(layer._neuron_weights())
        mask = layer.constant(s.astype(np.float64), like=w)
        inside = F.sum(w * mask, axis=1)
        term = F.sum(F.sum(w * w, axis=1) - inside * inside / F.sum(mask, axis=1))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("model has no BiSE-type layer to regularise")
    return total


def activable_set_regularization(
    model: Any,
    *,
    preset: str = "tropic",
    factor: float | None = None,
    include_real_valued: bool | None = None,
) -> Any:
    """``factor`` times the sum over BiSE-type neurons of ``||W - W*||^2 + (B - B*)^2``, the squared
    distance to the closest activable parameters ``(W*, B*)``.

    ``(W*, B*)`` (``tropic.nn.binarize.activable_projection``, dilations and erosions) are recomputed at
    every call and held fixed for the gradient: the gradient of ``d^2/2`` to a convex set is
    ``x - P(x)`` whether or not ``P`` is differentiated, so this matches the reference's analytical
    loss (which differentiates ``P`` on the active set) up to the factor. Costlier than
    :func:`constant_set_regularization` (a closed-form projection per neuron and candidate ``S``).
    Either engine's model.

    Parameters
    ----------
    model : module
    preset : {"tropic", "reference"}
        The defaults of ``factor`` and ``include_real_valued``.
    factor : float, optional
        1 under ``preset="tropic"`` (the squared distance, as :func:`constant_set_regularization`:
        kept for compatibility); 1/2 under ``preset="reference"``, the reference's
        ``RegularizationProjActivated`` (``1/2 (||W - W*||^2 + (B - B*)^2)``, the QP's objective).
    include_real_valued : bool, optional
        As :func:`constant_set_regularization`.
    """
    preset = one_of("preset", preset, PRESETS)
    factor = (0.5 if preset == "reference" else 1.0) if factor is None else float(factor)
    if not (np.isfinite(factor) and factor >= 0):
        raise ValueError(f"factor must be a finite float >= 0, got {factor!r}")
    total = None
    for layer in _regularised(model, preset, include_real_valued):
        F = layer.F
        w = F.reshape(layer.weight, (layer.out_channels, -1))
        b = layer.bias
        w_star, b_star = _bz.activable_targets(layer._neuron_weights(), layer._neuron_biases())
        dw, db = w - layer.constant(w_star, like=w), b - layer.constant(b_star, like=b)
        term = F.sum(dw * dw) + F.sum(db * db)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("model has no BiSE-type layer to regularise")
    return total if factor == 1.0 else total * factor
