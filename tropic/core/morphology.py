"""Grey-level morphology on the last two axes, with SciPy's conventions (``scipy.ndimage``).

For an image ``f`` and a structuring element ``s`` of shape ``(kh, kw)`` centred at
``(kh // 2, kw // 2)``, with offsets ``y = (u - kh // 2, v - kw // 2)``:

* dilation ``(f ⊕ s)(x) = max_y f(x - y) + s(y)``
* erosion  ``(f ⊖ s)(x) = min_y f(x + y) - s(y)``

A flat structuring element is a boolean ``footprint`` (``s = 0`` on it, not a candidate off it) or
a ``size``. The border ``mode`` says what ``f`` is outside the image: ``"neutral"`` (default) is the
operation's tropical zero (``-inf`` for dilation, ``+inf`` for erosion), under which the lattice
identities hold at the border too; ``"reflect"``, ``"mirror"``, ``"nearest"``, ``"wrap"`` and
``"constant"`` (with ``cval``) are SciPy's modes and give SciPy's results bitwise (but for the sign of
a zero on ``0.0`` / ``-0.0`` ties, where tropic keeps the lowest-index winner's).
Leading axes are batch axes. Opening, closing, the morphological gradient and the top-hats are
compositions of dilation and erosion, exactly as in SciPy.

The winner of an output (``return_indices=True``) is the flat index ``u * kw + v`` into the
structuring element, lowest on ties; :func:`dilation_vjp` / :func:`erosion_vjp` consume it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ._array_api import Array, array_namespace, device, gather_or_fill, index_dtype, scatter_add
from .checks import (
    pair,
    positive_int,
    real_number,
    require_floating,
    require_integer,
    require_ndim,
    require_no_rounding,
    require_same_device,
    require_winners,
    shape_tuple,
)
from .dispatch import kernel_for
from .engines import arrays, engine_of, run_vjp
from .semiring import MAX_PLUS, MIN_PLUS, Semiring, reduce_candidates
from .spec import Operator, define

# SciPy's names for the filter border modes, mapped to the rule that extends the image.
_MODES = {
    "neutral": "neutral",
    "constant": "constant",
    "grid-constant": "constant",
    "reflect": "reflect",
    "grid-mirror": "reflect",
    "mirror": "mirror",
    "nearest": "nearest",
    "wrap": "wrap",
    "grid-wrap": "wrap",
}


def border_index(n: int, positions: np.ndarray, mode: str) -> np.ndarray:
    """Map positions (possibly outside ``[0, n)``) of an axis of length ``n`` to source indices.

    Returns ``-1`` where the value comes from outside the image (``"neutral"``, ``"constant"``).
    ``"reflect"`` is ``d c b a | a b c d | d c b a``, ``"mirror"`` is ``d c b | a b c d | c b a``,
    ``"nearest"`` repeats the edge and ``"wrap"`` is periodic (SciPy's definitions), for any
    distance from the image.
    """
    p = np.asarray(positions, dtype=np.int64)
    rule = _MODES[mode]
    if n == 0:  # an empty axis has no source to read: every position is outside
        return np.full_like(p, -1)
    if rule in ("neutral", "constant"):
        return np.where((p >= 0) & (p < n), p, -1)
    if rule == "nearest":
        return np.clip(p, 0, n - 1)
    if rule == "wrap":
        return np.mod(p, n)
    if rule == "reflect":
        q = np.mod(p, 2 * n)
        return np.where(q < n, q, 2 * n - 1 - q)
    if n == 1:  # mirror of a single sample
        return np.zeros_like(p)
    q = np.mod(p, 2 * n - 2)
    return np.where(q < n, q, 2 * n - 2 - q)


@dataclass(frozen=True)
class AxisWindow:
    """Where the candidates of a sliding window read along one image axis of length ``n``.

    Candidate ``u`` of output ``i`` reads source index ``line[i + start[u]]`` (``-1``: the border
    value). ``line`` is the image axis extended by ``k - 1`` border positions (``before`` of them
    ahead of it: ``line[before + i] = i``), so a kernel can pad once and then slice; ``indices`` is
    the same map as an ``(n, k)`` table.
    """

    line: np.ndarray
    start: np.ndarray
    n: int
    before: int
    mode: str = "neutral"  # the border rule, orientation and centre it was built with (for kernels
    reflected: bool = False  # that rebuild the window themselves, such as the torch custom ops)
    centre: int = 0

    @property
    def indices(self) -> np.ndarray:
        return self.line[np.arange(self.n)[:, None] + self.start[None, :]]


def axis_window(n: int, k: int, reflected: bool, mode: str, centre: int | None = None) -> AxisWindow:
    """The window of a structuring element of length ``k`` with its origin at tap ``centre``
    (default ``k // 2``; any tap ``0 <= centre < k``).

    Erosion reads ``f(i + (u - centre))``; dilation (``reflected``) reads ``f(i - (u - centre))``.
    """
    centre = k // 2 if centre is None else centre
    if reflected:
        before, start = k - 1 - centre, (k - 1) - np.arange(k)
    else:
        before, start = centre, np.arange(k)
    line = border_index(n, np.arange(n + k - 1) - before, mode)
    return AxisWindow(
        line=line, start=start, n=n, before=before, mode=mode, reflected=reflected, centre=centre
    )


def flat_axis_window(n: int, k: int, reflected: bool, mode: str) -> tuple[AxisWindow, np.ndarray | None]:
    """The window of a flat element of length ``k`` (a ``size=``), cut down to the taps that decide
    an output, with the original tap each kept one stands for (None when all are kept).

    Work and memory then grow with the image, not with ``size``: an element much longer than the
    axis has runs of taps that read the same source for every output, and only the lowest of each
    run can win a tie. Beyond ``n`` on either side of the centre every tap reads the border (the
    fill, or the edge for ``"nearest"``): the taps within ``n`` of the centre and one more on each
    side are kept, the first of them standing for tap 0 (the lowest of its run). The periodic modes
    repeat every ``P`` taps (``P`` = ``2n``, ``2n - 2`` or ``n``): ``P`` consecutive taps around the
    centre, starting at a multiple of ``P``, are kept, the ``j``-th standing for tap ``j``. The values
    and winners are those of the whole window, bitwise.
    """
    if k <= 4 * n + 4:
        return axis_window(n, k, reflected, mode), None
    first, count, period = _cut(n, k, mode)
    taps = np.arange(count) if period else np.arange(first, first + count)
    taps[0] = 0
    return axis_window(n, count, reflected, mode, centre=k // 2 - first), taps


def _cut(n: int, k: int, mode: str) -> tuple[int, int, int]:
    """``(first, count, period)`` of the taps :func:`flat_axis_window` keeps (``period`` 0: not a
    periodic mode) of an element of length ``k > 4n + 4``."""
    centre = k // 2
    if n == 0:  # no output to decide
        return 0, 1, 0
    rule = _MODES[mode]
    if rule in ("reflect", "mirror", "wrap"):
        period = {"reflect": 2 * n, "mirror": max(2 * n - 2, 1), "wrap": n}[rule]
        return centre - centre % period, period, period  # k > 4n + 4: first + period <= k
    return centre - n, 2 * n + 1, 0


def _kept_tap(xp: ModuleType, u: Array, n: int, k: int, mode: str) -> Array:
    """The tap of :func:`flat_axis_window`'s window that reads what original tap ``u`` reads."""
    first, count, period = _cut(n, k, mode)
    if period:
        return u % period
    return xp.clip(u - first, 0, count - 1)


def _original_winners(
    xp: ModuleType, winners: Array, maps: tuple, kernel_shape: tuple, shape: tuple
) -> Array:
    """Winners over a cut-down flat window (``kernel_shape``) as flat indices of the whole element
    (``shape``), through the per-axis tap ``maps`` (None: the axis was not cut); ``-1`` stays."""
    mw, (kh, kw) = kernel_shape[1], shape
    dev = device(winners)
    t = xp.astype(winners, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    u, v = t // mw, t % mw
    if maps[0] is not None:
        u = xp.take(xp.asarray(maps[0], device=dev), xp.reshape(u, (-1,)))
        u = xp.reshape(u, tuple(winners.shape))
    if maps[1] is not None:
        v = xp.take(xp.asarray(maps[1], device=dev), xp.reshape(v, (-1,)))
        v = xp.reshape(v, tuple(winners.shape))
    original = xp.where(none, xp.full_like(t, -1), u * kw + v)
    return xp.astype(original, index_dtype(xp, kh * kw))


def dilation(
    image: Array,
    structure: Array | None = None,
    *,
    footprint: Any = None,
    size: int | tuple[int, int] | None = None,
    mode: str = "neutral",
    cval: float = 0.0,
    return_indices: bool = False,
):
    """Grey-level dilation on the last two axes: ``(f ⊕ s)(x) = max_y f(x - y) + s(y)``.

    Parameters
    ----------
    image : array or tensor, shape (..., H, W)
        Real floating point. Leading axes are batch axes. NumPy, CuPy and other array-API arrays,
        ``tropic.autodiff`` tensors and torch tensors (the last two differentiable).
    structure : array, shape (kh, kw) or (C, kh, kw), optional
        Non-flat structuring element (additive offsets), same library and device as ``image``;
        ``-inf`` entries are the tropical zero (never win). A 3-D structure holds one element per
        channel: channel ``c`` of ``image`` (axis -3, of length ``C``) is filtered by ``structure[c]``
        (depthwise morphology).
    footprint : boolean array-like, shape (kh, kw), optional
        Flat structuring element; with ``structure`` it selects which entries take part.
    size : int or (int, int), optional
        Flat rectangular structuring element of this size (alone, without the other two).
    mode : {"neutral", "reflect", "mirror", "nearest", "wrap", "constant"}
        Border handling; "neutral" (default) pads with ``-inf``. SciPy's ``grid-*`` aliases work.
    cval : float
        Image value outside the border for ``mode="constant"``.
    return_indices : bool
        Also return the winner: flat index into the structuring element, ``-1`` if none.

    Returns
    -------
    out : array, shape of ``image``
    indices : array (only if ``return_indices``)

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.dilation(np.array([[0.0, 0.0, 3.0, 0.0]]), size=(1, 3))
    array([[0., 3., 3., 3.]])
    """
    return _morphology(MAX_PLUS, image, structure, footprint, size, mode, cval, return_indices)


def erosion(
    image: Array,
    structure: Array | None = None,
    *,
    footprint: Any = None,
    size: int | tuple[int, int] | None = None,
    mode: str = "neutral",
    cval: float = 0.0,
    return_indices: bool = False,
):
    """Grey-level erosion on the last two axes: ``(f ⊖ s)(x) = min_y f(x + y) - s(y)``.

    Parameters and returns as in :func:`dilation`; "neutral" pads with ``+inf``.

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.erosion(np.array([[1.0, 2.0, 0.0, 4.0]]), size=(1, 3))
    array([[1., 0., 0., 0.]])
    """
    return _morphology(MIN_PLUS, image, structure, footprint, size, mode, cval, return_indices)


def opening(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Opening ``(f ⊖ s) ⊕ s``: anti-extensive, increasing, idempotent. Arguments as :func:`dilation`."""
    _no_indices("opening", kwargs)
    return dilation(erosion(image, structure, **kwargs), structure, **kwargs)


def closing(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Closing ``(f ⊕ s) ⊖ s``: extensive, increasing, idempotent. Arguments as :func:`dilation`."""
    _no_indices("closing", kwargs)
    return erosion(dilation(image, structure, **kwargs), structure, **kwargs)


def morphological_gradient(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Morphological gradient ``(f ⊕ s) - (f ⊖ s)``. Arguments as :func:`dilation`."""
    _no_indices("morphological_gradient", kwargs)
    return dilation(image, structure, **kwargs) - erosion(image, structure, **kwargs)


def white_tophat(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """White top-hat ``f - opening(f)``. Arguments as :func:`dilation`."""
    _no_indices("white_tophat", kwargs)
    return image - opening(image, structure, **kwargs)


def black_tophat(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Black top-hat ``closing(f) - f``. Arguments as :func:`dilation`."""
    _no_indices("black_tophat", kwargs)
    return closing(image, structure, **kwargs) - image


def _no_indices(name: str, kwargs: dict) -> None:
    """The compositions have two winners per output (one per primitive), so no single index."""
    if kwargs.get("return_indices"):
        raise TypeError(
            f"{name} does not take return_indices: it composes dilation and erosion, each with winners "
            "of its own; call tropic.dilation / tropic.erosion with return_indices=True"
        )


def dilation_vjp(
    grad: Array,
    indices: Array,
    image_shape: tuple[int, ...],
    se_shape: tuple[int, int],
    *,
    mode: str = "neutral",
) -> tuple[Array, Array]:
    """Vector-Jacobian product of :func:`dilation`.

    With ``y*(x)`` the winning offset of output ``x`` (from ``return_indices=True``):
    ``dL/df(z) = sum_x g(x) [x - y*(x) maps to z]`` (through the border ``mode``) and
    ``dL/ds(y) = sum_x g(x) [y*(x) = y]``. Outputs without a winner send nothing.

    Returns ``(grad_image, grad_structure)`` of shapes ``image_shape`` and ``se_shape``.
    """
    return _morphology_vjp(grad, indices, image_shape, se_shape, mode, reflected=True)


def erosion_vjp(
    grad: Array,
    indices: Array,
    image_shape: tuple[int, ...],
    se_shape: tuple[int, int],
    *,
    mode: str = "neutral",
) -> tuple[Array, Array]:
    """Vector-Jacobian product of :func:`erosion`: as :func:`dilation_vjp`, reading ``f(x + y*)``
    and with ``dL/ds(y) = -sum_x g(x) [y*(x) = y]`` (the structure is subtracted)."""
    return _morphology_vjp(grad, indices, image_shape, se_shape, mode, reflected=False)


def morphology_reference(
    xp: ModuleType,
    semiring: Semiring,
    image: Array,
    weights: Array | None,
    support: np.ndarray,
    row_window: AxisWindow,
    col_window: AxisWindow,
    fill: float,
    rounding: str | None = None,
) -> tuple[Array, Array]:
    """Reference kernel: ``out = ⊕_{(u,v) in support} f[rows[:, u], cols[:, v]] ⊗ weights[u, v]``.

    ``rows`` (H, kh) and ``cols`` (W, kw) are the source index tables of the two
    :class:`AxisWindow`, ``-1`` meaning the value ``fill``; ``weights`` is None for a flat element
    (no addition at all, so ``-0.0`` stays ``-0.0`` as in SciPy).
    """
    require_no_rounding(rounding)
    kh, kw = support.shape
    rows, cols = row_window.indices, col_window.indices

    def candidates():
        for u in range(kh):
            if not support[u].any():
                continue
            shifted_rows = gather_or_fill(xp, image, rows[:, u], -2, fill)
            for v in range(kw):
                if support[u, v]:
                    x = gather_or_fill(xp, shifted_rows, cols[:, v], -1, fill)
                    yield u * kw + v, x, None if weights is None else weights[u, v]

    return reduce_candidates(
        xp, semiring, candidates(), tuple(image.shape), image.dtype, index_dtype(xp, kh * kw), device(image)
    )


def morphology_vjp_reference(
    xp: ModuleType,
    grad: Array,
    indices: Array,
    image_shape: tuple[int, ...],
    row_window: AxisWindow,
    col_window: AxisWindow,
    needs: tuple[bool, bool] = (True, True),
) -> tuple[Array | None, Array | None]:
    """Reference vjp: per candidate, mask the gradient and scatter it back through the index maps."""
    rows, cols = row_window.indices, col_window.indices
    kh, kw = rows.shape[1], cols.shape[1]
    require_winners(xp, "indices", indices, kh * kw)
    H, W = image_shape[-2:]
    grad_image = xp.zeros(tuple(image_shape), dtype=grad.dtype, device=device(grad))
    grad_weights = []
    zeros = xp.zeros_like(grad)
    for t in range(kh * kw):
        u, v = divmod(t, kw)
        contribution = xp.where(indices == t, grad, zeros)
        grad_weights.append(xp.sum(contribution))
        if needs[0]:
            spread = scatter_add(xp, contribution, rows[:, u], H, axis=-2)
            grad_image = grad_image + scatter_add(xp, spread, cols[:, v], W, axis=-1)
    grad_weights = xp.reshape(xp.stack(grad_weights), (kh, kw)) if needs[1] else None
    return (grad_image if needs[0] else None), grad_weights


def _morphology(
    semiring: Semiring,
    image: Array,
    structure: Array | None,
    footprint: Any,
    size: Any,
    mode: str,
    cval: float,
    return_indices: bool,
):
    engine = engine_of(image, structure)
    raw_image, raw_structure = (image, structure) if engine is None else (
        engine.array(image), None if structure is None else engine.array(structure)
    )  # fmt: skip
    xp, params, shapes = check(semiring, raw_image, raw_structure, footprint, size, mode, cval)
    if engine is None:
        values, winners = _run(xp, image, structure, **params)
    else:
        values, winners = engine.apply(MORPHOLOGY, (image, structure), params)
    if not return_indices:
        return values
    kept, whole, maps = shapes
    if maps[0] is not None or maps[1] is not None:
        raw = winners if engine is None else engine.array(winners)
        raw = _original_winners(array_namespace(winners=raw), raw, maps, kept, whole)
        winners = raw if engine is None else engine.wrap(raw)
    return values, winners


def check(
    semiring: Semiring, image: Array, structure: Array | None, footprint: Any, size: Any, mode: str, cval: Any
) -> tuple[ModuleType, dict[str, Any], tuple]:
    """Check a morphology's arguments; return the namespace, the operator's params and
    ``(kernel shape, element shape, tap maps)`` (the maps are None but for a cut-down ``size=``)."""
    xp = array_namespace(image=image, structure=structure)
    require_floating(xp, "image", image)
    require_ndim("image", image, 2, "..., H, W", exact=False)
    require_same_device(image=image, structure=structure)
    check_mode(mode)
    rows, structure = _structuring_element(xp, structure, footprint, size)
    if (
        structure is not None
        and structure.ndim == 3
        and (image.ndim < 3 or image.shape[-3] != structure.shape[0])
    ):
        raise ValueError(
            f"a structure of shape {tuple(structure.shape)} holds one element per channel: image must have "
            f"shape (..., {structure.shape[0]}, H, W), got {tuple(image.shape)}"
        )
    reflected = semiring.maximises
    H, W = image.shape[-2:]
    maps: tuple = (None, None)
    if rows is None:  # size=: a flat rectangle, cut down to the taps that can win
        kh, kw = pair("size", size, 1)
        row_window, row_map = flat_axis_window(H, kh, reflected, mode)
        col_window, col_map = flat_axis_window(W, kw, reflected, mode)
        maps = (row_map, col_map)
        mh, mw = row_window.start.size, col_window.start.size
        window = [mh, mw, row_window.centre, col_window.centre]
        support = (True,) * (mh * mw)
    else:
        kh, kw = mh, mw = len(rows), len(rows[0])
        window = [kh, kw, kh // 2, kw // 2]
        support = tuple(bit for row in rows for bit in row)
    fill = semiring.zero if _MODES[mode] == "neutral" else real_number("cval", cval)
    params = {
        "support": support,
        "window": window,
        "maximise": semiring.maximises,
        "mode": mode,
        "fill": fill,
    }
    return xp, params, ((mh, mw), (kh, kw), maps)


def _windows(H: int, W: int, window: list[int], reflected: bool, mode: str) -> tuple[AxisWindow, AxisWindow]:
    """The row and column windows of an element ``window = [kh, kw, row_centre, col_centre]``."""
    kh, kw, row_centre, col_centre = window
    return axis_window(H, kh, reflected, mode, row_centre), axis_window(W, kw, reflected, mode, col_centre)


def _run(
    xp: ModuleType,
    image: Array,
    structure: Array | None,
    *,
    support: tuple[bool, ...],
    window: list[int],
    maximise: bool,
    mode: str,
    fill: float,
    rounding: str | None = None,
) -> tuple[Array, Array]:
    """``(out, winners)`` of checked arguments: one dtype, the windows, the kernel (per channel for a
    3-D structure)."""
    semiring = MAX_PLUS if maximise else MIN_PLUS
    kh, kw = window[0], window[1]
    rows, cols = _windows(image.shape[-2], image.shape[-1], window, maximise, mode)
    mask = np.array(support, dtype=bool).reshape(kh, kw)
    weights = None
    if structure is not None:
        dtype = xp.result_type(image.dtype, structure.dtype)
        image = xp.astype(image, dtype, copy=False)
        # Erosion subtracts the structure: it is a min-plus sum with -s (exactly f - s in IEEE).
        weights = xp.astype(structure, dtype, copy=False)
        weights = weights if maximise else -weights
    kernel = kernel_for("morphology", xp) or morphology_reference
    if weights is None or weights.ndim == 2:
        return kernel(xp, semiring, image, weights, mask, rows, cols, fill, rounding)
    results = [
        kernel(xp, semiring, image[..., c, :, :], weights[c, ...], mask, rows, cols, fill, rounding)
        for c in range(weights.shape[0])
    ]
    return xp.stack([r[0] for r in results], axis=-3), xp.stack([r[1] for r in results], axis=-3)


def _vjp(xp, grad, winners, shapes, needs, *, support, window, maximise, mode, fill):
    """``(grad_image, grad_structure)``: each output's gradient to the pixel its winner read (through
    the border mode) and to the winning tap (negated for an erosion, which subtracts the structure)."""
    image_shape, structure_shape = shapes
    need_structure = needs[1] and structure_shape is not None
    rows, cols = _windows(image_shape[-2], image_shape[-1], window, maximise, mode)
    kernel = kernel_for("morphology_vjp", xp) or morphology_vjp_reference
    flags = (needs[0], need_structure)
    if structure_shape is None or len(structure_shape) == 2:
        grad_image, grad_weights = kernel(xp, grad, winners, tuple(image_shape), rows, cols, flags)
    else:  # one element per channel (axis -3)
        channel_shape = tuple(image_shape[:-3]) + tuple(image_shape[-2:])
        results = [
            kernel(xp, grad[..., c, :, :], winners[..., c, :, :], channel_shape, rows, cols, flags)
            for c in range(structure_shape[0])
        ]
        grad_image = xp.stack([r[0] for r in results], axis=-3) if needs[0] else None
        grad_weights = xp.stack([r[1] for r in results], axis=0) if need_structure else None
    if grad_weights is not None and not maximise:
        grad_weights = 0.0 - grad_weights  # not -x: taps that never win get +0.0, not -0.0
    return grad_image, grad_weights


def _jvp(xp, tangents, winners, shapes, *, support, window, maximise, mode, fill):
    """The tangent of each output: the image's tangent at the pixel its winner read (0 for a border
    value) plus (dilation) or minus (erosion) the structure's tangent at the winning tap."""
    t_image, t_structure = tangents
    image_shape, structure_shape = shapes
    kh, kw = window[0], window[1]
    H, W = image_shape[-2:]
    known = t_image if t_image is not None else t_structure
    if math.prod(winners.shape) == 0:
        return xp.zeros(tuple(winners.shape), dtype=known.dtype, device=device(winners))
    rows, cols = _windows(H, W, window, maximise, mode)
    dev = device(winners)
    zero = xp.zeros((), dtype=known.dtype, device=dev)
    t = xp.astype(winners, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    out = xp.zeros(tuple(winners.shape), dtype=known.dtype, device=dev)
    if t_image is not None:
        i = xp.reshape(xp.arange(H, dtype=xp.int64, device=dev), (H, 1))
        j = xp.reshape(xp.arange(W, dtype=xp.int64, device=dev), (1, W))
        row_table = xp.asarray(rows.indices.reshape(-1), device=dev)
        col_table = xp.asarray(cols.indices.reshape(-1), device=dev)
        src_row = xp.take(row_table, xp.reshape(i * kh + t // kw, (-1,)))
        src_col = xp.take(col_table, xp.reshape(j * kw + t % kw, (-1,)))
        inside = (src_row >= 0) & (src_col >= 0)
        batch = xp.reshape(
            xp.arange(math.prod(winners.shape) // (H * W), dtype=xp.int64, device=dev), (-1, 1)
        )
        flat = xp.reshape(batch * (H * W) + xp.reshape(src_row * W + src_col, (-1, H * W)), (-1,))
        flat = xp.where(inside, flat, xp.zeros_like(flat))
        values = xp.take(xp.reshape(xp.broadcast_to(t_image, tuple(winners.shape)), (-1,)), flat)
        out = out + xp.reshape(xp.where(inside, values, zero), tuple(winners.shape))
    if t_structure is not None:
        taps = t
        if t_structure.ndim == 3:  # one element per channel: tap index within channel c's element
            C = t_structure.shape[0]
            channel = xp.reshape(xp.arange(C, dtype=xp.int64, device=dev), (C, 1, 1))
            taps = t + channel * (kh * kw)
        values = xp.take(xp.reshape(t_structure, (-1,)), xp.reshape(taps, (-1,)))
        values = xp.reshape(values, tuple(winners.shape))
        out = out + values if maximise else out - values
    return xp.where(none, zero, out)


def _meta(shapes, *, support, window, maximise, mode, fill):
    """The output shape (the image's) and candidates, after the checks the kernels rely on."""
    image_shape, structure_shape = shapes
    if len(image_shape) < 2:
        raise ValueError(f"image must have at least 2 dimensions (..., H, W), got shape {tuple(image_shape)}")
    if len(window) != 4:
        raise ValueError(f"window must be [kh, kw, row_centre, col_centre], got {list(window)!r}")
    kh, kw = positive_int("kh", window[0]), positive_int("kw", window[1])
    if not (0 <= window[2] < kh and 0 <= window[3] < kw):
        raise ValueError(f"window's centre must be a tap of the ({kh}, {kw}) element, got {list(window)!r}")
    if len(support) != kh * kw:
        raise ValueError(f"support must have kh * kw = {kh * kw} entries, got {len(support)}")
    check_mode(mode)
    if structure_shape is not None:
        structure_shape = tuple(structure_shape)
        if structure_shape[-2:] != (kh, kw) or len(structure_shape) not in (2, 3):
            raise ValueError(
                f"structure must have shape (kh, kw) = {(kh, kw)} or (C, kh, kw), got {structure_shape}"
            )
        if len(structure_shape) == 3 and (len(image_shape) < 3 or image_shape[-3] != structure_shape[0]):
            raise ValueError(
                f"a structure of shape {structure_shape} holds one element per channel: image must have "
                f"shape (..., {structure_shape[0]}, H, W), got {tuple(image_shape)}"
            )
    return tuple(image_shape), kh * kw


MORPHOLOGY = define(
    Operator(
        name="morphology",
        inputs=("image", "structure"),
        optional=("structure",),
        params=(
            ("support", "bool[]"),
            ("window", "int[]"),
            ("maximise", bool),
            ("mode", str),
            ("fill", float),
        ),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        kernel=(
            "morphology",
            ("xp", "semiring", "image", "weights", "support", "row_window", "col_window", "fill", "rounding"),
        ),
        vjp_kernel=(
            "morphology_vjp",
            ("xp", "grad", "indices", "image_shape", "row_window", "col_window", "needs"),
        ),
    )
)


def _morphology_vjp(grad, indices, image_shape, se_shape, mode, reflected):
    engine = engine_of(grad, indices)
    raw_grad, raw_indices = arrays(grad, indices)
    xp = array_namespace(grad=raw_grad, indices=raw_indices)
    require_floating(xp, "grad", raw_grad)
    require_integer(xp, "indices", raw_indices)
    check_mode(mode)
    image_shape = shape_tuple("image_shape", image_shape, 2)
    for name, x in (("grad", raw_grad), ("indices", raw_indices)):
        if tuple(x.shape) != image_shape:
            raise ValueError(f"{name} must have the image's shape {image_shape}, got {tuple(x.shape)}")
    kh, kw = pair("se_shape", shape_tuple("se_shape", se_shape, ndim=2), 1)
    H, W = image_shape[-2:]
    rows, row_map = flat_axis_window(H, kh, reflected, mode)
    cols, col_map = flat_axis_window(W, kw, reflected, mode)
    mh, mw = rows.start.size, cols.start.size
    params = dict(
        support=(True,) * (mh * mw),
        window=[mh, mw, rows.centre, cols.centre],
        maximise=reflected,
        mode=mode,
        fill=0.0,  # the vjp does not read the border value
    )
    if row_map is None and col_map is None:
        return run_vjp(MORPHOLOGY, grad, indices, (image_shape, (kh, kw)), (True, True), params)
    # An element much longer than the image: the image gradient through the cut-down window (taps
    # that read the same sources share a kept one), the element's gradient summed per original tap.
    require_winners(xp, "indices", raw_indices, kh * kw)
    t = xp.astype(raw_indices, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    u, v = t // kw, t % kw
    u = u if row_map is None else _kept_tap(xp, u, H, kh, mode)
    v = v if col_map is None else _kept_tap(xp, v, W, kw, mode)
    kept = xp.where(none, xp.full_like(t, -1), u * mw + v)
    kept = xp.astype(kept, index_dtype(xp, mh * mw))
    kept = kept if engine is None else engine.wrap(kept)
    grad_image = run_vjp(MORPHOLOGY, grad, kept, (image_shape, (mh, mw)), (True, False), params)[0]
    grad_weights = _tap_sums(xp, raw_grad, raw_indices, (kh, kw))
    grad_weights = grad_weights if reflected else 0.0 - grad_weights
    return grad_image, grad_weights if engine is None else engine.wrap(grad_weights)


def _tap_sums(xp: ModuleType, grad: Array, indices: Array, shape: tuple[int, int]) -> Array:
    """``sum_x g(x) [indices(x) = t]`` for every tap ``t`` of an element of ``shape``: float64 sums in
    the outputs' row-major order, rounded once to ``grad``'s dtype (as the NumPy backend's), on the
    host (an element far larger than the image has few winning taps, but a table of its size)."""
    g, t = _host(grad).reshape(-1), _host(indices).reshape(-1).astype(np.int64)
    won = t >= 0
    sums = np.bincount(t[won], weights=g[won].astype(np.float64), minlength=math.prod(shape))
    host = sums.astype(_host(grad).dtype).reshape(shape)
    return xp.asarray(host, device=device(grad))


def _host(x: Array) -> np.ndarray:
    """A NumPy copy of an array of any library (torch tensors detached, CuPy arrays fetched)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return np.from_dlpack(x.detach().cpu())  # (not .numpy(): it would pin a torch tensor's storage)
    if hasattr(x, "get"):
        return x.get()
    return np.from_dlpack(x)


def _python_footprint(footprint: Any) -> tuple[tuple[bool, ...], ...] | None:
    """A footprint given as a non-empty rectangular nested list/tuple of Python bools or ints, as rows
    of bools; None for anything else (checked by the NumPy path)."""
    if not isinstance(footprint, (list, tuple)) or not footprint:
        return None
    if not all(isinstance(row, (list, tuple)) and len(row) == len(footprint[0]) for row in footprint):
        return None
    if not footprint[0] or not all(isinstance(v, int) for row in footprint for v in row):
        return None
    return tuple(tuple(v != 0 for v in row) for row in footprint)


def check_mode(mode: str) -> None:
    """``ValueError`` naming ``mode`` and the allowed values unless it is a border mode name."""
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")


def _structuring_element(xp: ModuleType, structure: Any, footprint: Any, size: Any):
    """Resolve (structure, footprint, size) into the support as rows of Python bools (None for a
    ``size=``, which the caller builds) and the structure array.

    The support is made of Python bools, not a NumPy array: under ``torch.compile`` a NumPy array
    made here would be a traced tensor whose values are unknown.
    """
    if size is not None and (structure is not None or footprint is not None):
        raise ValueError("size cannot be combined with structure or footprint; give one of them")
    if structure is None and footprint is None and size is None:
        raise ValueError("one of structure, footprint or size is required")
    if size is not None:
        pair("size", size, 1)
        return None, None
    if structure is not None:
        require_floating(xp, "structure", structure)
        if structure.ndim not in (2, 3):
            raise ValueError(
                "structure must have 2 dimensions (kh, kw) or 3 (C, kh, kw), got shape "
                f"{tuple(structure.shape)}"
            )
        if 0 in tuple(structure.shape):
            raise ValueError(f"structure must not be empty, got shape {tuple(structure.shape)}")
    element_shape = None if structure is None else tuple(structure.shape[-2:])
    if footprint is None:
        kh, kw = element_shape
        return ((True,) * kw,) * kh, structure
    rows = _python_footprint(footprint)
    if rows is None:  # a NumPy (or other host) mask: eager only under torch.compile
        try:
            support = np.asarray(footprint)
        except Exception as exc:  # e.g. a GPU array: footprints are small host-side masks
            raise TypeError(f"footprint must be convertible to a NumPy boolean array ({exc})") from None
        if support.dtype != bool and not np.issubdtype(support.dtype, np.integer):
            raise TypeError(
                f"footprint must be boolean, got dtype {support.dtype} (use structure= for additive offsets)"
            )
        if support.ndim != 2 or 0 in support.shape:
            raise ValueError(f"footprint must be a non-empty 2-D mask (kh, kw), got shape {support.shape}")
        rows = tuple(tuple(bool(v) for v in row) for row in (support != 0).tolist())
    if element_shape is not None and element_shape != (len(rows), len(rows[0])):
        raise ValueError(
            f"structure and footprint must have the same shape, got {tuple(structure.shape)} and "
            f"{(len(rows), len(rows[0]))}"
        )
    return rows, structure
