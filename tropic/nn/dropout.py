"""Dropout on activations (``Dropout``) and on weights (``WeightDropout`` / ``DropConnect``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import autodiff as ad
from ..core._array_api import array_namespace
from . import init as _init
from .module import Module, Parameter

__all__ = ["DropConnect", "Dropout", "WeightDropout"]


def _probability(p: Any, name: str = "p") -> float:
    """``p`` as a float drop probability in [0, 1): TypeError if not a real number, else ValueError."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1), got {p!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")
    return float(p)


def _keep_mask(gen: np.random.Generator, shape: tuple[int, ...], p: float, like: Any) -> Any:
    # Drawn with NumPy (reproducible on every library), then moved to the array's library.
    keep = gen.random(shape) >= p
    xp = array_namespace(like=like)
    return keep if isinstance(like, np.ndarray) else xp.asarray(keep)


class Dropout(Module):
    """Inverted dropout: in training, each entry is zeroed with probability ``p`` and the rest are
    scaled by ``1 / (1 - p)``; in evaluation mode the identity.

    .. math:: y = x \\odot m / (1 - p), \\quad m_i \\sim \\mathrm{Bernoulli}(1 - p)

    Parameters
    ----------
    p : float in [0, 1)
    rng, seed : optional
        Random source of the masks.
    """

    def __init__(self, p: float = 0.5, *, rng: Any = None, seed: int | None = None) -> None:
        super().__init__()
        self.p = _probability(p)
        self.rng = _init.as_rng(rng, seed)

    def forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            return x
        data = x.data if isinstance(x, ad.Tensor) else x
        xp = array_namespace(x=data)
        keep = xp.astype(_keep_mask(self.rng, tuple(data.shape), self.p, data), data.dtype)
        return ad.mul(x, keep / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WeightDropout(Module):
    """DropConnect (Wan et al. 2013): a fresh Bernoulli mask on a wrapped layer's weight at every
    training forward pass.

    A dropped entry becomes the weight's "no connection" value ``param.zero``: 0 for a linear layer
    (kept entries are then scaled by ``1 / (1 - p)``, inverted-dropout style, so that evaluation uses
    the weight as it is), the tropical zero ``-inf`` / ``+inf`` for max-plus / min-plus layers (no
    scaling: a max-plus weight is an offset, not a factor). In evaluation mode the layer runs
    unchanged.

    Parameters
    ----------
    layer : Module
        The wrapped layer; its parameter ``name`` is masked.
    p : float in [0, 1)
    name : str
        Which parameter (default ``"weight"``).
    rng, seed : optional

    Notes
    -----
    The masked weight is a tensor computed from the parameter (``where(mask, W, zero)``), so the
    gradient flows to the kept entries only; the layer's parameter itself is never overwritten.
    Pruned entries (``param.mask``) stay at ``zero`` anyway.

    Attributes
    ----------
    layer : Module
    """

    def __init__(
        self, layer: Module, p: float = 0.5, name: str = "weight", *, rng: Any = None, seed: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(layer, Module):
            raise TypeError(f"layer must be a Module, got {type(layer).__name__}")
        if not isinstance(layer._parameters.get(name), Parameter):
            raise ValueError(f"layer {type(layer).__name__} has no parameter {name!r}")
        self.layer = layer
        self.p = _probability(p)
        self.name = name
        self.rng = _init.as_rng(rng, seed)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or self.p == 0.0:
            return self.layer(*args, **kwargs)
        param = self.layer._parameters[self.name]
        xp = param.xp
        keep = _keep_mask(self.rng, param.shape, self.p, param.data)
        zero = param.zero
        if zero == 0.0:
            dropped = ad.where(keep, param, xp.zeros_like(param.data)) * (1.0 / (1.0 - self.p))
        else:
            dropped = ad.where(keep, param, xp.full_like(param.data, zero))
        # Run the layer with the masked tensor in the parameter's slot, then put the parameter back.
        params = self.layer._parameters
        params[self.name] = dropped
        try:
            return self.layer(*args, **kwargs)
        finally:
            params[self.name] = param

    def extra_repr(self) -> str:
        return f"p={self.p}, name={self.name!r}"


DropConnect = WeightDropout
