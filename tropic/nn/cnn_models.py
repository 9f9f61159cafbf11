"""The CIFAR-10 network of the sparse-hybrid paper (Fotopoulos, Garoufis & Maragos 2025): a 5-block
VGG-like CNN front end and the paper's four classification heads, as :class:`~tropic.nn.Sequential`
models that ``tropic.torch.nn.from_tropic`` converts.

:func:`cifar_front_end` is the CNN, ``(B, 3, 32, 32) -> (B, 256)``; :func:`cifar_cnn` puts one of the
heads on it: ``"relu"``, ``"maxout"``, ``"dense"`` (dense max-plus) or ``"sparse"`` (Sparse-Morph).

The facts follow the paper's reference code (``kostfoto/Sparse-Morph``, ``CIFAR10/cifar_experiment.ipynb``:
the classes ``Conv_2d``, ``Maxout``, ``MaxPlus`` and ``MLP`` of its second cell, the methods
``"relu"``, ``"maxout"``, ``"lmpl"`` and ``"lmpl2"`` of its training cells); each function says where
it departs from them.

Every function takes ``rng`` or ``seed``; one generator initialises the layers in order (the front
end first, so a seed gives every head the same front end) and then draws the dropout masks.
``preset`` chooses the initialisation: ``"reference"`` (default) is the reference code's (torch's
defaults, drawn from NumPy: the same distributions, not torch's random stream), ``"tropic"`` tropic's
layer defaults.

Examples
--------
>>> import numpy as np
>>> from tropic.nn.cnn_models import cifar_cnn
>>> net = cifar_cnn("sparse", channels=8, hidden=16, seed=0).eval()
>>> net(np.zeros((2, 3, 32, 32), dtype=np.float32)).shape
(2, 10)
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..core.checks import one_of, positive_int
from . import init as _init
from .activations import ReLU
from .conv import Conv2d, MaxPool2d
from .dmnn import PRESETS
from .dmnn_conv import _torch_default
from .dmnn_models import _GroupMax, hybrid_head
from .dropout import Dropout
from .linear import Flatten, Linear
from .module import Module, Sequential
from .normalization import BatchNorm1d, BatchNorm2d

__all__ = ["HEADS", "cifar_cnn", "cifar_front_end"]

HEADS = ("relu", "maxout", "dense", "sparse")
"""The heads of :func:`cifar_cnn`: the reference code's methods ``"relu"``, ``"maxout"``, ``"lmpl"``
(dense max-plus) and ``"lmpl2"`` (sparse max-plus, Sparse-Morph)."""

_BLOCKS = 5  # conv blocks; with a 2x2 max pool each, 32 x 32 -> 1 x 1
_PIECES = 2  # the reference maxout's pool_size
_DROPOUT = 0.5  # after the hidden layer of the ReLU and maxout heads


def _conv(gen: np.random.Generator, dtype: Any, preset: str, n_in: int, n_out: int) -> Conv2d:
    layer = Conv2d(n_in, n_out, 3, padding=1, bias=True, rng=gen, dtype=dtype)
    return _torch_default(layer, gen) if preset == "reference" else layer


def _linear(
    gen: np.random.Generator, dtype: Any, preset: str, n_in: int, n_out: int, bias: bool = True
) -> Linear:
    layer = Linear(n_in, n_out, bias=bias, rng=gen, dtype=dtype)
    return _torch_default(layer, gen) if preset == "reference" else layer


def _front_end(
    in_channels: int, channels: int, gen: np.random.Generator, dtype: Any, preset: str
) -> Sequential:
    widths = [in_channels, channels, channels, 2 * channels, 2 * channels, 2 * channels]
    layers: list[Module] = []
    for n_in, n_out in itertools.pairwise(widths):
        layers += [
            _conv(gen, dtype, preset, n_in, n_out),
            BatchNorm2d(n_out, dtype=dtype),
            ReLU(),
            MaxPool2d(2),
        ]
    return Sequential(*layers, Flatten())


def cifar_front_end(
    in_channels: int = 3,
    channels: int = 128,
    *,
    preset: str = "reference",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """The reference code's CIFAR-10 CNN (``Conv_2d`` blocks of ``MLP``), for ``(B, in_channels, 32, 32)``
    inputs, giving ``(B, 2 * channels)`` features (256 for the paper's ``channels=128``)::

        block(in, C) -> block(C, C) -> block(C, 2C) -> block(2C, 2C) -> block(2C, 2C) -> Flatten

    with ``block(a, b) = Conv2d(a, b, 3, padding=1) -> BatchNorm2d(b) -> ReLU -> MaxPool2d(2)``
    (convolution with bias, no dropout): the map shrinks 32 -> 16 -> 8 -> 4 -> 2 -> 1.

    The reference then squeezes the ``1 x 1`` map to ``(B, 2C)``, taking a global max over the width
    first if it is wider than 1; for 32 x 32 inputs that max is over one position, so the feature is
    the flattened ``(B, 2C, 1, 1)`` map, which is what :class:`~tropic.nn.Flatten` gives here (other
    input sizes give other feature widths, which the head's first layer rejects).

    Parameters
    ----------
    in_channels : int
        3 in the reference.
    channels : int
        Width ``C`` of the first two blocks (the reference's ``n_channels=128``); the last three
        have ``2C``.
    preset : {"reference", "tropic"}
        Initialisation of the convolutions (``n = 9 a`` inputs for ``block(a, b)``): weight and bias
        ``~ U(-1/sqrt(n), 1/sqrt(n))`` (reference: torch's ``nn.Conv2d`` default, from NumPy) or
        weight ``~ N(0, 2 / n)``, bias 0 (tropic's :class:`~tropic.nn.Conv2d` default, He normal).
        BatchNorm starts at ``gamma = 1``, ``beta = 0`` in both.
    rng, seed, dtype
        One generator initialises the convolutions in order.

    Returns
    -------
    Sequential
        21 modules: 5 x (``Conv2d``, ``BatchNorm2d``, ``ReLU``, ``MaxPool2d``), then ``Flatten``.
    """
    in_channels, channels = positive_int("in_channels", in_channels), positive_int("channels", channels)
    preset = one_of("preset", preset, PRESETS)
    return _front_end(in_channels, channels, _init.as_rng(rng, seed), dtype, preset)


def _relu_head(
    n_in: int, h: int, n_out: int, gen: np.random.Generator, dtype: Any, preset: str
) -> Sequential:
    return Sequential(
        _linear(gen, dtype, preset, n_in, h),
        BatchNorm1d(h, dtype=dtype),
        ReLU(),
        Dropout(_DROPOUT, rng=gen),
        _linear(gen, dtype, preset, h, n_out),
    )


def _maxout_head(
    n_in: int, h: int, n_out: int, gen: np.random.Generator, dtype: Any, preset: str
) -> Sequential:
    # The reference's two Linear(n_in, h) -> BatchNorm1d(h) pieces are one Linear(n_in, 2h) ->
    # BatchNorm1d(2h) (both act per feature), the pieces of unit j being features 2j and 2j + 1.
    return Sequential(
        _linear(gen, dtype, preset, n_in, _PIECES * h),
        BatchNorm1d(_PIECES * h, dtype=dtype),
        _GroupMax(_PIECES),
        Dropout(_DROPOUT, rng=gen),
        _linear(gen, dtype, preset, h, n_out),
    )


def _morph_head(
    n_in: int, h: int, n_out: int, sparse: bool, count: int, gen: np.random.Generator, dtype: Any, preset: str
) -> Sequential:
    init = "sparse" if sparse else "dense"
    head = hybrid_head(n_in, h, n_out, init=init, count=count if sparse else None, rng=gen, dtype=dtype)
    if preset == "reference":
        # Redrawn in the reference's distributions: torch's default linear layers; the sparse weight's
        # entries each kept with probability count / h^2 (the reference's mask), not exactly count.
        _torch_default(head[0], gen)
        _torch_default(head[3], gen)
        if sparse:
            weight = head[2].weight
            weight.data = _init.sparse_maxplus(
                (h, h), gen, p=min(1.0, count / (h * h)), dtype=weight.data.dtype
            )
    return head


def cifar_cnn(
    head: str = "sparse",
    *,
    in_channels: int = 3,
    channels: int = 128,
    hidden: int = 512,
    num_classes: int = 10,
    count: int | None = None,
    preset: str = "reference",
    rng: Any = None,
    seed: int | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """The reference code's CIFAR-10 model (``MLP(method=...)``): :func:`cifar_front_end` then one of
    the paper's heads, ``Sequential(front_end, head)`` (``net[1]`` is the head, the part the paper
    prunes). With ``F = 2 * channels`` (256) and ``h = hidden`` (512)::

        "relu":   Linear(F, h) -> BatchNorm1d(h) -> ReLU -> Dropout(0.5) -> Linear(h, num_classes)
        "maxout": Linear(F, 2h) -> BatchNorm1d(2h) -> max over pairs -> Dropout(0.5)
                  -> Linear(h, num_classes)
        "dense":  Linear(F, h, no bias) -> BatchNorm1d(h) -> MaxPlus(h, h) -> Linear(h, num_classes)
        "sparse": the same with a sparse MaxPlus(h, h) (Sparse-Morph)

    The reference's method names are ``"relu"``, ``"maxout"``, ``"lmpl"`` and ``"lmpl2"``. Its maxout
    unit is two ``Linear(F, h)`` each followed by its own ``BatchNorm1d(h)`` and an elementwise max:
    the same map as the one ``Linear(F, 2h) -> BatchNorm1d(2h)`` here, grouping features ``2j, 2j + 1``
    (its pieces are ``j`` and ``h + j``: a permutation of the rows, the same distribution at start).
    The max-plus heads are :func:`~tropic.nn.dmnn_models.hybrid_head`; the ReLU and maxout heads keep
    the reference's bias before the BatchNorm and its dropout, so they differ from
    :func:`~tropic.nn.dmnn_models.relu_head` and :func:`~tropic.nn.dmnn_models.maxout_head` (no bias,
    no dropout, and a maxout of width ``h / 2``).

    Parameters
    ----------
    head : {"relu", "maxout", "dense", "sparse"}
    in_channels, channels
        As :func:`cifar_front_end`.
    hidden : int
        ``h``, the reference's ``n_hid=512``.
    num_classes : int
    count : int, optional
        Finite weights of the sparse max-plus layer: default ``2 * hidden`` (the reference's
        ``init=2*n_hid``, ``K = 1024``). Only with ``head="sparse"``.
    preset : {"reference", "tropic"}
        Initialisation. Both presets: the max-plus weight and bias ``~ N(0, 1)``, BatchNorm
        ``gamma = 1``, ``beta = 0``; missing weights of the sparse layer are ``-inf`` (the reference
        stores ``N(0, 1) - 1e9``, which never wins against the finite bias, so the maps and gradients
        are the same). The convolutions and linear layers (``n`` inputs): weight and bias
        ``~ U(-1/sqrt(n), 1/sqrt(n))`` (reference: torch's defaults) or weight ``~ N(0, 2 / n)``, bias 0
        (tropic's defaults, those of :func:`~tropic.nn.dmnn_models.hybrid_head`). The sparse layer
        keeps each entry with probability ``count / hidden^2`` (reference) or exactly ``count`` entries
        (tropic, as :func:`~tropic.nn.dmnn_models.hybrid_head`).
    rng, seed, dtype
        One generator initialises the front end, then the head, in order (then draws the dropout
        masks).

    Returns
    -------
    Sequential
        ``Sequential(front_end, head)``.

    Notes
    -----
    The reference trains with Adam (learning rate ``1e-3``), batch 64, 10 epochs, cross-entropy, no
    augmentation, inputs normalised per channel with mean ``(0.4914, 0.4822, 0.4465)`` and std
    ``(0.2023, 0.1994, 0.2010)``; it keeps the epoch with the best validation accuracy (a random 80/20
    split of the training set).
    """
    head = one_of("head", head, HEADS)
    preset = one_of("preset", preset, PRESETS)
    in_channels, channels = positive_int("in_channels", in_channels), positive_int("channels", channels)
    hidden, num_classes = positive_int("hidden", hidden), positive_int("num_classes", num_classes)
    if head == "sparse":
        count = 2 * hidden if count is None else positive_int("count", count)
    elif count is not None:
        raise ValueError(f"count is for head='sparse' only, got head={head!r}")
    gen = _init.as_rng(rng, seed)
    front = _front_end(in_channels, channels, gen, dtype, preset)
    features = 2 * channels
    if head == "relu":
        top = _relu_head(features, hidden, num_classes, gen, dtype, preset)
    elif head == "maxout":
        top = _maxout_head(features, hidden, num_classes, gen, dtype, preset)
    else:
        top = _morph_head(features, hidden, num_classes, head == "sparse", count, gen, dtype, preset)
    return Sequential(front, top)
