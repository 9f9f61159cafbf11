"""Binarised morphological layers as torch modules: ``BiSE``, ``LUI``, ``BiSEL``, ``DenseLUI`` and the
two binarisation regularisers, mirroring :mod:`tropic.nn.binary`.

The smooth forward is plain torch (compiles). The binarisation (activation tests, projections) is
:mod:`tropic.nn.binarize`, pure NumPy on the detached weights, so the *binary* forward
(``binary_mode``) and the regularisers run eagerly only: under ``torch.compile`` the binary forward
raises a ``RuntimeError`` that says so (dynamo reports it), rather than breaking the graph silently.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import tropic.nn as _tnn
from tropic.nn import binarize as _bz
from tropic.nn.binary import BinarizedNeurons, _BinaryReading, _clamp_bounds

from ._mirror import TropicMirror, maximum, minimum, mirror, softplus

__all__ = [
    "LUI",
    "BiSE",
    "BiSEL",
    "BinarizedNeurons",
    "DenseLUI",
    "activable_set_regularization",
    "constant_set_regularization",
]

_COMPILE_MESSAGE = (
    "{name}.binary_forward cannot run under torch.compile: the binarisation (tropic.nn.binarize) is "
    "NumPy code on the detached weights. Compile the float model (binary_mode False) and run the "
    "binarised model eagerly."
)


def _edge_pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """``x`` (B, C, H, W) padded by ``ph`` / ``pw`` replicated border pixels (``mode="edge"``).

    Built from slices and ``cat`` rather than ``F.pad(mode="replicate")``: under torch.compile (2.13,
    CPU) inductor may hand ``replication_pad2d_backward`` a channels-last gradient and then fail its
    own stride assertion.
    """
    if ph:
        x = torch.cat([x[:, :, :1].expand(-1, -1, ph, -1), x, x[:, :, -1:].expand(-1, -1, ph, -1)], dim=2)
    if pw:
        x = torch.cat([x[..., :1].expand(-1, -1, -1, pw), x, x[..., -1:].expand(-1, -1, -1, pw)], dim=3)
    return x


def _xi(u: torch.Tensor) -> torch.Tensor:
    """``tanh(u) / 2 + 1 / 2`` (as tropic.nn.binary)."""
    return torch.tanh(u) * 0.5 + 0.5


class _BiSEBase(_BinaryReading, TropicMirror):
    """Smooth forward, binarisation and binary forward shared by ``BiSE``, ``LUI`` and ``DenseLUI``
    (the binary reading, ``binarized`` / ``is_activated`` / ``find_operation``, is tropic.nn's)."""

    _config = ("bias_clamp", "binarization", "_neuron_shape")

    @property
    def out_channels(self) -> int:
        return int(self.theta.shape[0])

    @property
    def weight(self) -> torch.Tensor:
        """``W = softplus(theta)`` (non-negative), with the gradient to ``theta``."""
        return softplus(self.theta)

    @property
    def bias(self) -> torch.Tensor:
        """``B = softplus(beta)``; with ``bias_clamp`` clamped to ``[(w_(1) + w_(2))/2, sum(W) - w_(1)/2]``
        (bounds from the detached weights, in float64, as :attr:`tropic.nn.BiSE.bias`)."""
        b = softplus(self.beta)
        if not self.bias_clamp:
            return b
        low, high = (
            torch.from_numpy(v).to(dtype=b.dtype, device=b.device)
            for v in _clamp_bounds(self._neuron_weights())
        )
        return minimum(maximum(b, low), high)

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """``p (x ⋆ W - B)``, the argument of ``xi``."""
        z = self._linear(x, self.weight)
        return (z - self._broadcast(self.bias)) * self._broadcast(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary_mode:
            return self.binary_forward(x)
        return _xi(self.preactivation(x))

    # -- binarisation (tropic.nn.binarize on the detached weights) ---------------------------------

    def _host_parameter(self, name: str) -> np.ndarray:
        value = getattr(self, name).detach().cpu()
        # NumPy has no bfloat16: its values are exact in float32, where the binary reading runs then.
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()

    def _binary_state(self) -> BinarizedNeurons:
        key = (self.binarization, self.bias_clamp, self.theta.detach().clone(), self.beta.detach().clone())
        cache = getattr(self, "_binary_cache", None)
        if (
            cache is not None
            and cache[0][:2] == key[:2]
            and all(torch.equal(a, b) for a, b in zip(cache[0][2:], key[2:], strict=True))
        ):
            return cache[1]
        result = self.binarized()
        self._binary_cache = (key, result)
        return result

    def binary_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exact binary morphology of the binarised neurons (0/1 in the float forward's dtype, no
        gradient): dilation ``x ⋆ 1_S >= 1``, erosion ``x ⋆ 1_S >= |S|``, complemented where
        ``p < 0``. Eager only (a clear ``RuntimeError`` under ``torch.compile``)."""
        if torch.compiler.is_compiling():
            raise RuntimeError(_COMPILE_MESSAGE.format(name=type(self).__name__))
        state = self._binary_state()
        dtype = torch.promote_types(x.dtype, self.theta.dtype)
        size = state.structuring_elements.reshape(self.out_channels, -1).sum(axis=1)
        threshold = np.where(state.is_erosion, size, 1).astype(np.float64) - 0.5
        device = self.theta.device
        masks = torch.from_numpy(state.structuring_elements.astype(np.float64)).to(dtype=dtype, device=device)
        threshold = torch.from_numpy(threshold).to(dtype=dtype, device=device)
        with torch.no_grad():
            z = self._linear(x.detach().to(dtype), masks)
            # 0/1 sums are exact integers in floating point: comparing with k - 1/2 is rounding-free.
            out = (z >= self._broadcast(threshold)) != self._broadcast(self.scale.detach() < 0)
        return out.to(dtype)


@mirror
class BiSE(_BiSEBase):
    """A bank of 2-D BiSE neurons ``xi(p ((pad_edge(x) ⋆ W) - B))``, ``W = softplus(theta)``,
    ``B = softplus(beta)`` (:class:`tropic.nn.BiSE`: same arguments, same initial values).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
        Odd.
    groups, init, density, bias_clamp, scale_init, binarization, rng, seed
        As :class:`tropic.nn.BiSE`.
    dtype, device
        torch's.

    Examples
    --------
    >>> import torch
    >>> from tropic.torch import nn as tnn
    >>> bise = tnn.BiSE(1, 1, 3, seed=0)
    >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1
    >>> bise(x).shape
    torch.Size([1, 1, 5, 5])
    >>> sorted(set(bise.binary()(x).flatten().tolist())) in ([0.0], [0.0, 1.0], [1.0])
    True
    """

    _tropic_cls = _tnn.BiSE
    _config = (*_BiSEBase._config, "in_channels", "groups", "kernel_size")

    def _linear(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        kh, kw = self.kernel_size
        return F.conv2d(_edge_pad(x, kh // 2, kw // 2), w, groups=self.groups)

    def _broadcast(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, groups={self.groups}, "
            f"binarization={self.binarization!r}"
        )


@mirror
class LUI(BiSE):
    """Logical union / intersection of channels: a BiSE with a 1x1 kernel (:class:`tropic.nn.LUI`)."""

    _tropic_cls = _tnn.LUI


@mirror
class BiSEL(TropicMirror):
    """One BiSE per (input, output) channel pair, then one LUI per output channel
    (:class:`tropic.nn.BiSEL`).

    Attributes
    ----------
    bises : BiSE
    luis : LUI
    """

    _tropic_cls = _tnn.BiSEL
    _config = ("in_channels", "out_channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bises(x)
        b, _, h, w = z.shape
        # (B, in, out, H, W) -> (B, out, in, H, W): group o of the LUI gathers BiSE_{i,o} for all i.
        z = z.reshape(b, self.in_channels, self.out_channels, h, w).permute(0, 2, 1, 3, 4)
        return self.luis(z.reshape(b, self.out_channels * self.in_channels, h, w))


@mirror
class DenseLUI(_BiSEBase):
    """A LUI on vectors, ``xi(p (x W^T - B))`` (:class:`tropic.nn.DenseLUI`); with
    ``real_valued=True`` it returns the scores ``p (x W^T - B)`` (logits) and is never binarised."""

    _tropic_cls = _tnn.DenseLUI
    _config = (*_BiSEBase._config, "in_features", "real_valued")

    @property
    def out_features(self) -> int:
        return self.out_channels

    def _linear(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {tuple(x.shape)}")
        return torch.matmul(x, w.T)

    def _broadcast(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.real_valued:
            return self.preactivation(x)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, real_valued={self.real_valued}"


def _binarisable(model: torch.nn.Module) -> list[_BiSEBase]:
    return [m for m in model.modules() if isinstance(m, _BiSEBase) and not getattr(m, "real_valued", False)]


def constant_set_regularization(model: torch.nn.Module) -> torch.Tensor:
    """Sum over the BiSE-type neurons of ``model`` of ``||W||^2 - (sum_{S*} W)^2 / |S*|``, ``S*`` the
    closest constant set (``tropic.nn.binarize.project_constant_set`` on the detached weights, held
    fixed for the gradient), as :func:`tropic.nn.constant_set_regularization`. Eager only."""
    total: torch.Tensor | None = None
    for layer in _binarisable(model):
        w = layer.weight.reshape(layer.out_channels, -1)
        s, _ = _bz.project_constant_set(layer._neuron_weights())
        mask = torch.from_numpy(s.astype(np.float64)).to(dtype=w.dtype, device=w.device)
        inside = (w * mask).sum(dim=1)
        term = ((w * w).sum(dim=1) - inside * inside / mask.sum(dim=1)).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("model has no BiSE-type layer to regularise")
    return total


def activable_set_regularization(model: torch.nn.Module) -> torch.Tensor:
    """Sum over the BiSE-type neurons of ``||W - W*||^2 + (B - B*)^2``, ``(W*, B*)`` the closest activable
    parameters (``tropic.nn.binarize.activable_projection``), as
    :func:`tropic.nn.activable_set_regularization`. Eager only."""
    total: torch.Tensor | None = None
    for layer in _binarisable(model):
        w, b = layer.weight.reshape(layer.out_channels, -1), layer.bias
        w_star, b_star = _bz.activable_targets(layer._neuron_weights(), layer._neuron_biases())
        w_star = torch.from_numpy(w_star).to(dtype=w.dtype, device=w.device)
        b_star = torch.from_numpy(b_star).to(dtype=b.dtype, device=b.device)
        dw, db = w - w_star, b - b_star
        term = (dw * dw).sum() + (db * db).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("model has no BiSE-type layer to regularise")
    return total
