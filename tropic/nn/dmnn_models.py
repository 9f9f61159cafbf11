"""The architectures of the deep-morphological-network and sparse-hybrid papers, as functions that
return a :class:`~tropic.nn.Sequential`.

MLP-type networks (Fotopoulos & Maragos 2025; defaults 784 -> 256 -> 4 blocks of 256 -> 10):
:func:`mlp`, :func:`maxout_mlp`, :func:`mp`, :func:`act_mp`, :func:`dep`, :func:`act_dep`,
:func:`mpm`, :func:`rmpm` (``weight_dropout=0.3`` for "RMPM + weight dropout"), :func:`mpm_svd`,
:func:`hybrid_mlp`. Classification heads (Fotopoulos, Garoufis & Maragos 2025): :func:`hybrid_head`
and the baselines :func:`relu_head` and :func:`maxout_head` with the same widths.

Every function takes ``rng`` or ``seed``; one generator initialises the layers in order (and then
draws the weight-dropout masks), so a seed fixes the network.

Examples
--------
>>> import numpy as np
>>> from tropic.nn.dmnn_models import rmpm
>>> net = rmpm(64, 32, 10, blocks=2, weight_dropout=0.3, seed=0)
>>> net(np.zeros((5, 64), dtype=np.float32)).shape
(5, 10)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import autodiff as ad
from ..core.checks import positive_int
from . import init as _init
from .activations import ReLU
from .dmnn import DEP, MPM, DiagonalActivation, MPMResidual, SVDActivation
from .linear import Linear
from .module import Module, Sequential
from .normalization import BatchNorm1d
from .tropical import Maxout, MaxPlus

__all__ = [
    "act_dep",
    "act_mp",
    "dep",
    "hybrid_head",
    "hybrid_mlp",
    "maxout_head",
    "maxout_mlp",
    "mlp",
    "mp",
    "mpm",
    "mpm_svd",
    "relu_head",
    "rmpm",
]


def _sizes(in_features: int, hidden: int, out_features: int, blocks: int) -> tuple[int, int, int, int]:
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 0:
        raise ValueError(f"blocks must be a non-negative int, got {blocks!r}")
    return (
        positive_int("in_features", in_features),
        positive_int("hidden", hidden),
        positive_int("out_features", out_features),
        int(blocks),
    )


def mlp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """ReLU baseline: ``Linear(in, h) -> ReLU -> blocks x [Linear(h, h) -> ReLU] -> Linear(h, out)``."""
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    gen = _init.as_rng(rng, seed)
    layers: list[Module] = [Linear(n_in, h, rng=gen, dtype=dtype), ReLU()]
    for _ in range(k):
        layers += [Linear(h, h, rng=gen, dtype=dtype), ReLU()]
    return Sequential(*layers, Linear(h, n_out, rng=gen, dtype=dtype))


def maxout_mlp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    pieces: int = 2,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Maxout baseline: ``Maxout(in, h, pieces) -> blocks x Maxout(h, h, pieces) -> Linear(h, out)``
    (each :class:`~tropic.nn.Maxout` is a linear map to ``h * pieces`` features and a group max)."""
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    gen = _init.as_rng(rng, seed)
    layers: list[Module] = [Maxout(n_in, h, pieces, rng=gen, dtype=dtype)]
    layers += [Maxout(h, h, pieces, rng=gen, dtype=dtype) for _ in range(k)]
    return Sequential(*layers, Linear(h, n_out, rng=gen, dtype=dtype))


def _shifted_maxplus(n_in: int, n_out: int, gen: np.random.Generator, dtype: Any) -> MaxPlus:
    # The paper's pure max-plus init W = 3 N(0, 1) - 5 (a negative shift keeps the bias in play).
    layer = MaxPlus(n_in, n_out, rng=gen, dtype=dtype)
    layer.weight.data = _init.normal((n_out, n_in), gen, dtype, mean=-5.0, std=3.0)
    return layer


