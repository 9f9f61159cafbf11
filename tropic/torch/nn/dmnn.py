"""Deep morphological network layers as torch modules: ``MPM``, ``DEP``, ``DiagonalActivation``,
``SVDActivation``, ``MPMResidual``, mirroring :mod:`tropic.nn.dmnn`."""

from __future__ import annotations

import torch

import tropic
import tropic.nn as _tnn

from ._mirror import INF, TropicMirror, maximum, minimum, mirror

__all__ = ["DEP", "MPM", "DiagonalActivation", "MPMResidual", "SVDActivation"]


@mirror
class MPM(TropicMirror):
    """Max-plus-min layer ``y_j = max(b_j, max_i x_i + W_ji) + min(b'_j, min_i x_i + W_ji)``
    (:class:`tropic.nn.MPM`: same arguments and initial values).

    Parameters
    ----------
    in_features, out_features : int
    init : {"normal", "zeros"}
    weight_dropout : float in [0, 1)
        In training mode a fresh Bernoulli mask over ``W`` per forward pass removes entries from both
        branches (the tropical zero of each). The masks come from torch's generator
        (``torch.manual_seed``), not from ``rng``/``seed``, so they are not tropic.nn's draws.
    rng, seed
        The initialisation's NumPy random source.
    dtype, device

    Notes
    -----
    Pruned with ``torch.nn.utils.prune`` (or :mod:`tropic.torch.prune`), the ``weight_mask`` entries
    that are 0 are removed from both branches as well (``-inf`` in the max, ``+inf`` in the min), as
    tropic.nn does with a pruning mask, rather than acting as a weight equal to 0.
    """

    _tropic_cls = _tnn.MPM
    _config = ("in_features", "out_features", "init", "weight_dropout")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mask = getattr(self, "weight_mask", None)
        keep = None if mask is None else mask != 0
        if self.training and self.weight_dropout > 0.0:
            drawn = torch.rand(w.shape, device=w.device) >= self.weight_dropout
            keep = drawn if keep is None else keep & drawn
        if keep is None:
            w_max = w_min = w
        else:
            w_max, w_min = torch.where(keep, w, -INF), torch.where(keep, w, INF)
        dilation = maximum(self.bias_max, tropic.maxplus_matmul(x, w_max.T))
        erosion = minimum(self.bias_min, tropic.minplus_matmul(x, w_min.T))
        return dilation + erosion

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, init={self.init!r}, "
            f"weight_dropout={self.weight_dropout}"
        )


@mirror
class DEP(TropicMirror):
    """Dilation-erosion perceptron ``y_j = l_j max_i(x_i + W_ji) + (1 - l_j) min_i(x_i + W'_ji)``
    (:class:`tropic.nn.DEP`); a learned ``l`` is clamped to [0, 1] in the forward pass."""

    _tropic_cls = _tnn.DEP
    _config = ("in_features", "out_features", "mix_mode")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = torch.clamp(self.mix, 0.0, 1.0) if self.mix_mode == "learned" else self.mix
        dilation = tropic.maxplus_matmul(x, self.weight_max.T)
        erosion = tropic.minplus_matmul(x, self.weight_min.T)
        return dilation * lam + erosion * (1.0 - lam)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mix={self.mix_mode!r}"


@mirror
class DiagonalActivation(TropicMirror):
    """Diagonal "linear" activation ``y = a ⊙ x`` (:class:`tropic.nn.DiagonalActivation`)."""

    _tropic_cls = _tnn.DiagonalActivation
    _config = ("num_features",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}"


@mirror
class SVDActivation(TropicMirror):
    """SVD-constrained "linear" activation ``y = U diag(a) V^T x`` with frozen buffers ``u``, ``v``
    (:class:`tropic.nn.SVDActivation`)."""

    _tropic_cls = _tnn.SVDActivation
    _config = ("num_features",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(x, self.v) * self.weight, self.u.T)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}"


@mirror
class MPMResidual(TropicMirror):
    """Residual MPM block ``x + a ⊙ MPM(x)`` (:class:`tropic.nn.MPMResidual`).

    Attributes
    ----------
    mpm : MPM
    scale : DiagonalActivation
    """

    _tropic_cls = _tnn.MPMResidual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale(self.mpm(x))
