"""Geodesic layers: morphological reconstruction with a gradient (:func:`tropic.reconstruction`).

Defined once for both engines (:mod:`tropic.nn.layer`); ``tropic.torch.nn.Reconstruction`` is the
same class as a ``torch.nn.Module``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tropic

from ..core.checks import positive_int
from .layer import Layer

__all__ = ["Reconstruction"]


class Reconstruction(Layer):
    """Reconstruction by dilation (or erosion) of a seed under (above) a mask, per image.

    .. math:: R(\\text{seed}, \\text{mask}) = \\lim_k J_k, \\quad J_0 = \\text{seed}, \\quad
              J_{k+1} = \\min\\big(\\text{mask},\\; \\delta_S(J_k)\\big)

    where :math:`\\delta_S` is the flat dilation by the ``footprint`` over the last ``spatial`` axes
    (the others are batch and channel axes, never connected), and by erosion the dual. Every output
    equals one input value, a seed pixel or a mask pixel (its winner), and the gradient goes there
    (:func:`tropic.reconstruction_vjp`): a learnable seed such as ``x - h`` (a per-channel height
    ``h``, the h-dome / h-maxima transforms) learns through it.

    Parameters
    ----------
    method : {"dilation", "erosion"}
    spatial : int
        Number of trailing axes that are the image (1, 2, 3, ...).
    footprint : array-like of ``spatial`` dimensions, optional
        The neighbourhood (odd sizes, centred); default all ones of shape ``(3,) * spatial``.

    Examples
    --------
    >>> import numpy as np, tropic.autodiff as ad, tropic.nn as nn
    >>> x = ad.Tensor(np.array([[[[0.0, 3.0, 1.0, 4.0, 2.0, 0.0]]]]))   # (B, C, H, W)
    >>> h = ad.Tensor(np.array(1.0), requires_grad=True)              # a learnable height
    >>> base = nn.Reconstruction(spatial=2)(x - h, x)                 # the h-dome's base
    >>> base.numpy()
    array([[[[0., 2., 1., 3., 2., 0.]]]])
    >>> base.sum().backward(); h.grad         # 2 outputs are seed values (the rest are capped by x)
    array(-2.)
    """

    def __init__(
        self,
        method: str = "dilation",
        spatial: int = 2,
        footprint: Any = None,
        *,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        self._setup(dtype, device)
        if method not in ("dilation", "erosion"):
            raise ValueError(f"method must be 'dilation' or 'erosion', got {method!r}")
        self.method = method
        self.spatial = positive_int("spatial", spatial)
        shape = (3,) * self.spatial if footprint is None else np.shape(footprint)
        mask = np.ones(shape, bool) if footprint is None else np.asarray(footprint) != 0
        if mask.ndim != self.spatial or any(d % 2 == 0 for d in mask.shape):
            raise ValueError(
                f"footprint must have {self.spatial} dimensions of odd sizes (centred), got "
                f"shape {mask.shape}"
            )
        # Nested Python lists: the footprint reaches the operator as plain Python (torch.compile-able).
        self.footprint = mask.astype(int).tolist()

    def forward(self, seed: Any, mask: Any) -> Any:
        ndim = len(seed.shape)
        if ndim < self.spatial:
            raise ValueError(
                f"Reconstruction: seed must have at least spatial = {self.spatial} dimensions, got shape "
                f"{tuple(seed.shape)}"
            )
        footprint = self.footprint
        for _ in range(ndim - self.spatial):  # batch and channel axes: no neighbours along them
            footprint = [footprint]
        return tropic.reconstruction(seed, mask, method=self.method, footprint=footprint)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, spatial={self.spatial}"
