"""Grey-level morphology in any number of dimensions, with SciPy's conventions (``scipy.ndimage``).

For an image ``f``, a structuring element ``s`` of shape ``(k_1, ..., k_n)`` over ``n`` spatial
``axes`` (default: the last two) and its origin at tap ``c = (k_1 // 2 + origin_1, ...)``, with
offsets ``y = u - c`` for the taps ``u``:

* dilation ``(f ⊕ s)(x) = max_y f(x - y) + s(y)``
* erosion  ``(f ⊖ s)(x) = min_y f(x + y) - s(y)``

A flat structuring element is a boolean ``footprint`` (``s = 0`` on it, not a candidate off it) or
a ``size``. The border ``mode`` (one for all axes or one per axis) says what ``f`` is outside the
image: ``"neutral"`` (default) is the operation's tropical zero (``-inf`` for dilation, ``+inf`` for
erosion), under which the lattice identities hold at the border too; ``"reflect"``, ``"mirror"``,
``"nearest"``, ``"wrap"`` and ``"constant"`` (with ``cval``) are SciPy's modes and give SciPy's
results bitwise (but for the sign of a zero on ``0.0`` / ``-0.0`` ties, where tropic keeps the
lowest-index winner's, and for NaN, which propagates in tropic). The axes not filtered are batch
axes. Opening, closing, the morphological gradient and Laplacian and the top-hats are compositions
of dilation and erosion, exactly as in SciPy. Integer and boolean images are filtered exactly (see
:func:`dilation`).

The winner of an output (``return_indices=True``) is the flat (row-major) index into the structuring
element, lowest on ties; :func:`dilation_vjp` / :func:`erosion_vjp` consume it.

Every backend's 2-D kernel serves every dimension: one axis is a row of height 1 (a long one is cut
into rows), ``n > 2`` axes are one 2-D morphology whose second axis is the other axes' extended
planes flattened (a tap of those axes is one offset there), and a flat box over ``n > 2`` axes is
separable (O(1) per pixel in its size). Values and winners are those of one pass over all the taps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ._array_api import Array, array_namespace, device, gather_or_fill, index_dtype, scatter_add
from ._array_api import to_host as _host
from .checks import (
    _is_int,
    ints,
    positive_int,
    real_number,
    require_floating,
    require_integer,
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
    The windows are cached (a long axis's table costs milliseconds; nothing writes to them).
    """
    return _axis_window(int(n), int(k), bool(reflected), str(mode), k // 2 if centre is None else int(centre))


@functools.lru_cache(maxsize=16)
def _axis_window(n: int, k: int, reflected: bool, mode: str, centre: int) -> AxisWindow:
    if reflected:
        before, start = k - 1 - centre, (k - 1) - np.arange(k)
    else:
        before, start = centre, np.arange(k)
    # The axis itself, then only the k - 1 border positions through the mode (a long axis costs
    # one arange, not a modulo per position).
    head = border_index(n, np.arange(-before, 0), mode)
    tail = border_index(n, np.arange(n, n + k - 1 - before), mode)
    line = np.concatenate([head, np.arange(n, dtype=np.int64), tail])
    return AxisWindow(
        line=line, start=start, n=n, before=before, mode=mode, reflected=reflected, centre=centre
    )


def flat_axis_window(
    n: int, k: int, reflected: bool, mode: str, centre: int | None = None
) -> tuple[AxisWindow, np.ndarray | None]:
    """The window of a flat element of length ``k`` (a ``size=``) with its origin at tap ``centre``
    (default ``k // 2``), cut down to the taps that decide an output, with the original tap each
    kept one stands for (None when all are kept).

    Work and memory then grow with the image, not with ``size``: an element much longer than the
    axis has runs of taps that read the same source for every output, and only the lowest of each
    run can win a tie. Beyond ``n`` on either side of the centre every tap reads the border (the
    fill, or the edge for ``"nearest"``): the taps within ``n`` of the centre and one more on each
    side are kept, the first of them standing for tap 0 (the lowest of its run). The periodic modes
    repeat every ``P`` taps (``P`` = ``2n``, ``2n - 2`` or ``n``): ``P`` consecutive taps, the
    ``j``-th standing for tap ``j``, with the origin moved by a multiple of ``P``. The values and
    winners are those of the whole window, bitwise.
    """
    centre = k // 2 if centre is None else centre
    if k <= 4 * n + 4:
        return axis_window(n, k, reflected, mode, centre), None
    first, count, period = _cut(n, k, mode, centre)
    taps = np.arange(count) if period else np.arange(first, first + count)
    taps[0] = 0
    return axis_window(n, count, reflected, mode, centre=centre - first), taps


def _cut(n: int, k: int, mode: str, centre: int) -> tuple[int, int, int]:
    """``(first, count, period)`` of the taps :func:`flat_axis_window` keeps (``period`` 0: not a
    periodic mode) of an element of length ``k > 4n + 4`` with its origin at tap ``centre``."""
    if n == 0:  # no output to decide
        return 0, 1, 0
    rule = _MODES[mode]
    if rule in ("reflect", "mirror", "wrap"):
        period = {"reflect": 2 * n, "mirror": max(2 * n - 2, 1), "wrap": n}[rule]
        return centre - centre % period, period, period
    first = max(centre - n, 0)
    return first, min(centre + n, k - 1) - first + 1, 0


def _kept_tap(xp: ModuleType, u: Array, n: int, k: int, mode: str, centre: int) -> Array:
    """The tap of :func:`flat_axis_window`'s window that reads what original tap ``u`` reads."""
    first, count, period = _cut(n, k, mode, centre)
    if period:
        return u % period
    return xp.clip(u - first, 0, count - 1)


def _unravel(t: Array, shape: tuple[int, ...]) -> list[Array]:
    """The per-axis taps of flat (row-major) indices ``t`` into an element of ``shape``."""
    taps = []
    for d in range(len(shape)):
        stride = math.prod(shape[d + 1 :])
        taps.append((t // stride) % shape[d])
    return taps


def _ravel(taps: list[Array], shape: tuple[int, ...]) -> Array:
    flat = taps[0]
    for tap, k in zip(taps[1:], shape[1:], strict=True):
        flat = flat * k + tap
    return flat


def _original_winners(xp: ModuleType, winners: Array, maps: tuple, kept_shape: tuple, shape: tuple) -> Array:
    """Winners over a cut-down flat window (``kept_shape``) as flat indices of the whole element
    (``shape``), through the per-axis tap ``maps`` (None: the axis was not cut); ``-1`` stays."""
    dev = device(winners)
    t = xp.astype(winners, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    taps = _unravel(t, kept_shape)
    for d, tap_map in enumerate(maps):
        if tap_map is not None:
            mapped = xp.take(xp.asarray(tap_map, device=dev), xp.reshape(taps[d], (-1,)))
            taps[d] = xp.reshape(mapped, tuple(winners.shape))
    original = xp.where(none, xp.full_like(t, -1), _ravel(taps, shape))
    return xp.astype(original, index_dtype(xp, math.prod(shape)))


def dilation(
    image: Array,
    structure: Array | None = None,
    *,
    footprint: Any = None,
    size: int | tuple[int, ...] | None = None,
    mode: str | tuple[str, ...] = "neutral",
    cval: float = 0.0,
    origin: int | tuple[int, ...] = 0,
    axes: int | tuple[int, ...] | None = None,
    output: Any = None,
    return_indices: bool = False,
):
    """Grey-level dilation: ``(f ⊕ s)(x) = max_y f(x - y) + s(y)`` over the ``axes`` of ``image``.

    Parameters
    ----------
    image : array or tensor
        Real floating point, integer or boolean. The axes not in ``axes`` are batch axes. NumPy,
        CuPy and other array-API arrays, ``tropic.autodiff`` tensors and torch tensors (the last two
        differentiable). Integer and boolean images are filtered exactly, in float64, with ``cval``
        cast to the image's dtype first: a flat element returns the image's dtype (``±inf``, where
        no candidate exists in ``mode="neutral"``, become the dtype's lowest / highest value), a
        non-flat one the smallest floating dtype that holds every image value and the structure's
        dtype (``uint8`` with ``float32``: ``float32``; ``int32``: ``float64``). 64-bit integers
        beyond ±2**53 raise ``ValueError`` (no float holds them exactly).
    structure : array, shape (k_1, ..., k_n) or (C, k_1, ..., k_n), optional
        Non-flat structuring element (additive offsets), same library and device as ``image``;
        ``-inf`` entries are the tropical zero (never win). With one more axis it holds one element
        per channel: channel ``c`` of ``image`` (the last axis before the filtered ones, of length
        ``C``) is filtered by ``structure[c]`` (depthwise morphology).
    footprint : boolean array-like, shape (k_1, ..., k_n), optional
        Flat structuring element; with ``structure`` it selects which entries take part.
    size : int or tuple of ints, optional
        Flat rectangular structuring element of this size (alone, without the other two).
    mode : str or sequence of str
        Border handling, one for all axes or one per axis: ``"neutral"`` (default) pads with the
        tropical zero (``-inf`` here), or SciPy's ``"reflect"``, ``"mirror"``, ``"nearest"``,
        ``"wrap"``, ``"constant"`` (and the ``grid-*`` aliases). ``"neutral"`` and ``"constant"``
        cannot be mixed across axes (one fill value).
    cval : float
        Image value outside the border for ``mode="constant"``.
    origin : int or sequence of ints
        Position of the element's origin relative to its centre, per axis (SciPy's ``origin``): the
        origin is tap ``k // 2 + origin``, which must lie in the element.
    axes : int or sequence of ints, optional
        The axes filtered, in the order of the element's axes; default the last two. 1-D signals:
        ``axes=-1``; volumes: ``axes=(-3, -2, -1)``.
    output : array or dtype, optional
        Where to write the result (an array of the result's shape, which may be ``image`` itself),
        or the dtype of the result. Arrays of NumPy, CuPy and torch (not differentiable).
    return_indices : bool
        Also return the winner: flat index into the structuring element, ``-1`` if none.

    Returns
    -------
    out : array, shape of ``image`` (``output`` when given)
    indices : array (only if ``return_indices``)

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.dilation(np.array([[0.0, 0.0, 3.0, 0.0]]), size=(1, 3))
    array([[0., 3., 3., 3.]])
    >>> tropic.dilation(np.array([0, 5, 0, 0], dtype=np.uint8), size=3, axes=-1, origin=1)
    array([5, 5, 0, 0], dtype=uint8)
    """
    return _morphology(
        MAX_PLUS, image, structure, footprint, size, mode, cval, origin, axes, output, return_indices
    )


def erosion(
    image: Array,
    structure: Array | None = None,
    *,
    footprint: Any = None,
    size: int | tuple[int, ...] | None = None,
    mode: str | tuple[str, ...] = "neutral",
    cval: float = 0.0,
    origin: int | tuple[int, ...] = 0,
    axes: int | tuple[int, ...] | None = None,
    output: Any = None,
    return_indices: bool = False,
):
    """Grey-level erosion: ``(f ⊖ s)(x) = min_y f(x + y) - s(y)`` over the ``axes`` of ``image``.

    Parameters and returns as in :func:`dilation`; "neutral" pads with ``+inf``.

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.erosion(np.array([[1.0, 2.0, 0.0, 4.0]]), size=(1, 3))
    array([[1., 0., 0., 0.]])
    >>> volume = np.zeros((4, 4, 4)); volume[1, 1, 1] = -1.0
    >>> int((tropic.erosion(volume, size=2, axes=(0, 1, 2)) == -1.0).sum())  # a 2x2x2 cube
    8
    """
    return _morphology(
        MIN_PLUS, image, structure, footprint, size, mode, cval, origin, axes, output, return_indices
    )


def opening(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Opening ``(f ⊖ s) ⊕ s``: anti-extensive, increasing, idempotent. Arguments as :func:`dilation`."""
    kwargs, output = _composition("opening", kwargs)
    return _deliver(dilation(erosion(image, structure, **kwargs), structure, **kwargs), output)


def closing(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Closing ``(f ⊕ s) ⊖ s``: extensive, increasing, idempotent. Arguments as :func:`dilation`."""
    kwargs, output = _composition("closing", kwargs)
    return _deliver(erosion(dilation(image, structure, **kwargs), structure, **kwargs), output)


def morphological_gradient(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Morphological gradient ``(f ⊕ s) - (f ⊖ s)``. Arguments as :func:`dilation`."""
    kwargs, output = _composition("morphological_gradient", kwargs)
    return _deliver(dilation(image, structure, **kwargs) - erosion(image, structure, **kwargs), output)


def morphological_laplace(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Morphological Laplacian ``((f ⊕ s) + (f ⊖ s) - f) - f`` (in this order, as SciPy): the
    difference of the external and internal gradients. Arguments as :func:`dilation`.

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.morphological_laplace(np.array([0.0, 0.0, 4.0, 0.0, 0.0]), size=3, axes=-1, mode="reflect")
    array([ 0.,  4., -4.,  4.,  0.])
    """
    kwargs, output = _composition("morphological_laplace", kwargs)
    dilated, eroded = dilation(image, structure, **kwargs), erosion(image, structure, **kwargs)
    return _deliver(dilated + eroded - image - image, output)


def white_tophat(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """White top-hat ``f - opening(f)`` (``f xor opening(f)`` for a boolean image, as SciPy).
    Arguments as :func:`dilation`."""
    kwargs, output = _composition("white_tophat", kwargs)
    opened = opening(image, structure, **kwargs)
    return _deliver(_difference(image, opened), output)


def black_tophat(image: Array, structure: Array | None = None, **kwargs: Any) -> Array:
    """Black top-hat ``closing(f) - f`` (``closing(f) xor f`` for a boolean image, as SciPy).
    Arguments as :func:`dilation`."""
    kwargs, output = _composition("black_tophat", kwargs)
    closed = closing(image, structure, **kwargs)
    return _deliver(_difference(closed, image), output)


def _composition(name: str, kwargs: dict) -> tuple[dict, Any]:
    """The arguments a composition passes to its primitives, and its own ``output``. The
    compositions have two winners per output (one per primitive), so no single index."""
    if kwargs.get("return_indices"):
        raise TypeError(
            f"{name} does not take return_indices: it composes dilation and erosion, each with winners "
            "of its own; call tropic.dilation / tropic.erosion with return_indices=True"
        )
    kwargs = dict(kwargs)
    return kwargs, kwargs.pop("output", None)


def _difference(a: Array, b: Array) -> Array:
    """``a - b``, or ``a xor b`` for boolean arrays (which have no subtraction)."""
    if _kind(a.dtype) == "b" and _kind(b.dtype) == "b":
        return a ^ b
    return a - b


def _morphology(
    semiring: Semiring,
    image: Array,
    structure: Array | None,
    footprint: Any,
    size: Any,
    mode: Any,
    cval: float,
    origin: Any,
    axes: Any,
    output: Any,
    return_indices: bool,
):
    engine = engine_of(image, structure)
    raw_image, raw_structure = arrays(image, structure) if engine is not None else (image, structure)
    image_dtype = raw_image.dtype
    exact = _exact_float(array_namespace(image=raw_image), raw_image, raw_structure)
    if exact is not None:  # an integer or boolean image, filtered in a float that holds it exactly
        raw_image = exact
        image = raw_image if engine is None else engine.wrap(raw_image)
        cval = _in_dtype(real_number("cval", cval), image_dtype)
    xp, params, shapes = check(
        semiring, raw_image, raw_structure, footprint, size, mode, cval, origin=origin, axes=axes
    )
    if engine is None:  # plain arrays: the winners are needed only to be returned
        values, winners = _run(xp, image, structure, **params, winners=return_indices)
    else:
        values, winners = engine.apply(MORPHOLOGY, (image, structure), params, winners=return_indices)
    if exact is not None and structure is None:  # flat: back to the image's dtype, exactly
        raw = values if engine is None else engine.array(values)
        raw = _integral(xp, raw, image_dtype)
        values = raw if engine is None else engine.wrap(raw)
    values = _deliver(values, output)
    if not return_indices:
        return values
    kept, whole, maps = shapes
    if any(m is not None for m in maps):
        raw = winners if engine is None else engine.array(winners)
        raw = _original_winners(array_namespace(winners=raw), raw, maps, kept, whole)
        winners = raw if engine is None else engine.wrap(raw)
    return values, winners


def _kind(dtype: Any) -> str:
    """``"f"`` (real floating), ``"i"`` (integer), ``"b"`` (boolean) or ``"?"`` of a NumPy, CuPy or
    torch dtype."""
    if isinstance(dtype, np.dtype):
        return {"f": "f", "i": "i", "u": "i", "b": "b"}.get(dtype.kind, "?")
    if type(dtype).__module__ == "torch":
        import torch

        if dtype == torch.bool:
            return "b"
        return "f" if dtype.is_floating_point else ("?" if dtype.is_complex else "i")
    return "?"


def _exact_float(xp: ModuleType, image: Array, structure: Array | None) -> Array | None:
    """An integer or boolean ``image`` as floats that hold every value exactly (None for a
    floating image; other dtypes are left to the floating-point check)."""
    kind = _kind(image.dtype)
    if kind not in ("i", "b"):
        return None
    limit = 2**53  # float64 holds every integer up to this exactly
    if kind == "i" and math.prod(image.shape) and np.dtype(_numpy_dtype(image.dtype)).itemsize == 8:
        low, high = xp.min(image), xp.max(image)
        if int(low) < -limit or int(high) > limit:
            raise ValueError(
                f"image of dtype {image.dtype} holds values up to {max(-int(low), int(high))}, beyond "
                "±2**53: no floating-point dtype holds them exactly (tropic computes integer images in "
                "float64); cast them down or to float yourself"
            )
    small = np.dtype(_numpy_dtype(image.dtype)).itemsize <= 2
    dtype = xp.float64
    if structure is not None and small:  # the smallest float holding both (uint8 + float32: float32)
        dtype = structure.dtype if _kind(structure.dtype) == "f" else xp.float64
        if np.dtype(_numpy_dtype(dtype)).itemsize < 4:
            dtype = xp.float32
    return xp.astype(image, dtype)


def _in_dtype(value: float, dtype: Any) -> float:
    """``value`` as a value of an integer or boolean ``dtype`` would hold it (a C cast: truncated
    toward zero, saturated to the dtype's range; nonzero is True): the image's value outside the
    border is one of its own values, as in SciPy."""
    if _kind(dtype) == "b":
        return float(value != 0)
    info = np.iinfo(_numpy_dtype(dtype))
    return float(min(max(math.trunc(value), info.min), info.max)) if math.isfinite(value) else value


def _numpy_dtype(dtype: Any) -> Any:
    """The NumPy dtype of a NumPy, CuPy or torch dtype (for its size and kind)."""
    if isinstance(dtype, np.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    return {"bfloat16": np.float16}.get(name, name)


def _integral(xp: ModuleType, values: Array, dtype: Any) -> Array:
    """Float ``values`` of a flat morphology of an integer or boolean image back in its ``dtype``:
    exact (they are image values or ``cval`` truncated as a C cast would, as SciPy), with ``-inf``
    and ``+inf`` (no candidate) as the dtype's lowest and highest values."""
    if _kind(dtype) == "b":
        low, high = 0.0, 1.0
    else:
        info = xp.iinfo(dtype)
        low, high = float(info.min), float(info.max)
    values = xp.where(values == -math.inf, xp.asarray(low, dtype=values.dtype, device=device(values)), values)
    values = xp.where(values == math.inf, xp.asarray(high, dtype=values.dtype, device=device(values)), values)
    return xp.astype(values, dtype)


def _deliver(result: Any, output: Any) -> Any:
    """``result`` written into ``output`` (an array, which may be the image itself) or cast to the
    dtype ``output``; ``result`` itself when ``output`` is None."""
    if output is None:
        return result
    if not isinstance(output, type) and hasattr(output, "shape") and hasattr(output, "dtype"):
        if tuple(output.shape) != tuple(result.shape):
            raise ValueError(
                f"output must have the result's shape {tuple(result.shape)}, got {tuple(output.shape)}"
            )
        if hasattr(output, "copy_"):  # torch: no gradient flows into a preallocated tensor
            output.copy_(result.detach() if hasattr(result, "detach") else result)
            return output
        if type(result).__module__.startswith("tropic."):
            raise TypeError("output= takes arrays (NumPy, CuPy, torch), not tropic.autodiff tensors")
        output[...] = result
        return output
    xp = array_namespace(result=result)
    try:
        return xp.astype(result, output)
    except Exception as exc:
        message = f"output must be an array or a dtype of the result's library, got {output!r}"
        raise TypeError(message) from exc


def check(
    semiring: Semiring,
    image: Array,
    structure: Array | None,
    footprint: Any,
    size: Any,
    mode: Any,
    cval: Any,
    *,
    origin: Any = 0,
    axes: Any = None,
) -> tuple[ModuleType, dict[str, Any], tuple]:
    """Check a morphology's arguments; return the namespace, the operator's params and
    ``(kernel element shape, element shape, per-axis tap maps)`` (a map is None but for an axis of a
    ``size=`` cut down to the taps that can win)."""
    xp = array_namespace(image=image, structure=structure)
    require_floating(xp, "image", image)
    require_same_device(image=image, structure=structure)
    axes = spatial_axes(image.ndim, axes)
    n = len(axes)
    modes = axis_modes(mode, n)
    support, element, structure = _structuring_element(xp, structure, footprint, size, n)
    if structure is not None and structure.ndim == n + 1:
        channel_axis = _channel_axis(image.ndim, axes)
        if channel_axis is None or image.shape[channel_axis] != structure.shape[0]:
            raise ValueError(
                f"a structure of shape {tuple(structure.shape)} holds one element per channel: image must "
                f"have {structure.shape[0]} channels on the axis before the filtered axes {axes}, got "
                f"shape {tuple(image.shape)}"
            )
    centres = _centres(origin, element)
    reflected = semiring.maximises
    lengths = [image.shape[a] for a in axes]
    maps: list = [None] * n
    if support is None:  # size=: a flat box, each axis cut down to the taps that can win
        kept = []
        for d in range(n):
            window, maps[d] = flat_axis_window(lengths[d], element[d], reflected, modes[d], centres[d])
            kept.append(window.start.size)
            centres[d] = window.centre
        kept = tuple(kept)
        support = (True,) * math.prod(kept)
    else:
        kept = element
    rules = {_MODES[m] for m in modes}
    if "neutral" in rules and "constant" in rules:
        raise ValueError(
            f"mode cannot mix 'neutral' and 'constant' (or 'grid-constant') across axes, got {mode!r}: "
            "the value outside the image is one (the tropical zero or cval)"
        )
    fill = semiring.zero if "neutral" in rules else real_number("cval", cval)
    params = {
        "support": support,
        "window": [*kept, *centres],
        "axes": list(axes),
        "maximise": semiring.maximises,
        "modes": list(modes),
        "fill": fill,
    }
    return xp, params, (kept, element, tuple(maps))


def spatial_axes(ndim: int, axes: Any) -> tuple[int, ...]:
    """The filtered axes as negative indices (default the last two); ``ValueError`` naming
    ``axes`` for an axis out of range or repeated."""
    if axes is None:
        if ndim < 2:
            raise ValueError(
                f"image must have at least 2 dimensions (..., H, W) when axes is None (the last two are "
                f"filtered), got {ndim}; pass axes=-1 for a 1-D signal"
            )
        return (-2, -1)
    given = (axes,) if _is_int(axes) else axes
    try:
        given = tuple(given)
    except TypeError:
        given = None
    if not given or not all(_is_int(a) for a in given):
        raise TypeError(f"axes must be an int or a non-empty sequence of ints, got {axes!r}")
    if not all(-ndim <= a < ndim for a in given):
        raise ValueError(f"axes must be in [-{ndim}, {ndim}) for an image of {ndim} dimensions, got {axes!r}")
    normalised = tuple(int(a) - ndim if a >= 0 else int(a) for a in given)
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"axes must be distinct, got {axes!r}")
    return normalised


def _channel_axis(ndim: int, axes: tuple[int, ...]) -> int | None:
    """The axis a per-channel structure's channels run along: the last axis not filtered."""
    batch = [a for a in range(-ndim, 0) if a not in axes]
    return batch[-1] if batch else None


def axis_modes(mode: Any, n: int) -> tuple[str, ...]:
    """One border mode per axis, from one name or a sequence of ``n`` names; ``ValueError`` naming
    ``mode`` and the allowed values otherwise."""
    if isinstance(mode, str):
        check_mode(mode)
        return (mode,) * n
    try:
        modes = tuple(mode)
    except TypeError:
        modes = None
    if modes is None or len(modes) != n:
        raise ValueError(
            f"mode must be one of {sorted(_MODES)} or a sequence of {n} of them (one per filtered axis), "
            f"got {mode!r}"
        )
    for m in modes:
        check_mode(m)
    return modes


def _centres(origin: Any, element: tuple[int, ...]) -> list[int]:
    """The origin's tap on each axis, ``k // 2 + origin``; ``ValueError`` naming ``origin`` unless it
    lies in the element."""
    given = ints("origin", origin, len(element), None)
    centres = [k // 2 + o for k, o in zip(element, given, strict=True)]
    for k, c in zip(element, centres, strict=True):
        if not 0 <= c < k:
            raise ValueError(
                f"origin must keep the origin inside the element: -(k // 2) <= origin <= (k - 1) // 2, "
                f"that is [{-(k // 2)}, {(k - 1) // 2}] for an axis of length {k}, got {origin!r}"
            )
    return centres


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
    winners: bool = True,
) -> tuple[Array, Array]:
    """Reference kernel: ``out = ⊕_{(u,v) in support} f[rows[:, u], cols[:, v]] ⊗ weights[u, v]``.

    ``rows`` (H, kh) and ``cols`` (W, kw) are the source index tables of the two
    :class:`AxisWindow`, ``-1`` meaning the value ``fill``; ``weights`` is None for a flat element
    (no addition at all, so ``-0.0`` stays ``-0.0`` as in SciPy). ``winners=False`` says the caller
    will not read the winners: a backend kernel may then skip them and return None (this one
    computes them regardless; the values are the same bits either way).
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


def _to_end(xp: ModuleType, x: Array, axes: tuple[int, ...]) -> Array:
    """``x`` with ``axes`` moved to the end, in their order (no copy when they are there already)."""
    order = _order(x.ndim, axes)
    return x if order == tuple(range(x.ndim)) else xp.permute_dims(x, order)


def _from_end(xp: ModuleType, x: Array, axes: tuple[int, ...]) -> Array:
    """The inverse of :func:`_to_end`."""
    order = _order(x.ndim, axes)
    if order == tuple(range(x.ndim)):
        return x
    inverse = [0] * x.ndim
    for i, a in enumerate(order):
        inverse[a] = i
    return xp.permute_dims(x, tuple(inverse))


def _order(ndim: int, axes: tuple[int, ...]) -> tuple[int, ...]:
    spatial = [a % ndim for a in axes]
    return tuple([a for a in range(ndim) if a not in spatial] + spatial)


def _moved_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[a] for a in _order(len(shape), axes))


def _windows(
    lengths: tuple[int, ...], window: list[int], reflected: bool, modes: list[str]
) -> list[AxisWindow]:
    """The window of each filtered axis of an element ``window = [k_1, .., k_n, c_1, .., c_n]``."""
    n = len(lengths)
    return [axis_window(lengths[d], window[d], reflected, modes[d], window[n + d]) for d in range(n)]


def _channel(x: Array, c: int, n: int) -> Array:
    """Channel ``c`` of ``x`` along the axis before its last ``n``."""
    return x[(..., c) + (slice(None),) * n]


def _run(
    xp: ModuleType,
    image: Array,
    structure: Array | None,
    *,
    support: tuple[bool, ...],
    window: list[int],
    axes: list[int],
    maximise: bool,
    modes: list[str],
    fill: float,
    rounding: str | None = None,
    winners: bool = True,
) -> tuple[Array, Array | None]:
    """``(out, winners)`` of checked arguments: one dtype, the axes moved to the end, the windows,
    the kernel (per channel for a per-channel structure). ``winners=False``: the caller does not
    read them, so the kernels may skip them (None is returned; the values are the same bits)."""
    semiring = MAX_PLUS if maximise else MIN_PLUS
    axes = tuple(axes)
    n = len(axes)
    shape = tuple(window[:n])
    mask = np.array(support, dtype=bool).reshape(shape)
    weights = None
    if structure is not None:
        dtype = xp.result_type(image.dtype, structure.dtype)
        image = xp.astype(image, dtype, copy=False)
        # Erosion subtracts the structure: it is a min-plus sum with -s (exactly f - s in IEEE).
        weights = xp.astype(structure, dtype, copy=False)
        weights = weights if maximise else -weights
    moved = _to_end(xp, image, axes)
    windows = _windows(tuple(moved.shape[-n:]), window, maximise, modes)
    if weights is None or weights.ndim == n:
        values, taps = _filter(xp, semiring, moved, weights, mask, windows, fill, rounding, winners)
    else:
        channels = [_channel(moved, c, n) for c in range(weights.shape[0])]
        results = [
            _filter(xp, semiring, x, weights[c, ...], mask, windows, fill, rounding, winners)
            for c, x in enumerate(channels)
        ]
        values = xp.stack([r[0] for r in results], axis=-n - 1)
        taps = xp.stack([r[1] for r in results], axis=-n - 1) if winners else None
    return _from_end(xp, values, axes), None if not winners else _from_end(xp, taps, axes)


def _filter(
    xp: ModuleType,
    semiring: Semiring,
    image: Array,
    weights: Array | None,
    mask: np.ndarray,
    windows: list[AxisWindow],
    fill: float,
    rounding: str | None,
    winners: bool = True,
) -> tuple[Array, Array | None]:
    """The morphology over the last ``mask.ndim`` axes of ``image`` with the backend's 2-D kernel
    (``winners=False``: it may skip them and give None)."""
    kernel = kernel_for("morphology", xp) or morphology_reference
    n = mask.ndim
    if n == 1:  # a row of height 1
        row = axis_window(1, 1, windows[0].reflected, windows[0].mode, 0)
        w = None if weights is None else xp.expand_dims(weights, axis=0)
        row_image, line = xp.expand_dims(image, axis=-2), windows[0]
        values, taps = kernel(xp, semiring, row_image, w, mask[None], row, line, fill, rounding, winners)
        return values[..., 0, :], None if taps is None else taps[..., 0, :]
    if n == 2:
        return kernel(xp, semiring, image, weights, mask, windows[0], windows[1], fill, rounding, winners)
    if weights is None and mask.all():
        return _separable_box(xp, semiring, image, mask.shape, windows, fill, rounding, kernel, winners)
    return _flattened_planes(xp, semiring, image, weights, mask, windows, fill, rounding, kernel, winners)


# Rows this long under a one-row element (1-D signals) are folded into rows of _ROW_CHUNK outputs by
# the backends whose kernels share their work across rows (fold_long_rows).
LONG_ROW = 1 << 14
_ROW_CHUNK = 2048


def fold_long_rows(xp, kernel, semiring, image, weights, support, col_window, fill, rounding, winners):
    """A backend kernel's helper: long rows under a one-row element as a 2-D morphology by ``kernel``
    of rows of ``_ROW_CHUNK`` outputs, so that its blocks (threads, GPU tiles) share the work.
    Folded row ``c`` holds the extended row (border values included) from output ``c * _ROW_CHUNK``
    on, as far as its window reads, so each output reads exactly what it reads in the long row."""
    span, n, before = int(col_window.start.max()), col_window.n, col_window.before
    rows = -(-n // _ROW_CHUNK)
    after = np.full(rows * _ROW_CHUNK + _ROW_CHUNK - before - n, -1, np.int64)
    after[: col_window.line.size - before - n] = col_window.line[before + n :]
    head = gather_or_fill(xp, image, col_window.line[:before], -1, fill)
    tail = gather_or_fill(xp, image, after, -1, fill)
    extended = xp.concat([head, image, tail], axis=-1)
    lead = tuple(image.shape[:-1])
    main = xp.reshape(extended[..., : rows * _ROW_CHUNK], (*lead, rows, _ROW_CHUNK))
    halo = xp.reshape(extended[..., _ROW_CHUNK:], (*lead, rows, _ROW_CHUNK))[..., :span]
    folded = xp.concat([main, halo], axis=-1)
    width = _ROW_CHUNK + span
    column = AxisWindow(
        line=np.concatenate([np.arange(width, dtype=np.int64), np.full(span, -1, np.int64)]),
        start=col_window.start,
        n=width,
        before=0,
        reflected=col_window.reflected,
    )
    row = axis_window(rows, 1, col_window.reflected, "neutral", 0)
    values, taps = kernel(xp, semiring, folded, weights, support, row, column, fill, rounding, winners)
    values = xp.reshape(values[..., :_ROW_CHUNK], (*lead, rows * _ROW_CHUNK))[..., :n]
    if taps is not None:
        taps = xp.reshape(taps[..., :_ROW_CHUNK], (*lead, rows * _ROW_CHUNK))[..., :n]
    return values, taps


def _flattened_planes(xp, semiring, image, weights, mask, windows, fill, rounding, kernel, winners=True):
    """``n > 2`` axes as one 2-D morphology: every axis but the first is extended through its own
    window (border values included) and the extended planes are flattened into one axis, where a
    tap of those axes is a single offset (the row-major sum of its per-axis offsets). The first
    axis keeps its window; the element is ``(k_1, k_2 * .. * k_n)`` with the same flat indices, so
    the kernel's values and winners are the N-D ones. Outputs are computed over the extended planes
    (a margin of ``k - 1`` per axis) and the image's part is kept."""
    n = mask.ndim
    first, rest = windows[0], windows[1:]
    extended = image
    for d, window in enumerate(rest):
        extended = gather_or_fill(xp, extended, window.line, -(n - 1) + d, fill)
    lengths, plane, column = _plane_column(rest)
    lead = tuple(extended.shape[: -(n - 1)])
    rows = xp.reshape(extended, (*lead, plane))
    k0 = mask.shape[0]
    w = None if weights is None else xp.reshape(weights, (k0, -1))
    values, taps = kernel(xp, semiring, rows, w, mask.reshape(k0, -1), first, column, fill, rounding, winners)
    keep = (..., *(slice(0, window.n) for window in rest))
    values = xp.reshape(values, (*lead, *lengths))[keep]
    return values, None if taps is None else xp.reshape(taps, (*lead, *lengths))[keep]


def _plane_column(rest: list[AxisWindow]) -> tuple[list[int], int, AxisWindow]:
    """``(extended lengths, their product, the column window)`` of :func:`_flattened_planes`: the
    window of the flattened extended planes, whose taps are the row-major offsets of the rest
    axes' taps (and whose reads past the planes are the border value: only dropped outputs read
    there)."""
    lengths = [window.line.size for window in rest]
    plane = math.prod(lengths)
    offsets = np.zeros(1, dtype=np.int64)
    for d, window in enumerate(rest):  # row-major over the rest axes' taps
        offsets = (offsets[:, None] + window.start[None, :] * math.prod(lengths[d + 1 :])).reshape(-1)
    column = AxisWindow(
        line=np.concatenate([np.arange(plane, dtype=np.int64), np.full(int(offsets.max()), -1, np.int64)]),
        start=offsets,
        n=plane,
        before=0,
    )
    return lengths, plane, column


def _separable_box(xp, semiring, image, shape, windows, fill, rounding, kernel, winners=True):
    """A flat box over ``n > 2`` axes, O(1) per pixel in its size: the box over the last ``n - 1``
    axes, then the first axis alone over that result (as a (k, 1) element on rows of the flattened
    other axes, so the kernel's running extremum serves it too). A box's lowest-index winner is the
    lowest first-axis tap whose slice of the box holds the extremum, then that slice's lowest tap
    (row-major order), so the inner winner is read where the chosen first-axis tap reads; a tap
    reading the border value there has the whole slice on it, and its lowest tap, 0, wins."""
    n = len(windows)
    first, rest = windows[0], windows[1:]
    inner, inner_winners = _filter(
        xp, semiring, image, None, np.ones(shape[1:], bool), rest, fill, rounding, winners
    )
    lead, length, tail = tuple(inner.shape[:-n]), first.n, math.prod(inner.shape[-n + 1 :])
    rows = xp.reshape(inner, (*lead, length, tail))
    column = axis_window(tail, 1, first.reflected, first.mode, 0)
    values, taps = kernel(
        xp, semiring, rows, None, np.ones((shape[0], 1), bool), first, column, fill, rounding, winners
    )
    if not winners:
        return xp.reshape(values, tuple(image.shape)), None
    dev = device(image)
    # Index arithmetic in int32 where it fits (it is most of this function's time).
    itype = xp.int32 if math.prod(inner.shape) < 2**31 and math.prod(shape) < 2**31 else xp.int64
    u = xp.astype(taps, itype)
    none = u < 0
    u = xp.where(none, xp.zeros_like(u), u)
    position = xp.reshape(xp.arange(length, dtype=itype, device=dev), (length, 1))
    indices = first.indices
    table = xp.asarray(indices.reshape(-1), dtype=itype, device=dev)
    source = xp.reshape(xp.take(table, xp.reshape(position * shape[0] + u, (-1,))), tuple(u.shape))
    border = bool((indices < 0).any())  # only "neutral" and "constant" read the border value
    inside = source >= 0
    if border:
        source = xp.where(inside, source, xp.zeros_like(source))
    batch = xp.reshape(xp.arange(math.prod(lead), dtype=itype, device=dev), (*lead, 1, 1))
    column_index = xp.reshape(xp.arange(tail, dtype=itype, device=dev), (1, tail))
    flat = (batch * length + source) * tail + column_index
    read = xp.astype(xp.take(xp.reshape(inner_winners, (-1,)), xp.reshape(flat, (-1,))), itype)
    read = xp.reshape(read, tuple(u.shape))
    if border:
        read = xp.where(inside, read, xp.zeros_like(read))
    per_tap = math.prod(shape[1:])
    winners = xp.where(none, xp.full_like(u, -1), u * per_tap + read)
    index_type = index_dtype(xp, math.prod(shape))
    out_shape = tuple(image.shape)
    return xp.reshape(values, out_shape), xp.reshape(xp.astype(winners, index_type), out_shape)


def _vjp(xp, grad, winners, shapes, needs, *, support, window, axes, maximise, modes, fill):
    """``(grad_image, grad_structure)``: each output's gradient to the pixel its winner read (through
    the border mode) and to the winning tap (negated for an erosion, which subtracts the structure)."""
    image_shape, structure_shape = shapes
    axes = tuple(axes)
    n = len(axes)
    need_structure = needs[1] and structure_shape is not None
    flags = (needs[0], need_structure)
    moved_shape = _moved_shape(tuple(image_shape), axes)
    windows = _windows(moved_shape[-n:], window, maximise, modes)
    grad, winners = _to_end(xp, grad, axes), _to_end(xp, winners, axes)
    if structure_shape is None or len(structure_shape) == n:
        grad_image, grad_weights = _filter_vjp(xp, grad, winners, moved_shape, windows, flags)
    else:  # one element per channel (the axis before the filtered ones)
        channel_shape = moved_shape[: -n - 1] + moved_shape[-n:]
        results = [
            _filter_vjp(xp, _channel(grad, c, n), _channel(winners, c, n), channel_shape, windows, flags)
            for c in range(structure_shape[0])
        ]
        grad_image = xp.stack([r[0] for r in results], axis=-n - 1) if needs[0] else None
        grad_weights = xp.stack([r[1] for r in results], axis=0) if need_structure else None
    if grad_image is not None:
        grad_image = _from_end(xp, grad_image, axes)
    if grad_weights is not None and not maximise:
        grad_weights = 0.0 - grad_weights  # not -x: taps that never win get +0.0, not -0.0
    return grad_image, grad_weights


def _filter_vjp(xp, grad, winners, image_shape, windows, flags):
    """The vjp of :func:`_filter` (image shape ``image_shape``) with the backend's 2-D kernel."""
    kernel = kernel_for("morphology_vjp", xp) or morphology_vjp_reference
    n = len(windows)
    if n == 1:
        row = axis_window(1, 1, windows[0].reflected, windows[0].mode, 0)
        shape = (*image_shape[:-1], 1, image_shape[-1])
        g, k = xp.expand_dims(grad, axis=-2), xp.expand_dims(winners, axis=-2)
        grad_image, grad_weights = kernel(xp, g, k, shape, row, windows[0], flags)
        grad_image = None if grad_image is None else grad_image[..., 0, :]
        return grad_image, None if grad_weights is None else grad_weights[0, ...]
    if n == 2:
        return kernel(xp, grad, winners, tuple(image_shape), windows[0], windows[1], flags)
    # n > 2: the vjp of the flattened planes (the forward's outputs past the image's part: no
    # gradient, no winner), then back through the extension of each rest axis (border reads drop).
    first, rest = windows[0], windows[1:]
    lengths, plane, column = _plane_column(rest)
    dev = device(grad)
    g, k = grad, winners
    for d, window in enumerate(rest):
        axis = -(n - 1) + d
        extra = list(g.shape)
        extra[axis] = window.line.size - window.n
        g = xp.concat([g, xp.zeros(tuple(extra), dtype=g.dtype, device=dev)], axis=axis)
        k = xp.concat([k, xp.full(tuple(extra), -1, dtype=k.dtype, device=dev)], axis=axis)
    lead = tuple(g.shape[: -(n - 1)])
    g, k = xp.reshape(g, (*lead, plane)), xp.reshape(k, (*lead, plane))
    grad_image, grad_weights = kernel(xp, g, k, (*lead, plane), first, column, flags)
    if grad_image is not None:
        grad_image = xp.reshape(grad_image, (*lead, *lengths))
        for d in reversed(range(n - 1)):
            grad_image = scatter_add(xp, grad_image, rest[d].line, rest[d].n, axis=-(n - 1) + d)
    if grad_weights is not None:
        grad_weights = xp.reshape(grad_weights, (first.start.size, *(w.start.size for w in rest)))
    return grad_image, grad_weights


def _jvp(xp, tangents, winners, shapes, *, support, window, axes, maximise, modes, fill):
    """The tangent of each output: the image's tangent at the pixel its winner read (0 for a border
    value) plus (dilation) or minus (erosion) the structure's tangent at the winning tap."""
    t_image, t_structure = tangents
    image_shape, structure_shape = shapes
    axes = tuple(axes)
    n = len(axes)
    shape = tuple(window[:n])
    known = t_image if t_image is not None else t_structure
    if math.prod(winners.shape) == 0:
        return xp.zeros(tuple(winners.shape), dtype=known.dtype, device=device(winners))
    moved = _to_end(xp, winners, axes)
    out_shape = tuple(moved.shape)
    lengths = out_shape[-n:]
    windows = _windows(lengths, window, maximise, modes)
    dev = device(winners)
    zero = xp.zeros((), dtype=known.dtype, device=dev)
    t = xp.astype(moved, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    out = xp.zeros(out_shape, dtype=known.dtype, device=dev)
    if t_image is not None:
        taps = _unravel(t, shape)
        inside, source = None, None
        for d in range(n):
            position = xp.reshape(
                xp.arange(lengths[d], dtype=xp.int64, device=dev), (lengths[d],) + (1,) * (n - 1 - d)
            )
            table = xp.asarray(windows[d].indices.reshape(-1), device=dev)
            src = xp.reshape(xp.take(table, xp.reshape(position * shape[d] + taps[d], (-1,))), out_shape)
            inside = src >= 0 if inside is None else inside & (src >= 0)
            source = src if source is None else source * lengths[d] + src
        pixels = math.prod(lengths)
        batch = xp.reshape(xp.arange(math.prod(out_shape) // pixels, dtype=xp.int64, device=dev), (-1, 1))
        flat = xp.reshape(batch * pixels + xp.reshape(source, (-1, pixels)), (-1,))
        flat = xp.where(xp.reshape(inside, (-1,)), flat, xp.zeros_like(flat))
        moved_tangent = _to_end(xp, xp.broadcast_to(t_image, tuple(winners.shape)), axes)
        values = xp.reshape(xp.take(xp.reshape(moved_tangent, (-1,)), flat), out_shape)
        out = out + xp.where(inside, values, zero)
    if t_structure is not None:
        taps = t
        if t_structure.ndim == n + 1:  # one element per channel: tap index within channel c's element
            C = t_structure.shape[0]
            channel = xp.reshape(xp.arange(C, dtype=xp.int64, device=dev), (C,) + (1,) * n)
            taps = t + channel * math.prod(shape)
        values = xp.take(xp.reshape(t_structure, (-1,)), xp.reshape(taps, (-1,)))
        values = xp.reshape(values, out_shape)
        out = out + values if maximise else out - values
    return _from_end(xp, xp.where(none, zero, out), axes)


def _meta(shapes, *, support, window, axes, maximise, modes, fill):
    """The output shape (the image's) and candidates, after the checks the kernels rely on."""
    image_shape, structure_shape = shapes
    image_shape = tuple(image_shape)
    n = len(axes)
    if n == 0 or len(window) != 2 * n or len(modes) != n:
        raise ValueError(
            f"window must be [k_1, .., k_n, c_1, .., c_n] and modes n names for n = len(axes) = {n} axes, "
            f"got window {list(window)!r} and modes {list(modes)!r}"
        )
    spatial_axes(len(image_shape), tuple(axes))
    shape = tuple(positive_int("window", k) for k in window[:n])
    if not all(0 <= c < k for c, k in zip(window[n:], shape, strict=True)):
        raise ValueError(f"window's centre must be a tap of the {shape} element, got {list(window)!r}")
    if len(support) != math.prod(shape):
        raise ValueError(f"support must have prod(k) = {math.prod(shape)} entries, got {len(support)}")
    for m in modes:
        check_mode(m)
    if structure_shape is not None:
        structure_shape = tuple(structure_shape)
        if structure_shape[-n:] != shape or len(structure_shape) not in (n, n + 1):
            raise ValueError(f"structure must have shape {shape} or (C, *{shape}), got {structure_shape}")
        if len(structure_shape) == n + 1:
            channel_axis = _channel_axis(len(image_shape), tuple(axes))
            if channel_axis is None or image_shape[channel_axis] != structure_shape[0]:
                raise ValueError(
                    f"a structure of shape {structure_shape} holds one element per channel: image must have "
                    f"{structure_shape[0]} channels on the axis before the filtered axes, got {image_shape}"
                )
    return image_shape, math.prod(shape)


MORPHOLOGY = define(
    Operator(
        name="morphology",
        inputs=("image", "structure"),
        optional=("structure",),
        params=(
            ("support", "bool[]"),
            ("window", "int[]"),
            ("axes", "int[]"),
            ("maximise", bool),
            ("modes", "str[]"),
            ("fill", float),
        ),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        skips_winners=True,
        kernel=(
            "morphology",
            ("xp", "semiring", "image", "weights", "support", "row_window", "col_window", "fill", "rounding")
            + ("winners",),
        ),
        vjp_kernel=(
            "morphology_vjp",
            ("xp", "grad", "indices", "image_shape", "row_window", "col_window", "needs"),
        ),
    )
)


def dilation_vjp(
    grad: Array,
    indices: Array,
    image_shape: tuple[int, ...],
    se_shape: tuple[int, ...],
    *,
    mode: str | tuple[str, ...] = "neutral",
    origin: int | tuple[int, ...] = 0,
    axes: int | tuple[int, ...] | None = None,
) -> tuple[Array, Array]:
    """Vector-Jacobian product of :func:`dilation`.

    With ``y*(x)`` the winning offset of output ``x`` (from ``return_indices=True``):
    ``dL/df(z) = sum_x g(x) [x - y*(x) maps to z]`` (through the border ``mode``) and
    ``dL/ds(y) = sum_x g(x) [y*(x) = y]``. Outputs without a winner send nothing. ``mode``,
    ``origin`` and ``axes`` as given to the dilation.

    Returns ``(grad_image, grad_structure)`` of shapes ``image_shape`` and ``se_shape``.
    """
    return _morphology_vjp(grad, indices, image_shape, se_shape, mode, origin, axes, reflected=True)


def erosion_vjp(
    grad: Array,
    indices: Array,
    image_shape: tuple[int, ...],
    se_shape: tuple[int, ...],
    *,
    mode: str | tuple[str, ...] = "neutral",
    origin: int | tuple[int, ...] = 0,
    axes: int | tuple[int, ...] | None = None,
) -> tuple[Array, Array]:
    """Vector-Jacobian product of :func:`erosion`: as :func:`dilation_vjp`, reading ``f(x + y*)``
    and with ``dL/ds(y) = -sum_x g(x) [y*(x) = y]`` (the structure is subtracted)."""
    return _morphology_vjp(grad, indices, image_shape, se_shape, mode, origin, axes, reflected=False)


def _morphology_vjp(grad, indices, image_shape, se_shape, mode, origin, axes, reflected):
    engine = engine_of(grad, indices)
    raw_grad, raw_indices = arrays(grad, indices)
    xp = array_namespace(grad=raw_grad, indices=raw_indices)
    require_floating(xp, "grad", raw_grad)
    require_integer(xp, "indices", raw_indices)
    image_shape = shape_tuple("image_shape", image_shape)
    n = 2 if axes is None else len(spatial_axes(max(len(image_shape), 1), axes))
    image_shape = shape_tuple("image_shape", image_shape, n)
    modes = axis_modes(mode, n)
    axes = spatial_axes(len(image_shape), axes)
    for name, x in (("grad", raw_grad), ("indices", raw_indices)):
        if tuple(x.shape) != image_shape:
            raise ValueError(f"{name} must have the image's shape {image_shape}, got {tuple(x.shape)}")
    element = shape_tuple("se_shape", se_shape, ndim=n)
    if min(element) < 1:
        raise ValueError(f"se_shape must be >= 1, got {se_shape!r}")
    original = _centres(origin, element)
    centres, kept, maps = list(original), [], []
    for d, a in enumerate(axes):
        window, tap_map = flat_axis_window(image_shape[a], element[d], reflected, modes[d], original[d])
        kept.append(window.start.size)
        maps.append(tap_map)
        centres[d] = window.centre
    params = dict(
        support=(True,) * math.prod(kept),
        window=[*kept, *centres],
        axes=list(axes),
        maximise=reflected,
        modes=list(modes),
        fill=0.0,  # the vjp does not read the border value
    )
    if all(m is None for m in maps):
        return run_vjp(MORPHOLOGY, grad, indices, (image_shape, element), (True, True), params)
    # An element much longer than the image: the image gradient through the cut-down window (taps
    # that read the same sources share a kept one), the element's gradient summed per original tap.
    require_winners(xp, "indices", raw_indices, math.prod(element))
    t = xp.astype(raw_indices, xp.int64)
    none = t < 0
    t = xp.where(none, xp.zeros_like(t), t)
    taps = _unravel(t, element)
    for d, a in enumerate(axes):
        if maps[d] is not None:
            taps[d] = _kept_tap(xp, taps[d], image_shape[a], element[d], modes[d], original[d])
    kept_index = xp.where(none, xp.full_like(t, -1), _ravel(taps, tuple(kept)))
    kept_index = xp.astype(kept_index, index_dtype(xp, math.prod(kept)))
    kept_index = kept_index if engine is None else engine.wrap(kept_index)
    grad_image = run_vjp(MORPHOLOGY, grad, kept_index, (image_shape, tuple(kept)), (True, False), params)[0]
    grad_weights = _tap_sums(xp, raw_grad, raw_indices, element)
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


def _python_footprint(footprint: Any) -> tuple[tuple[int, ...], tuple[bool, ...]] | None:
    """A footprint given as non-empty rectangular nested lists/tuples of Python bools or ints, as
    ``(shape, flat support)``; None for anything else (checked through NumPy)."""
    if not isinstance(footprint, (list, tuple)) or not footprint:
        return None
    if all(isinstance(v, int) for v in footprint):
        return (len(footprint),), tuple(v != 0 for v in footprint)
    parts = [_python_footprint(row) for row in footprint]
    if any(p is None for p in parts) or len({p[0] for p in parts}) != 1:
        return None
    return (len(parts), *parts[0][0]), tuple(bit for p in parts for bit in p[1])


def check_mode(mode: str) -> None:
    """``ValueError`` naming ``mode`` and the allowed values unless it is a border mode name."""
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")


def _structuring_element(xp: ModuleType, structure: Any, footprint: Any, size: Any, n: int):
    """Resolve (structure, footprint, size) of an ``n``-axis element into ``(support, element
    shape, structure)``: the support as a flat tuple of Python bools (None for a ``size=``, which
    the caller builds).

    The support is made of Python bools, not a NumPy array: under ``torch.compile`` a NumPy array
    made here would be a traced tensor whose values are unknown.
    """
    if size is not None and (structure is not None or footprint is not None):
        raise ValueError("size cannot be combined with structure or footprint; give one of them")
    if structure is None and footprint is None and size is None:
        raise ValueError("one of structure, footprint or size is required")
    if size is not None:
        return None, ints("size", size, n, 1), None
    if structure is not None:
        require_floating(xp, "structure", structure)
        if structure.ndim not in (n, n + 1):
            raise ValueError(
                f"structure must have {n} dimensions (one per filtered axis) or {n + 1} (one element per "
                f"channel), got shape {tuple(structure.shape)}"
            )
        if 0 in tuple(structure.shape):
            raise ValueError(f"structure must not be empty, got shape {tuple(structure.shape)}")
    element_shape = None if structure is None else tuple(structure.shape[-n:])
    if footprint is None:
        return (True,) * math.prod(element_shape), element_shape, structure
    given = _python_footprint(footprint)
    if given is None:  # a NumPy (or other host) mask: eager only under torch.compile
        try:
            support = np.asarray(footprint)
        except Exception as exc:  # e.g. a GPU array: footprints are small host-side masks
            raise TypeError(f"footprint must be convertible to a NumPy boolean array ({exc})") from None
        if support.dtype != bool and not np.issubdtype(support.dtype, np.integer):
            raise TypeError(
                f"footprint must be boolean, got dtype {support.dtype} (use structure= for additive offsets)"
            )
        given = support.shape, tuple(bool(v) for v in (support != 0).reshape(-1).tolist())
    shape, support = given
    if len(shape) != n or 0 in shape:
        raise ValueError(
            f"footprint must be a non-empty {n}-D mask (one axis per filtered axis), got shape {shape}"
        )
    if element_shape is not None and element_shape != shape:
        raise ValueError(
            f"structure and footprint must have the same shape, got {tuple(structure.shape)} and {shape}"
        )
    return support, tuple(shape), structure
