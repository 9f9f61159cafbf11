"""Dense tropical layers: ``MaxPlus``, ``MinPlus``, ``DilationErosion``, ``Maxout``.

Each is defined once for both engines (:mod:`tropic.nn.layer`); ``tropic.torch.nn`` has the same
classes as ``torch.nn.Module`` s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tropic

from ..core.checks import positive_int
from . import init as _init
from .layer import Layer, require_features

__all__ = ["DilationErosion", "MaxPlus", "Maxout", "MinPlus"]


def tropical_weight(
    shape: tuple[int, ...],
    init: str,
    gen: np.random.Generator,
    dtype: Any,
    p: float | None,
    count: int | None,
    zero: float,
) -> np.ndarray:
    """``"dense"``: N(0, 1); ``"sparse"``: :func:`~tropic.nn.init.sparse_maxplus` with zero ``zero``."""
    if init == "dense":
        if p is not None or count is not None:
            raise ValueError("p and count are for init='sparse' only")
        return _init.normal(shape, gen, dtype)
    if init == "sparse":
        return _init.sparse_maxplus(shape, gen, p=p, count=count, dtype=dtype, zero=zero)
    raise ValueError(f"init must be 'dense' or 'sparse', got {init!r}")


class _TropicalDense(Layer):
    _zero = -np.inf

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
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
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        self.init = init
        gen = _init.as_rng(rng, seed)
        w = tropical_weight((out_features, in_features), init, gen, dtype, p, count, self._zero)
        self.weight = self.parameter(w, zero=self._zero)
        self.bias = (
            self.parameter(_init.normal((out_features,), gen, dtype), zero=self._zero) if bias else None
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, init={self.init!r}"
        )


class MaxPlus(_TropicalDense):
    """Dense max-plus layer with the bias as one more candidate inside the max.

    .. math:: y_{\\dots j} = \\max\\big(b_j,\\; \\max_i \\; x_{\\dots i} + W_{ji}\\big)

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Learn ``b`` (``N(0, 1)`` at start). Without it a neuron whose weights are all ``-inf``
        outputs ``-inf``.
    init : {"dense", "sparse"}
        ``"dense"``: ``W ~ N(0, 1)`` (no fan-in scaling, as in the paper). ``"sparse"``: each entry
        kept with probability ``p``, or exactly ``count`` entries kept (drawn uniformly), the rest
        exactly ``-inf``; see :func:`tropic.nn.init.sparse_maxplus`. For the paper's ``K = 1024`` in
        a 512 x 512 layer use ``count=1024``.
    p : float, optional
    count : int, optional
        Sparsity of ``init="sparse"`` (exactly one): the keep probability, or the exact number of
        finite weights.
    rng, seed : optional
        Random source of the initialisation (weights first, then bias).
    dtype : floating dtype, optional
        NumPy or torch dtype; default float32 (torch: its default dtype; bfloat16 values are drawn
        in float32, then rounded once).
    device : optional
        torch's device (``tropic.nn``: the CPU).

    Notes
    -----
    ``W`` has the (out, in) layout of :class:`Linear`. An entry that is ``-inf`` never wins the max, so
    its gradient is exactly 0 and optimisers leave it at ``-inf``. On ties between the bias and a
    product term the gradient goes to the bias.

    Examples
    --------
    >>> import numpy as np
    >>> import tropic.nn as nn
    >>> layer = nn.MaxPlus(2, 1, seed=0)
    >>> layer.weight.data[...] = [[0.0, -1.0]]
    >>> layer.bias.data[...] = [0.5]
    >>> layer(np.array([[0.0, 3.0]], dtype=np.float32)).numpy()
    array([[2.]], dtype=float32)
    """

    _zero = -np.inf

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.in_features)
        return tropic.maxplus_matmul(x, self.weight.T, bias=self.bias)


class MinPlus(_TropicalDense):
    """Dense min-plus layer, the dual of :class:`MaxPlus` (tropical zero ``+inf``).

    .. math:: y_{\\dots j} = \\min\\big(b_j,\\; \\min_i \\; x_{\\dots i} + W_{ji}\\big)

    Parameters as in :class:`MaxPlus`; ``init="sparse"`` sets the entries that are not kept to
    ``+inf``.
    """

    _zero = np.inf

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.in_features)
        return tropic.minplus_matmul(x, self.weight.T, bias=self.bias)


class DilationErosion(Layer):
    """Dilation-erosion layer of dense morphological networks (Mondal et al., DenMo-Net).

    .. math:: d_{\\dots j} = \\max\\big(b^d_j, \\max_i x_{\\dots i} + D_{ji}\\big), \\qquad
              e_{\\dots k} = \\min\\big(b^e_k, \\min_i x_{\\dots i} + E_{ki}\\big)

    The output is the concatenation ``[d, e]`` on the last axis (``combine="concat"``, default:
    DenMo-Net feeds both kinds of neurons to a following linear combination layer) or the sum
    ``d + e`` (``combine="sum"``, needs ``n_dilation == n_erosion``). The erosion is written with
    ``+E`` (a min-plus product), i.e. ``E = -s`` for the structuring element ``s`` of the classical
    form ``min_i x_i - s_ji``.

    Parameters
    ----------
    in_features : int
    n_dilation, n_erosion : int
        Number of dilation and erosion neurons (``n_erosion`` defaults to ``n_dilation``).
    combine : {"concat", "sum"}
    bias : bool
    init, p, count, rng, seed, dtype, device
        As in :class:`MaxPlus`, for both parts (the dilation weights are drawn first).

    Attributes
    ----------
    dilation : MaxPlus
    erosion : MinPlus
    """

    def __init__(
        self,
        in_features: int,
        n_dilation: int,
        n_erosion: int | None = None,
        *,
        combine: str = "concat",
        bias: bool = True,
        init: str = "dense",
        p: float | None = None,
        count: int | None = None,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        self._setup(dtype, device)
        n_erosion = n_dilation if n_erosion is None else n_erosion
        if combine not in ("concat", "sum"):
            raise ValueError(f"combine must be 'concat' or 'sum', got {combine!r}")
        if combine == "sum" and n_dilation != n_erosion:
            raise ValueError(f"combine='sum' needs n_dilation == n_erosion, got {n_dilation} and {n_erosion}")
        self.combine = combine
        gen = _init.as_rng(rng, seed)
        kw = dict(bias=bias, init=init, p=p, count=count, rng=gen, dtype=dtype, device=device)
        self.dilation = self.engine_layer(MaxPlus)(in_features, n_dilation, **kw)
        self.erosion = self.engine_layer(MinPlus)(in_features, n_erosion, **kw)

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.dilation.in_features)
        d, e = self.dilation(x), self.erosion(x)
        if self.combine == "sum":
            return d + e
        return self.F.concatenate([d, e], axis=-1)

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}"


class Maxout(Layer):
    """Maxout unit: a linear map to ``out * pieces`` features, then the max over each group of ``pieces``.

    .. math:: y_{\\dots j} = \\max_{0 \\le p < P} \\big(x W^T + c\\big)_{\\dots,\\, jP + p}

    (consecutive groups, as :func:`tropic.maxout`). Equivalent to a max-plus layer with fixed
    weights 0 / ``-inf`` after a linear layer of width ``out * pieces``.

    Parameters
    ----------
    in_features, out_features : int
    pieces : int
        Group size ``P`` >= 1.
    bias : bool
    init, rng, seed, dtype, device
        As in :class:`Linear` (default init ``"glorot_uniform"``).

    Attributes
    ----------
    linear : Linear
        ``torch.nn.Linear`` in ``tropic.torch.nn``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        pieces: int,
        bias: bool = True,
        *,
        init: str = "glorot_uniform",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.pieces = positive_int("pieces", pieces)
        width = positive_int("out_features", out_features) * self.pieces
        self.linear = self.linear_layer(in_features, width, bias, init, _init.as_rng(rng, seed), dtype)

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.linear.in_features)
        return tropic.maxout(self.linear(x), self.pieces, axis=-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
