"""The architectures of the deep-morphological-network and sparse-hybrid papers, as functions that
return a :class:`~tropic.nn.Sequential`.

MLP-type networks (Fotopoulos & Maragos 2025; defaults 784 -> 256 -> 4 blocks of 256 -> 10):
:func:`mlp`, :func:`maxout_mlp`, :func:`mp`, :func:`act_mp`, :func:`dep`, :func:`act_dep`,
:func:`mpm`, :func:`rmpm` (``weight_dropout=0.3`` for "RMPM + weight dropout"), :func:`mpm_svd`,
:func:`hybrid_mlp`, and the reference code's min-max-plus comparisons :func:`min_max_plus` and
:func:`min_max_plus_neg`. Classification heads (Fotopoulos, Garoufis & Maragos 2025): :func:`hybrid_head`
and the baselines :func:`relu_head` and :func:`maxout_head` with the same widths.

Every function takes ``rng`` or ``seed``; one generator initialises the layers in order (and then
draws the weight-dropout masks), so a seed fixes the network.

The paper's networks (:func:`mp` to :func:`min_max_plus_neg`) also take ``preset``: ``"tropic"`` (default)
or ``"reference"``, the initialisation of the paper's reference code
(``kostfoto/Morphological-Networks-as-Universal-Approximators``, ``mainMNNs.ipynb``), drawn from
NumPy (the same distributions, not torch's random stream). Each function's docstring gives both.
tropic's are kept: in ``tropic reproduce dmnn`` (digits, 3 seeds, docs/reproductions.md) the
reference's change no verdict and measure no better (MPM 83.5% against 84.1%, RMPM 88.5% against
89.3%, MP 11.1% against 12.1%).

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
from ..core.checks import one_of, positive_int
from . import init as _init
from .activations import ReLU
from .dmnn import DEP, MPM, PRESETS, DiagonalActivation, MPMResidual, Negator, SVDActivation
from .linear import Linear
from .module import Module, Sequential
from .normalization import BatchNorm1d
from .tropical import Maxout, MaxPlus, MinPlus

__all__ = [
    "act_dep",
    "act_mp",
    "dep",
    "hybrid_head",
    "hybrid_mlp",
    "maxout_head",
    "maxout_mlp",
    "min_max_plus",
    "min_max_plus_neg",
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


def _shifted_maxplus(
    n_in: int, n_out: int, gen: np.random.Generator, dtype: Any, constant: float | None = None
) -> MaxPlus:
    # The paper's pure max-plus init W = 3 N(0, 1) - 5 (a negative shift keeps the bias in play), or
    # W = constant (the reference code's first layer, -1); the bias stays MaxPlus's N(0, 1).
    layer = MaxPlus(n_in, n_out, rng=gen, dtype=dtype)
    if constant is None:
        layer.weight.data = _init.normal((n_out, n_in), gen, dtype, mean=-5.0, std=3.0)
    else:
        layer.weight.data = _init.constant((n_out, n_in), constant, dtype)
    return layer


def _first_maxplus(n_in: int, n_out: int, gen: np.random.Generator, dtype: Any, preset: str) -> MaxPlus:
    return _shifted_maxplus(n_in, n_out, gen, dtype, None if preset == "tropic" else -1.0)


def mp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Pure max-plus stack (the paper's negative result: it does not train).

    ``MaxPlus(in, h) -> blocks x MaxPlus(h, h) -> MaxPlus(h, out)``; the network is non-decreasing
    in every input.

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    preset : {"tropic", "reference"}
        Initialisation. Every bias ``b ~ N(0, 1)``, every later weight ``W = 3 N(0, 1) - 5``; the
        first layer's weight is ``W = 3 N(0, 1) - 5`` (tropic) or ``W = -1`` everywhere
        (reference); tropic's is kept for compatibility; ``preset='reference'`` gives the paper
        code's.
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    gen = _init.as_rng(rng, seed)
    layers = [_first_maxplus(n_in, h, gen, dtype, preset)]
    layers += [_shifted_maxplus(h, h, gen, dtype) for _ in range(k)]
    return Sequential(*layers, _shifted_maxplus(h, n_out, gen, dtype))


def act_mp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Act-MP: max-plus layers (init as :func:`mp`) with a :class:`DiagonalActivation` after each
    hidden one: ``MaxPlus -> Diag -> blocks x [MaxPlus -> Diag] -> MaxPlus``.

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    preset : {"tropic", "reference"}
        The max-plus layers as :func:`mp` (first weight ``3 N(0, 1) - 5`` or ``-1``); the diagonal
        activations ``a ~ N(0, 1) / sqrt(12)`` (tropic) or ``N(0, 1) / 3.46`` (reference); tropic's
        are kept for compatibility; ``preset='reference'`` gives the paper code's.
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    gen = _init.as_rng(rng, seed)
    layers: list[Module] = [
        _first_maxplus(n_in, h, gen, dtype, preset),
        DiagonalActivation(h, preset=preset, rng=gen, dtype=dtype),
    ]
    for _ in range(k):
        layers += [
            _shifted_maxplus(h, h, gen, dtype),
            DiagonalActivation(h, preset=preset, rng=gen, dtype=dtype),
        ]
    return Sequential(*layers, _shifted_maxplus(h, n_out, gen, dtype))


def _dep_stack(
    n_in: int,
    h: int,
    n_out: int,
    k: int,
    mix: str | float,
    activation: bool,
    preset: str,
    gen: np.random.Generator,
    dtype: Any,
) -> Sequential:
    # The reference code starts its first DEP layer at W = W' = 0, the others at N(0, 1).
    first_init = "normal" if preset == "tropic" else "zeros"
    layers: list[Module] = []
    for i, (a, b) in enumerate([(n_in, h)] + [(h, h)] * k):
        layers.append(DEP(a, b, init=first_init if i == 0 else "normal", mix=mix, rng=gen, dtype=dtype))
        if activation:
            layers.append(DiagonalActivation(b, preset=preset, rng=gen, dtype=dtype))
    return Sequential(*layers, DEP(h, n_out, mix=mix, rng=gen, dtype=dtype))


def dep(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    mix: str | float = "learned",
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """DEP network: ``DEP(in, h) -> blocks x DEP(h, h) -> DEP(h, out)`` (see :class:`DEP`).

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    mix : {"learned", "fixed"} or float in [0, 1]
        The mix ``lambda`` of every :class:`DEP`: learned from ``U(0, 1)``, fixed at ``1/2``, or
        fixed at the number given (the reference code runs DEP learned and at 1/2).
    preset : {"tropic", "reference"}
        Initialisation (no biases). Every later layer ``W, W' ~ N(0, 1)``; the first layer
        ``W, W' ~ N(0, 1)`` (tropic) or ``W = W' = 0`` (reference); tropic's is kept for
        compatibility; ``preset='reference'`` gives the paper code's.
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    return _dep_stack(n_in, h, n_out, k, mix, False, preset, _init.as_rng(rng, seed), dtype)


