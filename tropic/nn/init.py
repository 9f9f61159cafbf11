"""Weight initialisers: functions ``(shape, rng, dtype) -> numpy.ndarray``.

Every initialiser draws from a ``numpy.random.Generator`` (pass an int seed or None to get one via
:func:`as_rng`) and returns a new NumPy array, so results are reproducible whatever library the
network later runs on. Fans follow the (out, in, *kernel) layout of the layers:
``fan_in = in * prod(kernel)``, ``fan_out = out * prod(kernel)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "as_rng",
    "constant",
    "fan_in_uniform",
    "fans",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "normal",
    "sparse_maxplus",
    "uniform",
    "zeros",
]

Shape = Sequence[int]


def as_rng(rng: Any = None, seed: int | None = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``rng`` (a Generator, an int seed or None) or ``seed``.

    Giving both ``rng`` and ``seed`` is an error; neither gives fresh OS entropy.
    """
    if rng is not None and seed is not None:
        raise ValueError("give rng or seed, not both")
    if rng is None:
        rng = seed
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def fans(shape: Shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape (out, in, *kernel) (a 1-D shape: both equal)."""
    shape = _shape(shape)
    if len(shape) < 1:
        raise ValueError("shape must have at least one dimension")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def normal(
    shape: Shape, rng: Any = None, dtype: Any = np.float32, *, mean: float = 0.0, std: float = 1.0
) -> np.ndarray:
    """Entries ``~ N(mean, std^2)`` (the paper's dense max-plus initialisation is ``N(0, 1)``)."""
    draws = as_rng(rng).standard_normal(_shape(shape))
    return (mean + std * draws).astype(dtype)


def uniform(
    shape: Shape, rng: Any = None, dtype: Any = np.float32, *, low: float = -1.0, high: float = 1.0
) -> np.ndarray:
    """Entries ``~ U(low, high)``."""
    return as_rng(rng).uniform(low, high, _shape(shape)).astype(dtype)


def zeros(shape: Shape, rng: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """All zeros (``rng`` is ignored; present for a uniform signature)."""
    return np.zeros(_shape(shape), dtype=dtype)


def constant(shape: Shape, value: float, dtype: Any = np.float32) -> np.ndarray:
    """Every entry equal to ``value`` (may be ``-inf``)."""
    return np.full(_shape(shape), value, dtype=dtype)


def he_normal(shape: Shape, rng: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """He (Kaiming) normal: ``N(0, 2 / fan_in)``, for layers followed by ReLU."""
    fan_in, _ = fans(shape)
    return normal(shape, rng, dtype, std=math.sqrt(2.0 / fan_in))


def he_uniform(shape: Shape, rng: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """He (Kaiming) uniform: ``U(-b, b)`` with ``b = sqrt(6 / fan_in)`` (variance ``2 / fan_in``)."""
    fan_in, _ = fans(shape)
    bound = math.sqrt(6.0 / fan_in)
    return uniform(shape, rng, dtype, low=-bound, high=bound)


def fan_in_uniform(
    shape: Shape, rng: Any = None, dtype: Any = np.float32, *, fan_in: int | None = None
) -> np.ndarray:
    """Entries ``~ U(-b, b)`` with ``b = 1 / sqrt(fan_in)``: PyTorch's default ``nn.Linear`` weight
    (``kaiming_uniform_`` with ``a = sqrt(5)``) and bias.

    .. math:: W_{ji} \\sim U\\big(-1/\\sqrt{n_{in}},\\; 1/\\sqrt{n_{in}}\\big)

    ``fan_in`` defaults to that of ``shape`` (:func:`fans`); give the weight's fan-in to draw a bias,
    whose own shape has none.
    """
    if fan_in is None:
        fan_in, _ = fans(shape)
    fan_in = int(fan_in)
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    bound = 1.0 / math.sqrt(fan_in)
    return uniform(shape, rng, dtype, low=-bound, high=bound)


def glorot_uniform(shape: Shape, rng: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """Glorot (Xavier) uniform: ``U(-b, b)`` with ``b = sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fans(shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, rng, dtype, low=-bound, high=bound)


def glorot_normal(shape: Shape, rng: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """Glorot (Xavier) normal: ``N(0, 2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fans(shape)
    return normal(shape, rng, dtype, std=math.sqrt(2.0 / (fan_in + fan_out)))


def sparse_maxplus(
    shape: Shape,
    rng: Any = None,
    p: float | None = None,
    count: int | None = None,
    dtype: Any = np.float32,
    *,
    zero: float = -np.inf,
) -> np.ndarray:
    """Sparse max-plus initialisation (Fotopoulos et al. 2025, "Sparse-Morph").

    .. math:: W_{ji} = \\begin{cases} z_{ji} \\sim N(0, 1) & \\text{if entry } (j, i) \\text{ is kept}
              \\\\ -\\infty & \\text{otherwise} \\end{cases}

    With ``p`` each entry is kept independently with probability ``p`` (the number kept varies,
    Binomial(size, p)); with ``count`` exactly ``K = count`` entries are kept, drawn uniformly
    without replacement (every set of ``K`` entries equally likely, so each entry is still kept with
    probability ``K / size``). ``count`` is the way to give two layers the same budget of finite
    weights.

    Parameters
    ----------
    shape : (m, n, ...)
        Weight shape.
    rng : numpy.random.Generator, int or None
    p : float in (0, 1], optional
        Probability that an entry is kept.
    count : int, optional
        The exact number ``K`` of kept (finite) entries, at least 1; a count above the weight's size
        keeps every entry (the paper uses ``K = 1024`` for a 512 x 512 layer). A float is taken if it
        is a whole number. Give exactly one of ``p`` and ``count``.
    dtype : floating dtype
    zero : float
        Value of the entries that are not kept: ``-inf`` (max-plus, default) or ``+inf`` (min-plus).
        Exact infinities, never a finite sentinel.

    Returns
    -------
    numpy.ndarray
        The normal draws are made first and the kept entries second, from the same generator.

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn import init
    >>> w = init.sparse_maxplus((4, 5), np.random.default_rng(0), p=0.5)
    >>> bool(np.all(np.isfinite(w) | (w == -np.inf)))
    True
    >>> int(np.isfinite(init.sparse_maxplus((512, 512), 0, count=1024)).sum())
    1024
    """
    shape = _shape(shape)
    size = math.prod(shape)
    if (p is None) == (count is None):
        raise ValueError("give exactly one of p and count")
    if count is not None:
        count = _count(count)
    elif not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    if zero not in (-np.inf, np.inf):
        raise ValueError(f"zero must be -inf or +inf, got {zero!r}")
    gen = as_rng(rng)
    values = gen.standard_normal(shape)
    if count is None:
        keep = gen.random(shape) < p
    else:
        keep = np.zeros(size, dtype=bool)
        keep[gen.choice(size, min(count, size), replace=False)] = True
        keep = keep.reshape(shape)
    return np.where(keep, values, zero).astype(dtype)


def _count(count: Any) -> int:
    """``count`` of :func:`sparse_maxplus` as an int >= 1 (a whole float is accepted)."""
    if isinstance(count, bool) or not isinstance(count, (int, float, np.integer, np.floating)):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if isinstance(count, (float, np.floating)):
        if not (math.isfinite(count) and float(count).is_integer()):
            raise ValueError(f"count must be a whole number of entries, got {count!r}")
    if not count >= 1:
        raise ValueError(f"count must be > 0, got {count!r}")
    return int(count)


def _shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from err
    if any(s < 0 for s in out):
        raise ValueError(f"shape must be non-negative, got {out}")
    return out
