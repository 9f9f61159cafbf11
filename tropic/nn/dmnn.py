"""Deep morphological networks (Fotopoulos & Maragos 2025): max-plus-min layers and constrained
"linear" activations.

A stack of max-plus layers alone is non-decreasing in every input and does not train; a "linear"
activation with O(N) parameters between morphological layers restores the sign changes. This module
holds the layers: :class:`MPM` (dilation and erosion sharing one weight, with optional weight
dropout), :class:`DEP` (dilation-erosion perceptron), :class:`DiagonalActivation`,
:class:`SVDActivation`, :class:`MPMResidual`, and :class:`Negator` (``[x, -x]``, the input step of the
reference code's min-max-plus networks with negation). The paper's architectures are built by the
functions of :mod:`tropic.nn.dmnn_models`. Each layer is defined once for both engines
(:mod:`tropic.nn.layer`); ``tropic.torch.nn`` has the same classes as ``torch.nn.Module`` s.

Presets: where tropic's default initialisation differs from the paper's reference code
(``kostfoto/Morphological-Networks-as-Universal-Approximators``), a layer takes
``preset="tropic"`` (default) or ``preset="reference"`` (the reference code's values);
:data:`PRESETS` lists them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import tropic

from ..core.checks import one_of, positive_int
from . import init as _init
from .dropout import _probability
from .layer import Layer, require_features
from .linear import _LINEAR_INITS, linear_init

__all__ = ["DEP", "MPM", "PRESETS", "DiagonalActivation", "MPMResidual", "Negator", "SVDActivation"]

#: The initialisation presets: tropic's own defaults and the paper's reference code's.
PRESETS = ("tropic", "reference")

# DiagonalActivation's standard deviation: 1/sqrt(12) (tropic), 1/3.46 (the reference code's LinAct).
_DIAGONAL_STD = {"tropic": 1.0 / math.sqrt(12.0), "reference": 1.0 / 3.46}
# SVDActivation's M_0: tropic's Linear default (He normal), torch's nn.Linear default (reference).
_SVD_INIT = {"tropic": "he_normal", "reference": "fan_in_uniform"}


class MPM(Layer):
    """Max-plus-min layer: a dilation and an erosion that share one weight, each with its own bias.

    .. math:: y_{\\dots j} = \\max\\big(b_j,\\; \\max_i x_{\\dots i} + W_{ji}\\big)
              + \\min\\big(b'_j,\\; \\min_i x_{\\dots i} + W_{ji}\\big)

    Parameters
    ----------
    in_features, out_features : int
    init : {"normal", "zeros"}
        ``W ~ N(0, 1)`` (the paper's hidden and output layers) or ``W = 0`` (its first layer).
        The biases ``b`` (``bias_max``) and ``b'`` (``bias_min``) are ``N(0, 1)`` either way.
    weight_dropout : float in [0, 1)
        Probability ``p`` that an entry of ``W`` is dropped in a training forward pass (default 0).
    rng, seed : optional
        Random source of the initialisation (weight, then ``b``, then ``b'``) and afterwards of the
        dropout masks (``tropic.torch.nn``: the masks come from torch's generator, ``torch.manual_seed``).
    dtype, device : optional
        As :class:`~tropic.nn.MaxPlus`.

    Attributes
    ----------
    weight : Parameter (out, in)
        Its ``zero`` is 0.0 (a pruned entry is stored as 0 and ranked by ``|w|``), but see Notes.
    bias_max, bias_min : Parameter (out,)
    dropout_keep : boolean array (out, in) or None
        The keep mask of the last training forward pass with dropout (None otherwise).

    Notes
    -----
    The biases are candidates inside the max and the min; on a tie the gradient goes to the bias,
    otherwise to the single winning weight (lowest ``i`` on ties), as in :class:`MaxPlus`.

    Weight dropout (the paper's regulariser): at every training forward pass a fresh Bernoulli(``p``)
    mask over ``W``, shared by the whole batch, removes entries from *both* branches: a dropped entry
    is the tropical zero of each branch (``-inf`` in the max, ``+inf`` in the min), gets no gradient,
    and nothing is rescaled. The biases are never dropped, and nothing is dropped in evaluation mode.
    Entries pruned by :mod:`tropic.nn.pruning` (``weight.mask`` False) are removed the same way in
    every mode, so a pruned MPM weight is the tropical zero of both branches rather than 0 (the
    paper's reference code writes 0). Ranking by ``|w|`` suits the shared weight: large entries win
    the max, very negative ones the min, and those near 0 are the least likely to win either.
    :func:`tropic.nn.pruning.remove` drops the mask and leaves the stored 0s in both branches: the
    reference code's variant.

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn.dmnn import MPM
    >>> layer = MPM(2, 1, seed=0)
    >>> layer.weight.data[...] = [[0.0, -1.0]]
    >>> layer.bias_max.data[...] = [0.5]
    >>> layer.bias_min.data[...] = [9.0]
    >>> layer(np.array([[0.0, 3.0]], dtype=np.float32)).numpy()  # max(0.5, 0, 2) + min(9, 0, 2)
    array([[2.]], dtype=float32)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        init: str = "normal",
        weight_dropout: float = 0.0,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        if init not in ("normal", "zeros"):
            raise ValueError(f"init must be 'normal' or 'zeros', got {init!r}")
        self.init = init
        self.weight_dropout = _probability(weight_dropout, "weight_dropout")
        self.rng = _init.as_rng(rng, seed)
        shape = (out_features, in_features)
        make = _init.normal if init == "normal" else _init.zeros
        self.weight = self.parameter(make(shape, self.rng, dtype))
        self.bias_max = self.parameter(_init.normal((out_features,), self.rng, dtype), zero=-np.inf)
        self.bias_min = self.parameter(_init.normal((out_features,), self.rng, dtype), zero=np.inf)
        self.dropout_keep = None

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.in_features)
        w = self.weight
        keep = self.keep_mask("weight")
        if self.dropout_keep is not None:  # a torch Module's setattr costs microseconds per forward
            self.dropout_keep = None
        if self.training and self.weight_dropout > 0.0:
            drawn = self.dropout_keep = self.dropout_keep_mask(tuple(w.shape), self.weight_dropout, w)
            keep = drawn if keep is None else keep & drawn
        # One call for the dilation and the erosion (tropic.maxplus_minplus_matmul: the sum of the
        # two products, bit for bit, with one recorded node instead of three)
        if keep is None:
            return tropic.maxplus_minplus_matmul(x, w.T, bias_max=self.bias_max, bias_min=self.bias_min)
        w_max, w_min = self.F.where(keep, w, -math.inf), self.F.where(keep, w, math.inf)
        return tropic.maxplus_minplus_matmul(
            x, w_max.T, b_min=w_min.T, bias_max=self.bias_max, bias_min=self.bias_min
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, init={self.init!r}, "
            f"weight_dropout={self.weight_dropout}"
        )


class DEP(Layer):
    """Dilation-erosion perceptron layer: a convex mix of a dilation and an erosion with separate
    weights and no bias.

    .. math:: y_{\\dots j} = \\lambda_j \\max_i \\big(x_{\\dots i} + W_{ji}\\big)
              + (1 - \\lambda_j) \\min_i \\big(x_{\\dots i} + W'_{ji}\\big),
              \\qquad \\lambda_j \\in [0, 1]

    Parameters
    ----------
    in_features, out_features : int
    init : {"normal", "zeros"}
        ``W, W' ~ N(0, 1)`` (default) or ``W = W' = 0`` (the reference code's first DEP layer, see
        :func:`tropic.nn.dmnn_models.dep`).
    mix : {"learned", "fixed"} or float in [0, 1]
        ``"learned"``: ``lambda`` is a parameter, initialised ``U(0, 1)``; ``"fixed"``:
        ``lambda = 1/2`` (a buffer); a number: ``lambda`` fixed at that value (a buffer; the
        reference code also runs Act-DEP with ``mix=0.75``).
    rng, seed : optional
        Random source (``W``, then ``W'``, then ``lambda``).
    dtype : floating dtype

    Attributes
    ----------
    weight_max : Parameter (out, in)
        ``W`` (``zero = -inf``: prunable as a max-plus weight).
    weight_min : Parameter (out, in)
        ``W'`` (``zero = +inf``).
    mix : Parameter or buffer (out,)
    mix_mode : {"learned", "fixed"}

    Notes
    -----
    A learned ``lambda`` is clamped to ``[0, 1]`` *in the forward pass*; the stored parameter is not
    changed. An entry that an optimiser step moves outside ``[0, 1]`` acts as the nearest bound and
    gets no gradient there (the clamp's derivative is 0 outside the interval), so, unlike clamping
    after each step, it only comes back through the optimiser's momentum.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        init: str = "normal",
        mix: str | float = "learned",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        if init not in ("normal", "zeros"):
            raise ValueError(f"init must be 'normal' or 'zeros', got {init!r}")
        fixed_value = _fixed_mix(mix)
        self.init = init
        self.mix_mode = "learned" if fixed_value is None else "fixed"
        self._mix_argument = mix if isinstance(mix, str) else fixed_value
        gen = _init.as_rng(rng, seed)
        shape = (out_features, in_features)
        make = _init.normal if init == "normal" else _init.zeros
        self.weight_max = self.parameter(make(shape, gen, dtype), zero=-np.inf)
        self.weight_min = self.parameter(make(shape, gen, dtype), zero=np.inf)
        if fixed_value is None:
            self.mix = self.parameter(_init.uniform((out_features,), gen, dtype, low=0.0, high=1.0))
        else:
            self.buffer("mix", _init.constant((out_features,), fixed_value, dtype))

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.in_features)
        lam = self.F.clamp(self.mix, 0.0, 1.0) if self.mix_mode == "learned" else self.mix
        dilation = tropic.maxplus_matmul(x, self.weight_max.T)
        erosion = tropic.minplus_matmul(x, self.weight_min.T)
        return dilation * lam + erosion * (1.0 - lam)

    def extra_repr(self) -> str:
        init = "" if self.init == "normal" else f", init={self.init!r}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"mix={self._mix_argument!r}{init}"
        )


def _fixed_mix(mix: Any) -> float | None:
    """The fixed ``lambda`` of :class:`DEP`'s ``mix`` argument (None for ``"learned"``)."""
    if isinstance(mix, str):
        if mix == "learned":
            return None
        if mix == "fixed":
            return 0.5
    elif isinstance(mix, (int, float, np.integer, np.floating)) and not isinstance(mix, bool):
        if 0.0 <= float(mix) <= 1.0:
            return float(mix)
    raise ValueError(f"mix must be 'learned', 'fixed' or a number in [0, 1], got {mix!r}")


class DiagonalActivation(Layer):
    """Diagonal "linear" activation ``y = a ⊙ x`` (N learnable parameters).

    .. math:: y_{\\dots j} = a_j \\, x_{\\dots j}, \\qquad a_j \\sim N(0, 1) / \\sqrt{12}
              \\;\\; (\\texttt{preset="tropic"}), \\qquad a_j \\sim N(0, 1) / 3.46
              \\;\\; (\\texttt{preset="reference"})

    Parameters
    ----------
    num_features : int
    preset : {"tropic", "reference"}
        The standard deviation of ``a``: ``1/sqrt(12)`` (tropic) or the reference code's ``1/3.46``
        (its rounding of ``sqrt(12) = 3.4641``); tropic's is kept for compatibility;
        ``preset='reference'`` gives the paper code's.
    rng, seed : optional
    dtype : floating dtype

    Attributes
    ----------
    weight : Parameter (num_features,)
    """

    def __init__(
        self,
        num_features: int,
        *,
        preset: str = "tropic",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.num_features = positive_int("num_features", num_features)
        self.preset = one_of("preset", preset, PRESETS)
        gen = _init.as_rng(rng, seed)
        self.weight = self.parameter(_init.normal((num_features,), gen, dtype, std=_DIAGONAL_STD[preset]))

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.num_features)
        return x * self.weight

    def extra_repr(self) -> str:
        preset = "" if self.preset == "tropic" else f", preset={self.preset!r}"
        return f"num_features={self.num_features}{preset}"


class SVDActivation(Layer):
    """SVD-constrained "linear" activation ``y = U diag(a) V^T x``: only the N singular values learn.

    .. math:: y = U \\,\\mathrm{diag}(a)\\, V^T x, \\qquad M_0 = U \\,\\mathrm{diag}(s)\\, V^T

    ``M_0`` is the weight of a default-initialised ``Linear(N, N)``, ``U`` and ``V`` its (frozen)
    singular vectors and ``a`` starts at its singular values ``s``, so the layer starts as that
    linear map:

    .. math:: (M_0)_{ji} \\sim N(0, 2/N) \\;\\; (\\texttt{preset="tropic"}), \\qquad
              (M_0)_{ji} \\sim U\\big(-1/\\sqrt{N},\\; 1/\\sqrt{N}\\big) \\;\\;
              (\\texttt{preset="reference"})

    Parameters
    ----------
    num_features : int
        ``N``.
    init : str, optional
        Initialiser of ``M_0``: any ``init`` of :class:`~tropic.nn.Linear`, or ``"fan_in_uniform"``
        (:func:`tropic.nn.init.fan_in_uniform`, torch's ``nn.Linear`` default). Default: the
        preset's.
    preset : {"tropic", "reference"}
        ``M_0`` from tropic's :class:`~tropic.nn.Linear` default, He normal (``"he_normal"``), or,
        as in the reference code, from torch's ``nn.Linear`` default ``U(±1/sqrt(N))``
        (``"fan_in_uniform"``), whose singular values are ``sqrt(6) = 2.45`` times smaller; tropic's
        is kept for compatibility; ``preset='reference'`` gives the paper code's.
    rng, seed : optional
    dtype : floating dtype
        The SVD is computed in float64 and cast to ``dtype`` (the reference code draws and
        decomposes ``M_0`` in float32).

    Attributes
    ----------
    weight : Parameter (N,)
        ``a``.
    u, v : buffers (N, N)
        ``U`` and ``V`` (not ``V^T``): part of the state dict, never trained.
    """

    def __init__(
        self,
        num_features: int,
        *,
        init: str | None = None,
        preset: str = "tropic",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = self._setup(dtype, device)
        self.num_features = positive_int("num_features", num_features)
        self.preset = one_of("preset", preset, PRESETS)
        self.init = _SVD_INIT[preset] if init is None else init
        gen = _init.as_rng(rng, seed)
        shape = (num_features, num_features)
        if self.init == "fan_in_uniform":
            m0 = _init.fan_in_uniform(shape, gen, np.float64)
        elif self.init in _LINEAR_INITS:
            m0 = linear_init(self.init, shape, gen, np.float64)  # a Linear's weight
        else:
            allowed = sorted([*_LINEAR_INITS, "fan_in_uniform"])
            raise ValueError(f"init must be one of {allowed}, got {init!r}")
        u, s, vh = np.linalg.svd(m0)
        self.buffer("u", u.astype(dtype))
        self.buffer("v", np.ascontiguousarray(vh.T).astype(dtype))
        self.weight = self.parameter(s.astype(dtype))

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.num_features)
        # Row vectors: y = x V diag(a) U^T; U, V are buffers, i.e. constants of the tape.
        matmul = self.F.matmul
        return matmul(matmul(x, self.v) * self.weight, self.u.T)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, init={self.init!r}"


class MPMResidual(Layer):
    """Residual MPM block ``x + a ⊙ MPM(x)`` of width ``n`` (the hidden blocks of RMPM).

    .. math:: y = x + a \\odot \\mathrm{MPM}(x)

    Parameters
    ----------
    num_features : int
    weight_dropout : float in [0, 1)
        Passed to the :class:`MPM`.
    init : {"normal", "zeros"}
        Passed to the :class:`MPM`.
    preset : {"tropic", "reference"}
        Passed to the :class:`DiagonalActivation` ``a`` (the :class:`MPM` is the same in both).
    rng, seed : optional
        One generator for the MPM and then ``a``.
    dtype : floating dtype

    Attributes
    ----------
    mpm : MPM
    scale : DiagonalActivation
        ``a``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        weight_dropout: float = 0.0,
        init: str = "normal",
        preset: str = "tropic",
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        self._setup(dtype, device)  # the sub-layers take the dtype as given
        one_of("preset", preset, PRESETS)
        gen = _init.as_rng(rng, seed)
        self.mpm = self.engine_layer(MPM)(
            num_features, num_features, init=init, weight_dropout=weight_dropout, rng=gen, dtype=dtype,
            device=device,
        )  # fmt: skip
        self.scale = self.engine_layer(DiagonalActivation)(
            num_features, preset=preset, rng=gen, dtype=dtype, device=device
        )

    def forward(self, x: Any) -> Any:
        require_features(self, x, self.mpm.in_features)
        return x + self.scale(self.mpm(x))


class Negator(Layer):
    """The input and its negation side by side: ``y = [x, -x]`` along the last axis (no parameters).

    .. math:: y_{\\dots j} = x_{\\dots j}, \\qquad y_{\\dots n+j} = -x_{\\dots j}, \\qquad
              j = 0, \\dots, n - 1

    A max-plus layer after it, ``max_i max(x_i + W_{ji}, -x_i + W_{j,n+i})``, is non-decreasing in
    some inputs and non-increasing in others: the sign change that a stack of max-plus and min-plus
    layers lacks (:func:`tropic.nn.dmnn_models.min_max_plus_neg`). The gradient is
    ``dL/dx_j = g_j - g_{n+j}``.

    Parameters
    ----------
    num_features : int, optional
        ``n``: if given, the input must have shape ``(..., n)`` (checked, the output is
        ``(..., 2 n)``); if omitted, any last-axis length is accepted.
    rng, seed : optional
        Ignored (there is nothing to draw); accepted for the common layer signature, with which
        :func:`tropic.torch.nn.from_tropic` rebuilds a layer.
    dtype, device : optional
        As :class:`~tropic.nn.MaxPlus` (nothing is stored in them).

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn.dmnn import Negator
    >>> Negator(2)(np.array([[1.0, -3.0]])).numpy()
    array([[ 1., -3., -1.,  3.]])
    """

    def __init__(
        self,
        num_features: int | None = None,
        *,
        rng: Any = None,
        seed: int | None = None,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        self._setup(dtype, device)
        self.num_features = None if num_features is None else positive_int("num_features", num_features)

    def forward(self, x: Any) -> Any:
        if self.num_features is not None:
            require_features(self, x, self.num_features)
        elif len(getattr(x, "shape", (0,))) == 0:
            raise ValueError(f"{type(self).__name__}: x must have at least one axis, got shape ()")
        return self.F.concatenate([x, -x], axis=-1)

    def extra_repr(self) -> str:
        return "" if self.num_features is None else f"num_features={self.num_features}"
