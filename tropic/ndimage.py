"""SciPy's grey-morphology functions, with SciPy's names, signatures and defaults, on tropic's kernels.

A drop-in for ``scipy.ndimage``'s ``grey_dilation``, ``grey_erosion``, ``grey_opening``,
``grey_closing``, ``morphological_gradient``, ``morphological_laplace``, ``white_tophat`` and
``black_tophat``: the same positional order (``input, size, footprint, structure, output, mode,
cval, origin``, keyword ``axes``), every axis filtered by default, ``mode="reflect"``, the result in
the input's dtype (or ``output``'s, wrapped modulo an integer dtype's range as SciPy's C casts
wrap), the intermediate results of the compositions cast as SciPy casts
them, and the values bitwise SciPy's, but for NaN (it propagates here, where SciPy's comparisons skip
it) and the sign of a zero on ``0.0`` / ``-0.0`` ties. Beyond SciPy: a sequence of modes with any
footprint, NumPy, CuPy and torch arrays, and the speed of tropic's kernels.

:func:`tropic.dilation` and the other functions of the top-level namespace are the same operators
with tropic's own conventions: the last two axes by default (the others are a batch), the
``"neutral"`` border (the tropical zero), winners and gradients.

Examples
--------
>>> import numpy as np
>>> from tropic import ndimage
>>> a = np.zeros((5, 5), np.uint8); a[2, 2] = 7
>>> ndimage.grey_dilation(a, size=(3, 3))[1:4, 1:4]
array([[7, 7, 7],
       [7, 7, 7],
       [7, 7, 7]], dtype=uint8)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .core import morphology as _core
from .core._array_api import array_namespace, device

__all__ = [
    "black_tophat",
    "grey_closing",
    "grey_dilation",
    "grey_erosion",
    "grey_opening",
    "morphological_gradient",
    "morphological_laplace",
    "white_tophat",
]


def grey_dilation(
    input: Any,
    size: Any = None,
    footprint: Any = None,
    structure: Any = None,
    output: Any = None,
    mode: Any = "reflect",
    cval: float = 0.0,
    origin: Any = 0,
    *,
    axes: Any = None,
) -> Any:
    """``scipy.ndimage.grey_dilation``: ``max_y f(x - y) + s(y)`` over ``axes`` (default all).

    Returns an array of ``input``'s dtype (or written into ``output``); see :func:`tropic.dilation`
    for the operator.
    """
    return _primitive(_core.dilation, input, size, footprint, structure, output, mode, cval, origin, axes)


def grey_erosion(
    input: Any,
    size: Any = None,
    footprint: Any = None,
    structure: Any = None,
    output: Any = None,
    mode: Any = "reflect",
    cval: float = 0.0,
    origin: Any = 0,
    *,
    axes: Any = None,
) -> Any:
    """``scipy.ndimage.grey_erosion``: ``min_y f(x + y) - s(y)`` over ``axes`` (default all)."""
    return _primitive(_core.erosion, input, size, footprint, structure, output, mode, cval, origin, axes)


def grey_opening(input, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0,
                 origin=0, *, axes=None):  # fmt: skip
    """``scipy.ndimage.grey_opening``: the erosion (in ``input``'s dtype), then the dilation."""
    size = _footprint_wins(size, footprint)
    tmp = grey_erosion(input, size, footprint, structure, None, mode, cval, origin, axes=axes)
    return grey_dilation(tmp, size, footprint, structure, output, mode, cval, origin, axes=axes)


def grey_closing(input, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0,
                 origin=0, *, axes=None):  # fmt: skip
    """``scipy.ndimage.grey_closing``: the dilation (in ``input``'s dtype), then the erosion."""
    size = _footprint_wins(size, footprint)
    tmp = grey_dilation(input, size, footprint, structure, None, mode, cval, origin, axes=axes)
    return grey_erosion(tmp, size, footprint, structure, output, mode, cval, origin, axes=axes)


def white_tophat(input, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0,
                 origin=0, *, axes=None):  # fmt: skip
    """``scipy.ndimage.white_tophat``: ``input - opening`` (``xor`` for boolean arrays), in the
    opening's dtype."""
    input = _as_array(input)
    size = _footprint_wins(size, footprint)
    tmp = grey_erosion(input, size, footprint, structure, None, mode, cval, origin, axes=axes)
    tmp = grey_dilation(tmp, size, footprint, structure, output, mode, cval, origin, axes=axes)
    return _into(tmp, _core._difference(input, tmp))


def black_tophat(input, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0,
                 origin=0, *, axes=None):  # fmt: skip
    """``scipy.ndimage.black_tophat``: ``closing - input`` (``xor`` for boolean arrays), in the
    closing's dtype."""
    input = _as_array(input)
    size = _footprint_wins(size, footprint)
    tmp = grey_dilation(input, size, footprint, structure, None, mode, cval, origin, axes=axes)
    tmp = grey_erosion(tmp, size, footprint, structure, output, mode, cval, origin, axes=axes)
    return _into(tmp, _core._difference(tmp, input))


def morphological_gradient(input, size=None, footprint=None, structure=None, output=None, mode="reflect",
                           cval=0.0, origin=0, *, axes=None):  # fmt: skip
    """``scipy.ndimage.morphological_gradient``: dilation minus erosion, each in ``input``'s dtype
    (into ``output`` when it is an array; a dtype ``output`` is ignored, as SciPy ignores it)."""
    tmp = grey_dilation(input, size, footprint, structure, None, mode, cval, origin, axes=axes)
    if _is_array(output):
        grey_erosion(input, size, footprint, structure, output, mode, cval, origin, axes=axes)
        return _into(output, tmp - output)
    return tmp - grey_erosion(input, size, footprint, structure, None, mode, cval, origin, axes=axes)


def morphological_laplace(input, size=None, footprint=None, structure=None, output=None, mode="reflect",
                          cval=0.0, origin=0, *, axes=None):  # fmt: skip
    """``scipy.ndimage.morphological_laplace``: ``((dilation + erosion) - input) - input``, each step
    stored in the erosion's array (``output`` when it is an array, else ``input``'s dtype)."""
    input = _as_array(input)
    tmp1 = grey_dilation(input, size, footprint, structure, None, mode, cval, origin, axes=axes)
    into = output if _is_array(output) else None
    tmp2 = grey_erosion(input, size, footprint, structure, into, mode, cval, origin, axes=axes)
    tmp2 = _into(tmp2, tmp1 + tmp2)
    tmp2 = _into(tmp2, tmp2 - input)
    return _into(tmp2, tmp2 - input)


def _primitive(operator, input, size, footprint, structure, output, mode, cval, origin, axes):
    """One of SciPy's two primitives on tropic's: SciPy's argument rules, then the operator over
    the axes, cast to ``input``'s dtype (SciPy's default output) or written into ``output``."""
    input = _as_array(input)
    xp = array_namespace(input=input)
    if size is None and footprint is None and structure is None:
        raise ValueError("size, footprint, or structure must be specified")
    if input.ndim == 0:
        raise ValueError("input must have at least one dimension")
    size = _footprint_wins(size, footprint)
    mask = None if footprint is None else np.asarray(footprint, dtype=bool)
    as_bytes = structure is not None and _core._kind(input.dtype) == "b"
    if as_bytes:  # SciPy's C loop sums a boolean image's candidates as bytes (numpy.bool_ is one)
        input = input.view(xp.uint8)  # NumPy, CuPy and torch arrays
    if structure is not None:
        structure = xp.asarray(structure, dtype=xp.float64, device=device(input))
        structure = _as_scipy_adds(xp, structure, mask, input.dtype, operator is _core.dilation)
    axes = _axes(axes, input.ndim)
    if structure is None and (mask is None or mask.all()):
        result = _separable(operator, input, size if mask is None else mask.shape, axes, origin, mode, cval)
    else:
        if structure is None and not mask.any():
            raise ValueError("footprint must have a True entry: an all-zero footprint is not supported")
        args = (axes, origin, mode, cval)
        dilate = operator is _core.dilation
        if (
            structure is not None
            and _core._kind(input.dtype) == "i"
            and _may_wrap(xp, input, structure, dilate, cval)
        ):
            result = _wrapped_sums(xp, operator, input, structure, mask, args)
        elif structure is not None and _wider(output, input.dtype):
            result = _float32_sums(xp, operator, input, structure, mask, args)
        else:
            result = _general(operator, input, structure, mask, *args)
    if as_bytes:  # stored as SciPy stores it: the byte, in a boolean array (nonzero is True)
        if output is None or (not _is_array(output) and output in (bool, np.bool_, xp.bool)):
            return _cast(xp, result, xp.uint8).view(xp.bool)
    if output is None:
        return _cast(xp, result, input.dtype)
    if _is_array(output):
        return _into(output, _cast(xp, result, output.dtype))
    return _cast(xp, result, output)


def _wider(output: Any, dtype: Any) -> bool:
    """Whether ``output`` (an array, a dtype or None) asks for a float wider than a float32 ``dtype``."""
    if output is None or _core._kind(dtype) != "f" or np.dtype(_core._numpy_dtype(dtype)).itemsize >= 8:
        return False
    wanted = output.dtype if _is_array(output) else output
    try:
        return np.dtype(_core._numpy_dtype(wanted)).itemsize > np.dtype(_core._numpy_dtype(dtype)).itemsize
    except TypeError:
        return False


def _first_tap(support: np.ndarray, operator: Any) -> np.ndarray:
    """The tap SciPy's C loop reads first: the first of the footprint in C order, of the reflected
    element for a dilation (its last)."""
    taps = np.flatnonzero(support.reshape(-1))
    first = np.zeros(support.size, bool)
    first[taps[-1] if operator is _core.dilation else taps[0]] = True
    return first.reshape(support.shape)


def _int_adds(structure: np.ndarray, dtype: Any) -> np.ndarray:
    """The structure's values as C casts them to the integer ``dtype`` (x86: truncated, wrapped
    modulo its range)."""
    wide = np.clip(np.trunc(structure), -(2.0**63), 2.0**63 - 1024).astype(np.int64)
    return wide.astype(_core._numpy_dtype(dtype)).astype(np.int64)


def _scipy_adds(structure: Any, dilate: bool) -> np.ndarray:
    """What SciPy's C loop adds to the image at each tap: ``s`` (dilation) or ``-s`` (erosion)."""
    host = _core._host(structure)
    return host if dilate else -host


def _may_wrap(xp: Any, input: Any, structure: Any, dilate: bool, cval: float) -> bool:
    """Whether a candidate ``f ± s`` of an integer image (or of ``cval`` beyond its border) can leave
    its dtype's range (where SciPy's C loop wraps)."""
    if math.prod(input.shape) == 0:
        return False
    adds = _int_adds(_scipy_adds(structure, dilate), input.dtype)
    info = np.iinfo(_core._numpy_dtype(input.dtype))
    border = int(_int_adds(np.asarray(float(cval)), input.dtype))
    low, high = min(int(xp.min(input)), border), max(int(xp.max(input)), border)
    return low + int(adds.min()) < info.min or high + int(adds.max()) > info.max


def _wrapped_sums(xp, operator, input, structure, mask, args):
    """An integer image whose candidates leave its range, as SciPy's C loop computes them: the first
    candidate ``f + a`` in double precision, every other one ``f + (dtype) a`` wrapped in the
    image's dtype (``a`` is ``s``, ``-s`` for an erosion). The taps are grouped by their wrapped
    value ``v``: each group is a flat morphology of the wrapped image ``f + v`` (and ``cval + v``),
    and the groups are combined."""
    axes, origin, mode, cval = args
    support = np.ones(tuple(structure.shape), bool) if mask is None else mask
    first = _first_tap(support, operator)
    result = _general(operator, input, structure, first, *args)
    adds = _int_adds(_scipy_adds(structure, operator is _core.dilation), input.dtype)
    pick = xp.maximum if operator is _core.dilation else xp.minimum
    border = int(_int_adds(np.asarray(float(cval)), input.dtype))
    others = support & ~first
    for value in np.unique(adds[others]).tolist():
        shifted = xp.astype(xp.astype(input, xp.int64) + value, input.dtype)
        border_value = int(np.asarray(border + value).astype(_core._numpy_dtype(input.dtype)))
        part = _general(operator, shifted, None, others & (adds == value), axes, origin, mode, border_value)
        result = pick(result, xp.astype(part, result.dtype))
    return result


def _float32_sums(xp, operator, input, structure, mask, args):
    """A float32 image with a structure, written to a wider output: SciPy adds the first candidate in
    double precision and the others in float32, so the two sets are filtered apart and combined."""
    support = np.ones(tuple(structure.shape), bool) if mask is None else mask
    first = _first_tap(support, operator)
    exact = _general(operator, input, structure, first, *args)
    if support.sum() == 1:
        return exact
    rounded = _general(operator, input, xp.astype(structure, input.dtype), support & ~first, *args)
    pick = xp.maximum if operator is _core.dilation else xp.minimum
    return pick(exact, xp.astype(rounded, exact.dtype))


def _as_scipy_adds(xp: Any, structure: Any, mask: Any, dtype: Any, dilate: bool) -> Any:
    """The structure as SciPy's C loop adds it to an image of ``dtype``: its first candidate (the
    first tap of the footprint in C order, of the reflected element for a dilation) in double
    precision, every other one first cast to the image's dtype (truncated for integers, rounded for
    float32) and added in that dtype (exact in float64 while the sums stay in the dtype's range)."""
    kind = _core._kind(dtype)
    if kind == "b" or (kind == "f" and np.dtype(_core._numpy_dtype(dtype)).itemsize >= 8):
        return structure
    support = np.ones(tuple(structure.shape), bool) if mask is None else mask
    if not support.any():
        return structure
    if kind == "i":  # as SciPy casts what it adds (-s for an erosion), then back to s
        added = _int_adds(_scipy_adds(structure, dilate), dtype).astype(np.float64)
        adds = xp.asarray(added if dilate else -added, device=device(structure))
    else:
        adds = xp.astype(xp.astype(structure, dtype), xp.float64)
    first = _first_tap(support, _core.dilation if dilate else _core.erosion)
    return xp.where(xp.asarray(first, device=device(structure)), structure, adds)


def _axes(axes: Any, ndim: int) -> tuple[int, ...]:
    """SciPy's ``axes``: every axis by default, else non-negative, in the order given."""
    if axes is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in _core.spatial_axes(ndim, axes))