def mp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Pure max-plus stack (the paper's negative result: it does not train).

    ``MaxPlus(in, h) -> blocks x MaxPlus(h, h) -> MaxPlus(h, out)``, every weight
    ``W = 3 N(0, 1) - 5``, biases ``N(0, 1)``. The network is non-decreasing in every input.
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    gen = _init.as_rng(rng, seed)
    layers = [_shifted_maxplus(n_in, h, gen, dtype)]
    layers += [_shifted_maxplus(h, h, gen, dtype) for _ in range(k)]
    return Sequential(*layers, _shifted_maxplus(h, n_out, gen, dtype))


def act_mp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Act-MP: max-plus layers (init as :func:`mp`) with a :class:`DiagonalActivation` after each
    hidden one: ``MaxPlus -> Diag -> blocks x [MaxPlus -> Diag] -> MaxPlus``."""
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    gen = _init.as_rng(rng, seed)
    layers: list[Module] = [
        _shifted_maxplus(n_in, h, gen, dtype),
        DiagonalActivation(h, rng=gen, dtype=dtype),
    ]
    for _ in range(k):
        layers += [_shifted_maxplus(h, h, gen, dtype), DiagonalActivation(h, rng=gen, dtype=dtype)]
    return Sequential(*layers, _shifted_maxplus(h, n_out, gen, dtype))


def _dep_stack(n_in, h, n_out, k, mix, activation, gen, dtype) -> Sequential:
    layers: list[Module] = []
    for a, b in [(n_in, h)] + [(h, h)] * k:
        layers.append(DEP(a, b, mix=mix, rng=gen, dtype=dtype))
        if activation:
            layers.append(DiagonalActivation(b, rng=gen, dtype=dtype))
    return Sequential(*layers, DEP(h, n_out, mix=mix, rng=gen, dtype=dtype))


def dep(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    mix: str = "learned",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """DEP network: ``DEP(in, h) -> blocks x DEP(h, h) -> DEP(h, out)`` (see :class:`DEP`)."""
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    return _dep_stack(n_in, h, n_out, k, mix, False, _init.as_rng(rng, seed), dtype)


def act_dep(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    mix: str = "learned",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Act-DEP: ``DEP -> Diag -> blocks x [DEP -> Diag] -> DEP`` with :class:`DiagonalActivation`."""
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    return _dep_stack(n_in, h, n_out, k, mix, True, _init.as_rng(rng, seed), dtype)


def _mpm_stack(n_in, h, n_out, k, weight_dropout, activation, gen, dtype) -> Sequential:
    # First MPM layer W = 0, later ones N(0, 1) (the paper's initialisation).
    def act() -> Module:
        if activation == "svd":
            return SVDActivation(h, rng=gen, dtype=dtype)
        return DiagonalActivation(h, rng=gen, dtype=dtype)

    kw = dict(weight_dropout=weight_dropout, rng=gen, dtype=dtype)
    layers: list[Module] = [MPM(n_in, h, init="zeros", **kw), act()]
    for _ in range(k):
        if activation == "residual":
            layers.append(MPMResidual(h, **kw))
        else:
            layers += [MPM(h, h, **kw), act()]
    return Sequential(*layers, MPM(h, n_out, **kw))


def mpm(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    weight_dropout: float = 0.0,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """MPM network: ``MPM(in, h) -> Diag -> blocks x [MPM(h, h) -> Diag] -> MPM(h, out)``.

    The first :class:`MPM` starts at ``W = 0``, the others at ``N(0, 1)``; ``Diag`` is
    :class:`DiagonalActivation`; ``weight_dropout`` applies to every MPM layer.
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    return _mpm_stack(n_in, h, n_out, k, weight_dropout, "diagonal", _init.as_rng(rng, seed), dtype)


def rmpm(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    weight_dropout: float = 0.0,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Residual MPM network: ``MPM(in, h) -> Diag -> blocks x MPMResidual(h) -> MPM(h, out)``.

    Each hidden block is ``x + a ⊙ MPM(x)`` (:class:`MPMResidual`). ``weight_dropout=0.3`` gives the
    paper's best model, "RMPM + weight dropout".
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    return _mpm_stack(n_in, h, n_out, k, weight_dropout, "residual", _init.as_rng(rng, seed), dtype)


def mpm_svd(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    weight_dropout: float = 0.0,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """MPM-SVD: :func:`mpm` with :class:`SVDActivation` in place of the diagonal activation."""
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    return _mpm_stack(n_in, h, n_out, k, weight_dropout, "svd", _init.as_rng(rng, seed), dtype)


def hybrid_mlp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    weight_dropout: float = 0.0,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Hybrid MLP: ``Linear(in, h) -> MPM -> blocks x [Linear(h, h) -> MPM] -> Linear(h, out)``.

    The :class:`MPM` layers (``h -> h``, ``W ~ N(0, 1)``) are the only non-linearity. The paper finds
    it converges fastest with large batches and fails with small ones (batch 64 on MNIST).
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    gen = _init.as_rng(rng, seed)
    layers: list[Module] = []
    for a in [n_in] + [h] * k:
        layers += [
            Linear(a, h, rng=gen, dtype=dtype),
            MPM(h, h, weight_dropout=weight_dropout, rng=gen, dtype=dtype),
        ]
    return Sequential(*layers, Linear(h, n_out, rng=gen, dtype=dtype))


def hybrid_head(
    in_features: int,
    hidden: int,
    out_features: int,
    *,
    init: str = "sparse",
    count: int | None = None,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Sparse-hybrid classification head: ``Linear(in, h, no bias) -> BatchNorm1d(h) -> MaxPlus(h, h)
    -> Linear(h, out)``.

    .. math:: z = L_2\\big(\\mathrm{MaxPlus}(\\mathrm{BN}(L_1 x))\\big)

    Parameters
    ----------
    in_features, hidden, out_features : int
    init : {"sparse", "dense"}
        The max-plus weight: ``"sparse"`` keeps exactly ``count`` ``N(0, 1)`` entries and sets the
        rest to ``-inf`` ("Sparse-Morph"); ``"dense"`` is ``N(0, 1)`` everywhere.
    count : int, optional
        Finite entries of the sparse layer (exactly); default ``2 * hidden`` (about two finite inputs
        per neuron: the paper's ``K = 1024`` for ``hidden = 512``). Only with ``init="sparse"``.
    rng, seed, dtype
    """
    n_in, h, n_out, _ = _sizes(in_features, hidden, out_features, 0)
    if init == "sparse":
        count = 2 * h if count is None else count
    elif init == "dense":
        if count is not None:
            raise ValueError("count is for init='sparse' only")
    else:
        raise ValueError(f"init must be 'sparse' or 'dense', got {init!r}")
    gen = _init.as_rng(rng, seed)
    return Sequential(
        Linear(n_in, h, bias=False, rng=gen, dtype=dtype),
        BatchNorm1d(h, dtype=dtype),
        MaxPlus(h, h, init=init, count=count, rng=gen, dtype=dtype),
        Linear(h, n_out, rng=gen, dtype=dtype),
    )


def relu_head(
    in_features: int,
    hidden: int,
    out_features: int,
    *,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """ReLU baseline of :func:`hybrid_head` with the same widths and normalisation:
    ``Linear(in, h, no bias) -> BatchNorm1d(h) -> ReLU -> Linear(h, out)``."""
    n_in, h, n_out, _ = _sizes(in_features, hidden, out_features, 0)
    gen = _init.as_rng(rng, seed)
    return Sequential(
        Linear(n_in, h, bias=False, rng=gen, dtype=dtype),
        BatchNorm1d(h, dtype=dtype),
        ReLU(),
        Linear(h, n_out, rng=gen, dtype=dtype),
    )


class _GroupMax(Module):
    """Max over consecutive groups of ``pieces`` features (the fixed max-plus layer of maxout)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = positive_int("pieces", pieces)

    def forward(self, x: Any) -> ad.Tensor:
        return ad.maxout(x, self.pieces, axis=-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def maxout_head(
    in_features: int,
    hidden: int,
    out_features: int,
    *,
    pieces: int = 2,
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Maxout baseline of :func:`hybrid_head` with the same first linear layer:
    ``Linear(in, h, no bias) -> BatchNorm1d(h) -> group max (pieces) -> Linear(h / pieces, out)``.

    The group max is the max-plus layer ``h -> h / pieces`` with fixed weights (0 inside a group,
    ``-inf`` elsewhere), i.e. maxout; ``hidden`` must be a multiple of ``pieces``.
    """
    n_in, h, n_out, _ = _sizes(in_features, hidden, out_features, 0)
    pieces = positive_int("pieces", pieces)
    if h % pieces:
        raise ValueError(f"hidden must be a multiple of pieces, got hidden={h}, pieces={pieces}")
    gen = _init.as_rng(rng, seed)
    return Sequential(
        Linear(n_in, h, bias=False, rng=gen, dtype=dtype),
        BatchNorm1d(h, dtype=dtype),
        _GroupMax(pieces),
        Linear(h // pieces, n_out, rng=gen, dtype=dtype),
    )