def act_dep(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    mix: str | float = "learned",
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Act-DEP: ``DEP -> Diag -> blocks x [DEP -> Diag] -> DEP`` with :class:`DiagonalActivation`.

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    mix : {"learned", "fixed"} or float in [0, 1]
        As :func:`dep` (the reference code runs Act-DEP learned, at 1/2 and at ``mix=0.75``).
    preset : {"tropic", "reference"}
        Initialisation (no biases). Every later layer ``W, W' ~ N(0, 1)``; the first layer
        ``W, W' ~ N(0, 1)`` (tropic) or ``W = W' = 0`` (reference); the diagonal activations
        ``a ~ N(0, 1) / sqrt(12)`` (tropic) or ``N(0, 1) / 3.46`` (reference); tropic's are kept
        for compatibility; ``preset='reference'`` gives the paper code's.
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    return _dep_stack(n_in, h, n_out, k, mix, True, preset, _init.as_rng(rng, seed), dtype)


def _mpm_stack(
    n_in: int,
    h: int,
    n_out: int,
    k: int,
    weight_dropout: float,
    activation: str,
    preset: str,
    gen: np.random.Generator,
    dtype: Any,
) -> Sequential:
    # First MPM layer W = 0, later ones N(0, 1) (the paper's initialisation, both presets).
    def act() -> Module:
        if activation == "svd":
            return SVDActivation(h, preset=preset, rng=gen, dtype=dtype)
        return DiagonalActivation(h, preset=preset, rng=gen, dtype=dtype)

    kw = dict(weight_dropout=weight_dropout, rng=gen, dtype=dtype)
    layers: list[Module] = [MPM(n_in, h, init="zeros", **kw), act()]
    for _ in range(k):
        if activation == "residual":
            layers.append(MPMResidual(h, preset=preset, **kw))
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
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """MPM network: ``MPM(in, h) -> Diag -> blocks x [MPM(h, h) -> Diag] -> MPM(h, out)``.

    ``Diag`` is :class:`DiagonalActivation`; ``weight_dropout`` applies to every MPM layer.

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    weight_dropout : float in [0, 1)
    preset : {"tropic", "reference"}
        Initialisation. Both presets: the first :class:`MPM` ``W = 0``, the others ``W ~ N(0, 1)``,
        every bias ``b, b' ~ N(0, 1)``. The diagonal activations ``a ~ N(0, 1) / sqrt(12)``
        (tropic) or ``N(0, 1) / 3.46`` (reference); tropic's is kept for compatibility;
        ``preset='reference'`` gives the paper code's.
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    return _mpm_stack(n_in, h, n_out, k, weight_dropout, "diagonal", preset, _init.as_rng(rng, seed), dtype)


def rmpm(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    weight_dropout: float = 0.0,
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Residual MPM network: ``MPM(in, h) -> Diag -> blocks x MPMResidual(h) -> MPM(h, out)``.

    Each hidden block is ``x + a ⊙ MPM(x)`` (:class:`MPMResidual`). ``weight_dropout=0.3`` gives the
    paper's best model, "RMPM + weight dropout".

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    weight_dropout : float in [0, 1)
    preset : {"tropic", "reference"}
        Initialisation as :func:`mpm` (the residual scales ``a`` are its diagonal activations).
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    return _mpm_stack(n_in, h, n_out, k, weight_dropout, "residual", preset, _init.as_rng(rng, seed), dtype)


def mpm_svd(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    weight_dropout: float = 0.0,
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """MPM-SVD: :func:`mpm` with :class:`SVDActivation` in place of the diagonal activation.

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    weight_dropout : float in [0, 1)
    preset : {"tropic", "reference"}
        Initialisation. The :class:`MPM` layers as :func:`mpm`. Each activation is the SVD of
        ``M_0 ~ N(0, 2 / h)`` (tropic's :class:`~tropic.nn.Linear` default, He normal) or
        ``M_0 ~ U(-1/sqrt(h), 1/sqrt(h))`` (reference: torch's ``nn.Linear`` default), i.e.
        singular values about ``sqrt(6) = 2.45`` times larger in tropic's; tropic's is kept for
        compatibility; ``preset='reference'`` gives the paper code's.
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    return _mpm_stack(n_in, h, n_out, k, weight_dropout, "svd", preset, _init.as_rng(rng, seed), dtype)


def _min_max_stack(
    n_in: int,
    h: int,
    n_out: int,
    k: int,
    negate: bool,
    preset: str,
    gen: np.random.Generator,
    dtype: Any,
) -> Sequential:
    # Both presets: every max-plus and min-plus weight N(0, 1) (MaxPlus/MinPlus "dense"), no biases.
    layers: list[Module] = [DiagonalActivation(n_in, preset=preset, rng=gen, dtype=dtype)]
    for i, a in enumerate([n_in] + [h] * (k + 1)):
        if negate:
            layers.append(Negator(a, dtype=dtype))
        layers += [
            MaxPlus(2 * a if negate else a, h, bias=False, rng=gen, dtype=dtype),
            MinPlus(h, n_out if i == k + 1 else h, bias=False, rng=gen, dtype=dtype),
        ]
    return Sequential(*layers)


def min_max_plus(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Min-max-plus network: a diagonal activation on the input, then ``blocks + 2`` pairs of a
    max-plus and a min-plus layer without biases and with nothing between them.

    ``Diag(in) -> [MaxPlus(in, h) -> MinPlus(h, h)] -> blocks x [MaxPlus(h, h) -> MinPlus(h, h)]
    -> [MaxPlus(h, h) -> MinPlus(h, out)]``: with ``x^{(0)} = a ⊙ input``, pair ``l`` computes

    .. math:: u^{(l)}_j = \\max_i \\big(x^{(l)}_i + W^{(l)}_{ji}\\big), \\qquad
              x^{(l+1)}_k = \\min_j \\big(u^{(l)}_j + V^{(l)}_{kj}\\big)

    The reference code's comparison for MPM (``MinMaxPlus``): the only sign change is the diagonal
    activation on the input, so the network is monotone in each input (non-decreasing where
    ``a_i > 0``, non-increasing where ``a_i < 0``). With the defaults it has 859,408 parameters, the
    count the reference notebook prints.

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    preset : {"tropic", "reference"}
        Initialisation. Both presets: every max-plus and min-plus weight ``N(0, 1)``
        (:class:`~tropic.nn.MaxPlus` / :class:`~tropic.nn.MinPlus` ``init="dense"``,
        ``bias=False``). The input's diagonal activation ``a ~ N(0, 1) / sqrt(12)`` (tropic) or
        ``N(0, 1) / 3.46`` (reference); tropic's is kept for consistency with :func:`act_mp` and
        :func:`mpm`; ``preset='reference'`` gives the paper code's.
    rng, seed, dtype
        One generator draws ``a``, then the weights layer by layer.

    Notes
    -----
    In the reference repository's last version the class's first pair is declared as
    ``MaxPlus(2 in, h) -> MinPlus(2 h, h)`` (copied from the negated variant) although nothing
    doubles its input, so it cannot run; the notebook's saved run (859,408 parameters) used the
    earlier, consistent ``MaxPlus(in, h) -> MinPlus(h, h)``, which is what is built here.
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    return _min_max_stack(n_in, h, n_out, k, False, preset, _init.as_rng(rng, seed), dtype)


def min_max_plus_neg(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Min-max-plus network with negation: as :func:`min_max_plus`, with a :class:`Negator`
    (``[x, -x]``) before every max-plus layer, which therefore has twice the inputs.

    ``Diag(in) -> [Neg -> MaxPlus(2 in, h) -> MinPlus(h, h)] -> blocks x [Neg -> MaxPlus(2 h, h) ->
    MinPlus(h, h)] -> [Neg -> MaxPlus(2 h, h) -> MinPlus(h, out)]``: with ``x^{(0)} = a ⊙ input`` (``n``
    features), pair ``l`` computes

    .. math:: u^{(l)}_j = \\max\\Big(\\max_i \\big(x^{(l)}_i + W^{(l)}_{ji}\\big),\\;
              \\max_i \\big(-x^{(l)}_i + W^{(l)}_{j,n+i}\\big)\\Big), \\qquad
              x^{(l+1)}_k = \\min_j \\big(u^{(l)}_j + V^{(l)}_{kj}\\big)

    The reference code's ``MinMaxPlus_neg``: the negation gives every pair a sign change, as the
    "linear" activations do in MPM. With the defaults it has 1,387,792 parameters, the count the
    reference notebook prints.

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    preset : {"tropic", "reference"}
        Initialisation as :func:`min_max_plus`: every weight ``N(0, 1)``, no biases; the input's
        diagonal activation ``a ~ N(0, 1) / sqrt(12)`` (tropic) or ``N(0, 1) / 3.46``
        (reference).
    rng, seed, dtype
        One generator draws ``a``, then the weights layer by layer.
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    return _min_max_stack(n_in, h, n_out, k, True, preset, _init.as_rng(rng, seed), dtype)


def _linear(n_in: int, n_out: int, gen: np.random.Generator, dtype: Any, preset: str) -> Linear:
    layer = Linear(n_in, n_out, rng=gen, dtype=dtype)
    if preset == "reference":  # torch's nn.Linear default: W and b ~ U(-1/sqrt(n_in), 1/sqrt(n_in))
        layer.weight.data = _init.fan_in_uniform((n_out, n_in), gen, dtype)
        layer.bias.data = _init.fan_in_uniform((n_out,), gen, dtype, fan_in=n_in)
    return layer


def hybrid_mlp(
    in_features: int = 784,
    hidden: int = 256,
    out_features: int = 10,
    *,
    blocks: int = 4,
    weight_dropout: float = 0.0,
    preset: str = "tropic",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """Hybrid MLP: ``Linear(in, h) -> MPM -> blocks x [Linear(h, h) -> MPM] -> Linear(h, out)``.

    The :class:`MPM` layers (``h -> h``) are the only non-linearity. The paper finds it converges
    fastest with large batches and fails with small ones (batch 64 on MNIST).

    Parameters
    ----------
    in_features, hidden, out_features, blocks : int
    weight_dropout : float in [0, 1)
        Of every MPM layer (the reference code uses none here).
    preset : {"tropic", "reference"}
        Initialisation. Both presets: every MPM ``W ~ N(0, 1)``, ``b, b' ~ N(0, 1)``. The linear
        layers (``n`` inputs): ``W ~ N(0, 2 / n)``, ``b = 0`` (tropic's :class:`~tropic.nn.Linear`
        default, He normal) or ``W, b ~ U(-1/sqrt(n), 1/sqrt(n))`` (reference: torch's
        ``nn.Linear`` default); tropic's is kept for compatibility; ``preset='reference'`` gives
        the paper code's.
    rng, seed, dtype
    """
    n_in, h, n_out, k = _sizes(in_features, hidden, out_features, blocks)
    preset = one_of("preset", preset, PRESETS)
    gen = _init.as_rng(rng, seed)
    layers: list[Module] = []
    for a in [n_in] + [h] * k:
        layers += [
            _linear(a, h, gen, dtype, preset),
            MPM(h, h, weight_dropout=weight_dropout, rng=gen, dtype=dtype),
        ]
    return Sequential(*layers, _linear(h, n_out, gen, dtype, preset))


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