def _per_axis(value: Any, n: int, name: str) -> list:
    """One value per filtered axis from one value or a sequence of ``n`` (SciPy's normalisation)."""
    if isinstance(value, str) or not hasattr(value, "__len__"):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} must have one entry per filtered axis ({n}), got {value!r}")
    return values


def _separable(operator, input, size, axes, origin, mode, cval):
    """A flat box, SciPy's separable case: size, origin and mode pair with ``axes`` in the order
    given; axes of size 1 are not filtered (their origin is not read)."""
    n = len(axes)
    sizes, origins, modes = (
        _per_axis(size, n, "size"),
        _per_axis(origin, n, "origin"),
        _per_axis(mode, n, "mode"),
    )
    keep = [i for i in range(n) if sizes[i] > 1]
    if not keep:
        return input
    exact = _core._exact_float(array_namespace(input=input), input, None)
    if exact is not None:  # SciPy's 1-D filters run in double: cval is not cast to an integer dtype
        input = exact
    return operator(
        input,
        size=[sizes[i] for i in keep],
        axes=[axes[i] for i in keep],
        origin=[origins[i] for i in keep],
        mode=[modes[i] for i in keep],
        cval=cval,
    )


def _general(operator, input, structure, mask, axes, origin, mode, cval):
    """A footprint or a structure, SciPy's general case: the element's axes are the filtered axes in
    increasing order, and the origins are placed as SciPy places them (its dilation reflects the
    element and its origin, pairing origin ``i`` with the element's axis ``i``)."""
    n, ndim = len(axes), input.ndim
    element = tuple(structure.shape) if structure is not None else mask.shape
    if len(element) != n:
        name = "structure" if structure is not None else "footprint"
        raise ValueError(f"{name} must have one axis per filtered axis ({n}), got shape {element}")
    order = sorted(axes)
    origins = _per_axis(origin, n, "origin")
    dilate = operator is _core.dilation
    if dilate:  # SciPy's reflection of the origin, by the element's axis of the same position
        origins = [-o - (1 - element[i] % 2) for i, o in enumerate(origins)]
    per_axis = {a: origins[axes.index(a)] for a in axes} if n < ndim else dict(enumerate(origins))
    tropic_origins = []
    for j, a in enumerate(order):
        k, o = element[j], per_axis[a]
        if not 0 <= k // 2 + o < k:
            raise ValueError(f"invalid origin {origin!r} for an element of shape {element}")
        centre = k - 1 - (k // 2 + o) if dilate else k // 2 + o  # the reflected filter's origin
        tropic_origins.append(centre - k // 2)
    modes = mode if isinstance(mode, str) else [_per_axis(mode, n, "mode")[axes.index(a)] for a in order]
    return operator(
        input, structure, footprint=mask, axes=order, origin=tropic_origins, mode=modes, cval=cval
    )


def _cast(xp: Any, result: Any, dtype: Any) -> Any:
    """``result`` in ``dtype`` as SciPy's C cast stores it: truncated toward zero, and for an
    integer dtype wrapped modulo its range (SciPy's rule for negative values in unsigned dtypes; a
    C cast is undefined beyond the range otherwise, and this is what x86 gives)."""
    if result.dtype == dtype:
        return result
    if _core._kind(dtype) == "i" and _core._kind(result.dtype) == "f":
        wide = xp.clip(xp.trunc(result), -(2.0**63), 2.0**63 - 1024)
        return xp.astype(xp.astype(wide, xp.int64), dtype)
    return xp.astype(result, dtype)


def _footprint_wins(size: Any, footprint: Any) -> Any:
    """SciPy ignores ``size`` when a footprint is given, with a warning."""
    if size is not None and footprint is not None:
        warnings.warn("ignoring size because footprint is set", UserWarning, stacklevel=3)
        return None
    return size


def _as_array(x: Any) -> Any:
    """Arrays of any library as they are; lists and scalars as NumPy arrays (as SciPy takes them)."""
    return x if _is_array(x) else np.asarray(x)


def _is_array(x: Any) -> bool:
    """An array (not a dtype: NumPy's scalar types have class attributes ``shape`` and ``dtype``)."""
    return not isinstance(x, type) and hasattr(x, "shape") and hasattr(x, "dtype")


def _into(out: Any, value: Any) -> Any:
    """``value`` stored in the array ``out`` (cast to its dtype, as NumPy's ``out=`` stores), which
    may share memory with ``value``'s operands; returns ``out``."""
    if hasattr(out, "copy_"):
        out.copy_(value)
    else:
        out[...] = value
    return out
