"""Linear layers: ``Linear`` (affine map), ``Flatten``, ``Identity``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import autodiff as ad
from ..core.checks import positive_int
from . import init as _init
from .module import Module, Parameter

__all__ = ["Flatten", "Identity", "Linear"]

_LINEAR_INITS = {
    "he_normal": _init.he_normal,
    "he_uniform": _init.he_uniform,
    "glorot_uniform": _init.glorot_uniform,
    "glorot_normal": _init.glorot_normal,
    "normal": _init.normal,
}


def linear_init(name: str, shape: tuple[int, ...], rng: np.random.Generator, dtype: Any) -> np.ndarray:
    """The named linear initialiser (a key of the table above) applied to ``shape``."""
    try:
        fn = _LINEAR_INITS[name]
    except (KeyError, TypeError):
        raise ValueError(f"init must be one of {sorted(_LINEAR_INITS)}, got {name!r}") from None
    return fn(shape, rng, dtype)


class Linear(Module):
    """Affine layer ``y = x W^T + b``.

    .. math:: y_{\\dots j} = \\sum_i x_{\\dots i} W_{ji} + b_j

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Learn ``b`` (initialised to 0).
    init : {"he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "normal"}
        Initialiser of ``W`` (out, in) from :mod:`tropic.nn.init`; default He normal.
    rng : numpy.random.Generator or int, optional
    seed : int, optional
        Alternative to ``rng``.
    dtype : floating dtype
        Default float32.

    Examples
    --------
    >>> import numpy as np
    >>> import tropic.nn as nn
    >>> layer = nn.Linear(3, 2, seed=0)
    >>> layer(np.ones((5, 3), dtype=np.float32)).shape
    (5, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str = "he_normal",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        gen = _init.as_rng(rng, seed)
        self.weight = Parameter(linear_init(init, (out_features, in_features), gen, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x: Any) -> ad.Tensor:
        y = ad.matmul(x, self.weight.T)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


class Flatten(Module):
    """Reshape ``(B, d1, d2, ...)`` to ``(B, d1 * d2 * ...)`` (axes from ``start_dim`` on are merged)."""

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        if not isinstance(start_dim, int) or isinstance(start_dim, bool) or start_dim < 0:
            raise ValueError(f"start_dim must be a non-negative int, got {start_dim!r}")
        self.start_dim = start_dim

    def forward(self, x: Any) -> ad.Tensor:
        shape = tuple(x.shape)
        if len(shape) < self.start_dim:
            raise ValueError(f"x must have at least {self.start_dim} dimensions, got shape {shape}")
        return ad.reshape(x, shape[: self.start_dim] + (math.prod(shape[self.start_dim :]),))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"


class Unflatten(Module):
    """Reshape ``(B, d)`` to ``(B, *shape)`` with ``prod(shape) == d``: flattened images back to
    ``(C, H, W)`` for a convolutional network (``tropic train`` feeds flattened inputs)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        if not (
            isinstance(shape, (tuple, list))
            and shape
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        ):
            raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
        self.shape = tuple(shape)

    def forward(self, x: Any) -> ad.Tensor:
        if x.ndim != 2 or x.shape[1] != math.prod(self.shape):
            raise ValueError(f"x must have shape (B, {math.prod(self.shape)}), got {tuple(x.shape)}")
        return ad.reshape(x, (x.shape[0], *self.shape))

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Identity(Module):
    """``y = x``."""

    def forward(self, x: Any) -> Any:
        return x
