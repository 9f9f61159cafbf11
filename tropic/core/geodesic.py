"""Geodesic morphology: reconstruction by dilation and by erosion, and the operators built on it.

Notation: ``S`` is the set of neighbour steps of a footprint, ``S = {k - offset : footprint[k]}``
without the zero step; the value at pixel ``p`` reaches ``p + s`` for every ``s`` in ``S``. The
geodesic dilation of ``J`` under ``mask`` is ``min(δ_S(J), mask)`` with
``δ_S(J)(x) = max(J(x), max_{s ∈ S} J(x - s))`` (pixels outside the image are ignored), and the
reconstruction by dilation of ``seed`` under ``mask`` iterates it to stability::

    R^δ_mask(seed) = lim_k J_k,    J_0 = seed,    J_{k+1} = min(δ_S(J_k), mask)

(``seed <= mask``); the reconstruction by erosion ``R^ε`` exchanges max and min (``seed >= mask``).
These are the conventions of :func:`skimage.morphology.reconstruction`, whose values
:func:`reconstruction` reproduces bitwise.

On NumPy arrays a compiled kernel (``tropic/backends/numpy/csrc/geodesic_c.c``: L. Vincent's hybrid
algorithm, two raster scans and a queue that serves the highest values first, any number of
dimensions) computes the reconstruction; the array-API reference below (the iteration above, written
with shifted slices) runs everywhere else, and
on NumPy when the compiled kernels are off (``TROPIC_DISABLE_COMPILED=1``). Both give the same bits.

Winners: every output equals one input value, a seed pixel or a mask pixel. Candidates are numbered
``0 .. n-1`` for the seed's pixels and ``n .. 2n-1`` for the mask's (C order, ``n = seed.size``); the
winner of an output is the candidate that the same reconstruction, run on the pairs
``(value, candidate)``, delivers there, with the pairs ordered by value and then by the *lower*
candidate number (``(v, i) > (v, j)`` for ``i < j``). That order is total, so the winner is unique and
does not depend on the algorithm. At ties, the maxima keep the lower number (DESIGN.md's lowest-index
rule over the candidates ``concat(seed, mask)``) and the minima with the mask the higher one: where a
seed pixel equals its own mask pixel, the mask pixel is the candidate that spreads.
:func:`reconstruction_vjp` sends each output's gradient to its winner.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ._array_api import Array, array_namespace, backend_name, device, index_dtype
from .checks import require_same_device
from .dispatch import kernel_for
from .engines import arrays, engine_of
from .morphology import _host, _python_footprint, dilation, erosion
from .spec import Operator, define

__all__ = [
    "closing_by_reconstruction",
    "fill_holes",
    "opening_by_reconstruction",
    "reconstruction",
    "reconstruction_reference",
    "reconstruction_vjp",
    "regional_maxima",
    "regional_minima",
]

_METHODS = ("dilation", "erosion")
_NO_ID = np.iinfo(np.int64).max  # candidate number of the padding and of NaN-reached pixels


# ----------------------------------------------------------------------------------------- public API


def reconstruction(
    seed: Array,
    mask: Array,
    method: str = "dilation",
    footprint: Any = None,
    offset: Any = None,
    *,
    return_indices: bool = False,
):
    """Morphological reconstruction of ``seed`` under (by dilation) or above (by erosion) ``mask``.

    By dilation, ``seed <= mask``: the seed's values spread to the neighbours given by ``footprint``
    as long as the mask allows, to stability::

        J_0 = seed,   J_{k+1}(x) = min(mask(x), max(J_k(x), max_{s ∈ S} J_k(x - s))),
        reconstruction = lim_k J_k,     S = {k - offset : footprint[k]} \\ {0}.

    By erosion, ``seed >= mask`` and max and min are exchanged. Same arguments, dtypes and values as
    :func:`skimage.morphology.reconstruction` (bitwise, for the inputs it accepts; see Notes).

    Parameters
    ----------
    seed : array, any shape
        The marker: the values that spread. Boolean, integer or real floating point; NumPy or any
        array-API array (the compiled kernel serves NumPy arrays).
    mask : array, same shape as ``seed``
        The upper bound (by dilation) or lower bound (by erosion) of the result.
    method : {"dilation", "erosion"}
        Reconstruction by dilation or by erosion.
    footprint : array-like, optional
        The neighbourhood, ``seed.ndim`` dimensions, nonzero entries are neighbours. Default: all
        ones of shape ``(3,) * seed.ndim``. Its centre (``offset``) is always part of it.
    offset : sequence of ints, optional
        The centre of ``footprint`` (``0 <= offset[i] < footprint.shape[i]``). Default: the middle,
        and then every dimension of ``footprint`` must be odd.
    return_indices : bool
        Also return the winner of every output (see the module docstring): an array of the seed's
        shape, of the smallest signed integer dtype that holds ``2 * seed.size - 1``, with values in
        ``[0, 2 * seed.size)`` (``< seed.size``: that seed pixel, else the mask pixel
        ``winner - seed.size``), ``-1`` where a NaN reached the output.

    Returns
    -------
    array
        The reconstruction, in the dtype scikit-image returns: float32 for a float16 or float32
        ``mask``, float64 otherwise (both inputs are cast to it first, as scikit-image does).

    Raises
    ------
    ValueError
        ``seed`` above ``mask`` somewhere (by dilation) or below it (by erosion); shapes that
        differ; an unknown ``method``; a ``footprint`` of the wrong number of dimensions, with an even
        dimension and no ``offset``, or an ``offset`` outside it.
    TypeError
        ``seed`` or ``mask`` not an array, or complex / non-numeric.

    Notes
    -----
    Differences from scikit-image: NaN propagates (an output that a NaN of ``seed`` or ``mask``
    reaches along the footprint is NaN; scikit-image's result is then unspecified, its padding takes
    ``min(seed)``, a NaN); an empty ``seed`` gives an empty result (scikit-image raises); a 0-d seed
    gives a 0-d array (not a scalar); ``offset`` may be any sequence of ``seed.ndim`` ints (scikit-image
    accepts one only for 1-D footprints). Zeros: where ``seed`` and ``mask`` hold both ``+0.0`` and
    ``-0.0``, every zero of the result is the zero that scikit-image's rank order picks (NumPy arrays).

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.core.geodesic import reconstruction
    >>> mask = np.array([0., 3., 1., 4., 2., 0.])
    >>> seed = np.array([0., 2., 0., 0., 0., 0.])
    >>> reconstruction(seed, mask)  # the 2 spreads until the mask stops it
    array([0., 2., 1., 1., 1., 0.])
    >>> reconstruction(np.full(6, 5.), mask, method="erosion")
    array([5., 5., 5., 5., 5., 5.])
    >>> values, winners = reconstruction(seed, mask, return_indices=True)
    >>> winners  # seed pixel 1 for the 2; mask pixel 2 (6 + 2) for the 1s; mask pixels 0 and 5 for the 0s
    array([ 6,  1,  8,  8,  8, 11], dtype=int8)
    """
    engine = engine_of(seed, mask)
    if engine is not None and _floating(seed) and _floating(mask):  # differentiable
        return _reconstruction_of_tensors(engine, seed, mask, method, footprint, offset, return_indices)
    if engine is not None:  # integer or boolean tensors: values only, on the arrays underneath
        seed, mask = arrays(seed, mask)
    xp = array_namespace(seed=seed, mask=mask)
    require_same_device(seed=seed, mask=mask)
    _require_real(xp, "seed", seed)
    _require_real(xp, "mask", mask)
    if tuple(seed.shape) != tuple(mask.shape):
        raise ValueError(
            f"seed and mask must have the same shape, got seed {tuple(seed.shape)} and mask "
            f"{tuple(mask.shape)}"
        )
    maximise = _method(method)
    fp, centre, steps = _footprint_steps(footprint, offset, seed.ndim, _ones_footprint)
    numpy = isinstance(seed, np.ndarray) and isinstance(mask, np.ndarray)
    work = _skimage_float_dtype(xp, mask.dtype)
    if numpy:  # compared in their own dtypes, as scikit-image does, before the cast
        _require_order(seed > mask if maximise else seed < mask, maximise)
        seed_w, mask_w = seed.astype(work, copy=False), mask.astype(work, copy=False)
    else:
        seed_w, mask_w = xp.astype(seed, work), xp.astype(mask, work)
        _require_order(seed_w > mask_w if maximise else seed_w < mask_w, maximise)
    values, winners, mixed_zeros = _reconstruct(xp, seed_w, mask_w, steps, maximise, return_indices)
    if numpy and mixed_zeros and values.size:
        values[values == 0] = _skimage_zero(seed, seed_w, mask_w, fp.shape, centre, maximise)
    if not return_indices:
        return values
    return values, xp.astype(winners, index_dtype(xp, 2 * _size(seed)))


def _reconstruction_of_tensors(engine, seed, mask, method, footprint, offset, return_indices):
    """:func:`reconstruction` of an engine's floating tensors (``tropic.autodiff``, torch): the
    operator :data:`RECONSTRUCTION`, differentiable in the seed and the mask (promoted to one
    dtype; the sign of a zero where the inputs hold both +0.0 and -0.0 is not specified)."""
    raw_seed, raw_mask = arrays(seed, mask)
    require_same_device(seed=raw_seed, mask=raw_mask)
    if tuple(raw_seed.shape) != tuple(raw_mask.shape):
        raise ValueError(
            f"seed and mask must have the same shape, got seed {tuple(raw_seed.shape)} and mask "
            f"{tuple(raw_mask.shape)}"
        )
    maximise = _method(method)
    # The steps in plain Python where the footprint is (the default, nested lists): NumPy here would
    # be traced by torch.compile (a NumPy footprint runs eagerly only).
    steps = _python_steps(footprint, offset, raw_seed.ndim)
    if steps is None:
        table = _footprint_steps(footprint, offset, raw_seed.ndim, _ones_footprint)[2]
        steps = [int(v) for v in table.reshape(-1)]
    params = {"steps": steps, "maximise": maximise}
    values, winners = engine.apply(RECONSTRUCTION, (seed, mask), params)
    return (values, winners) if return_indices else values


def _python_steps(footprint: Any, offset: Any, ndim: int) -> list[int] | None:
    """The flattened neighbour steps of a footprint given as nested Python lists (or None: the full
    ``3^ndim`` neighbourhood) and an offset of Python ints or None, computed without NumPy; None for
    anything else (or anything to refuse, which :func:`_footprint_steps` then explains)."""
    if footprint is None:
        shape, support = (3,) * ndim, (True,) * 3**ndim
    else:
        given = _python_footprint(footprint)
        if given is None or len(given[0]) != ndim:
            return None
        shape, support = given
    if offset is None:
        if any(d % 2 == 0 for d in shape):
            return None
        centre = tuple(d // 2 for d in shape)
    elif isinstance(offset, (list, tuple)) and len(offset) == ndim and all(type(o) is int for o in offset):
        centre = tuple(offset)
        if not all(0 <= o < d for o, d in zip(centre, shape, strict=True)):
            return None
    else:
        return None
    taps = itertools.product(*(range(d) for d in shape))
    steps = [
        tuple(k - c for k, c in zip(tap, centre, strict=True))
        for tap, on in zip(taps, support, strict=True)
        if on
    ]
    return [v for step in steps if any(step) for v in step]


def _floating(x: Any) -> bool:
    """Whether an engine's tensor is real floating point (then the reconstruction is differentiable)."""
    raw = arrays(x)[0]
    return array_namespace(x=raw).isdtype(raw.dtype, "real floating")


def _run(xp: ModuleType, seed: Array, mask: Array, *, steps: list[int], maximise: bool, rounding=None):
    """``(values, winners)`` of checked arguments, in the promoted floating dtype. (``rounding``, the
    engines' half-precision option, changes nothing: every output is one of the inputs' values.)"""
    dtype = xp.result_type(seed.dtype, mask.dtype)
    seed, mask = xp.astype(seed, dtype, copy=False), xp.astype(mask, dtype, copy=False)
    # Here, not before the engine's call: the values are known (also under torch.compile).
    _require_order(seed > mask if maximise else seed < mask, maximise)
    table = np.asarray(steps, dtype=np.int64).reshape(-1, max(seed.ndim, 1))
    values, winners, _ = _reconstruct(xp, seed, mask, table, maximise, True)
    return values, xp.astype(winners, index_dtype(xp, 2 * _size(seed)))


def _vjp(xp, grad, winners, shapes, needs, *, steps, maximise):
    """Each output's gradient to its winner: a seed pixel or a mask pixel."""
    d_seed, d_mask = reconstruction_vjp(grad, winners, tuple(shapes[0]))
    return (d_seed if needs[0] else None), (d_mask if needs[1] else None)


def _jvp(xp, tangents, winners, shapes, *, steps, maximise):
    """The tangent of each output: the tangent of its winner (0 where a NaN reached it)."""
    shape = tuple(shapes[0])
    known = tangents[0] if tangents[0] is not None else tangents[1]
    dev = device(winners)
    parts = [
        xp.zeros(shape, dtype=known.dtype, device=dev) if t is None else xp.astype(t, known.dtype)
        for t in tangents
    ]
    both = xp.concat([xp.reshape(p, (-1,)) for p in parts])
    index = xp.reshape(xp.astype(winners, xp.int64), (-1,))
    none = index < 0
    read = xp.take(both, xp.where(none, xp.zeros_like(index), index))
    return xp.reshape(xp.where(none, xp.zeros_like(read), read), shape)


def _meta(shapes, *, steps, maximise):
    """The output shape (the seed's) and the candidates (every seed and mask pixel)."""
    seed_shape, mask_shape = (tuple(s) for s in shapes)
    if seed_shape != mask_shape:
        raise ValueError(f"seed and mask must have the same shape, got {seed_shape} and {mask_shape}")
    if len(steps) % max(len(seed_shape), 1):
        raise ValueError(f"steps must hold whole steps of {len(seed_shape)} entries, got {len(steps)}")
    return seed_shape, 2 * math.prod(seed_shape)


RECONSTRUCTION = define(
    Operator(
        name="reconstruction",
        inputs=("seed", "mask"),
        params=(("steps", "int[]"), ("maximise", bool)),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        kernel=("reconstruction", ("xp", "seed", "mask", "steps", "maximise", "winners")),
        doc="Geodesic reconstruction by dilation (maximise) or erosion of seed under / above mask.",
    )
)


def reconstruction_vjp(grad: Array, indices: Array, shape: tuple[int, ...]) -> tuple[Array, Array]:
    """Gradients of a reconstruction: ``(d_seed, d_mask)`` from the output gradient ``grad``.

    Every output equals its winner (``indices``, from ``reconstruction(..., return_indices=True)``),
    so with ``n = prod(shape)``::

        d_seed[i] = sum_x grad[x] [indices[x] == i],     d_mask[i] = sum_x grad[x] [indices[x] == n + i]

    Outputs with no winner (``-1``, reached by a NaN) send nothing. Where no two candidates tie, this
    is the derivative; at ties it is the subgradient that the tie rule picks (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.core.geodesic import reconstruction, reconstruction_vjp
    >>> mask = np.array([0., 3., 1., 4., 2., 0.])
    >>> seed = np.array([0., 2., 0., 0., 0., 0.])
    >>> _, winners = reconstruction(seed, mask, return_indices=True)
    >>> d_seed, d_mask = reconstruction_vjp(np.ones(6), winners, (6,))
    >>> d_seed, d_mask
    (array([0., 1., 0., 0., 0., 0.]), array([1., 0., 3., 0., 0., 1.]))
    """
    xp = array_namespace(grad=grad, indices=indices)
    shape = tuple(int(n) for n in shape)
    if tuple(grad.shape) != shape or tuple(indices.shape) != shape:
        raise ValueError(
            f"grad and indices must have the reconstruction's shape {shape}, got grad {tuple(grad.shape)} "
            f"and indices {tuple(indices.shape)}"
        )
    if not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(
            f"indices must have an integer dtype (the winners returned with return_indices=True), "
            f"got {indices.dtype}"
        )
    n = int(np.prod(shape, dtype=np.int64))
    flat_grad = xp.reshape(grad, (-1,))
    flat_index = xp.reshape(xp.astype(indices, xp.int64), (-1,))
    if n and (bool(xp.any(flat_index < -1)) or bool(xp.any(flat_index >= 2 * n))):
        raise ValueError(f"indices must lie in [-1, {2 * n}) (winners of a reconstruction of {n} pixels)")
    if isinstance(grad, np.ndarray):
        keep = flat_index >= 0
        both = np.bincount(flat_index[keep], weights=flat_grad[keep], minlength=2 * n)
        both = both.astype(np.result_type(grad.dtype, np.float32) if grad.dtype.kind == "f" else np.float64)
        return both[:n].reshape(shape), both[n:].reshape(shape)
    from ._array_api import scatter_add

    both = scatter_add(xp, flat_grad, flat_index, 2 * n, axis=0)
    return xp.reshape(both[:n], shape), xp.reshape(both[n:], shape)


def opening_by_reconstruction(
    image: Array,
    footprint: Any = None,
    *,
    size: int | tuple[int, ...] | None = None,
    reconstruction_footprint: Any = None,
) -> Array:
    """Opening by reconstruction: the erosion of ``image``, reconstructed by dilation under ``image``.

    ::

        γ^R_B(f) = R^δ_f(ε_B(f)),      ε_B(f)(x) = min_{b ∈ B} f(x + b - c)

    (SciPy's ``grey_erosion`` orientation, ``c = shape // 2`` the centre of ``B``; outside the image
    is ignored, the tropical border). Unlike the opening ``δ_B(ε_B(f))``, it removes the bright
    structures that ``B`` does not fit in and restores the others exactly, shapes included.

    Parameters
    ----------
    image : array
        Boolean, integer or real floating point, any number of dimensions.
    footprint : array-like, optional
        The flat structuring element ``B`` of the erosion (``image.ndim`` dimensions, nonzero entries
        are in ``B``). Default: the cross ``|k - c|_1 <= 1`` of shape ``(3,) * image.ndim``
        (scikit-image's default footprint).
    size : int or tuple of ints, optional
        A full box of this shape as ``B`` instead of ``footprint``.
    reconstruction_footprint : array-like, optional
        The neighbourhood of the reconstruction, as in :func:`reconstruction` (default: all ones
        of shape ``(3,) * image.ndim``; odd dimensions, centred).

    Returns
    -------
    array
        The image's shape and dtype (the values are the image's own; NaN propagates as in
        :func:`reconstruction`).

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.core.geodesic import opening_by_reconstruction
    >>> image = np.array([0, 5, 5, 5, 1, 0, 7, 0, 4, 4, 4, 4])
    >>> opening_by_reconstruction(image, size=3)  # the narrow 7 goes, the wide plateaus stay
    array([0, 5, 5, 5, 1, 0, 0, 0, 4, 4, 4, 4])
    """
    return _by_reconstruction(image, footprint, size, reconstruction_footprint, opening=True)


def closing_by_reconstruction(
    image: Array,
    footprint: Any = None,
    *,
    size: int | tuple[int, ...] | None = None,
    reconstruction_footprint: Any = None,
) -> Array:
    """Closing by reconstruction: the dilation of ``image``, reconstructed by erosion above ``image``.

    ::

        φ^R_B(f) = R^ε_f(δ_B(f)),      δ_B(f)(x) = max_{b ∈ B} f(x - b + c)

    (SciPy's ``grey_dilation`` orientation, ``c = shape // 2``; outside the image is ignored). The
    dual of :func:`opening_by_reconstruction` (same parameters): it fills the dark structures that
    ``B`` does not fit in and leaves the others exactly as they are.

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.core.geodesic import closing_by_reconstruction
    >>> image = np.array([9, 2, 2, 2, 8, 9, 1, 9, 5, 5, 5, 5])
    >>> closing_by_reconstruction(image, size=3)  # the narrow 1 goes, the wide valleys stay
    array([9, 2, 2, 2, 8, 9, 9, 9, 5, 5, 5, 5])
    """
    return _by_reconstruction(image, footprint, size, reconstruction_footprint, opening=False)


def fill_holes(image: Array, footprint: Any = None) -> Array:
    """Fill the holes of ``image``: the regional minima that do not touch the image border are raised
    to their lowest pass to the border.

    A reconstruction by erosion above the image of a seed that equals the image on its border and
    the image's maximum elsewhere::

        fill(f) = R^ε_f(g),     g(x) = f(x) if x - s lies outside the image for some s ∈ S,
                                g(x) = max f otherwise,

    with ``S`` the footprint's neighbour steps (for the default cross: ``g = f`` on the outer faces).
    For a boolean image this is :func:`scipy.ndimage.binary_fill_holes` with ``structure=footprint``:
    the background components that no path of ``footprint`` steps links to the border are filled.

    Parameters
    ----------
    image : array
        Boolean, integer or real floating point, any number of dimensions.
    footprint : array-like, optional
        The connectivity of the paths to the border (``image.ndim`` dimensions, centre
        ``shape // 2``, SciPy's convention). Default: the cross ``|k - c|_1 <= 1`` of shape
        ``(3,) * image.ndim``, SciPy's default structure.

    Returns
    -------
    array
        The image's shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.core.geodesic import fill_holes
    >>> image = np.array([[3, 3, 3, 3, 0],
    ...                   [3, 1, 2, 3, 0],
    ...                   [3, 3, 3, 3, 0]])
    >>> fill_holes(image)  # the basin 1, 2 fills up to its rim, 3; the 0s touch the border
    array([[3, 3, 3, 3, 0],
           [3, 3, 3, 3, 0],
           [3, 3, 3, 3, 0]])
    >>> fill_holes(np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)).all()
    np.True_
    """
    xp = array_namespace(image=image)
    _require_real(xp, "image", image)
    _, centre, steps = _footprint_steps(footprint, None, image.ndim, _cross_footprint, any_size=True)
    f = _to_kernel_dtype(xp, image)
    if _size(f) == 0:
        return _from_kernel_dtype(xp, f, image.dtype)
    border = _border(xp, tuple(f.shape), steps, device(f))
    seed = xp.where(border, f, xp.max(f))
    values, _, mixed_zeros = _reconstruct(xp, seed, f, steps, False, False)
    if isinstance(values, np.ndarray) and mixed_zeros:
        fp_shape = tuple(int(v) for v in np.max(np.abs(steps), axis=0, initial=0) * 2 + 1)
        values[values == 0] = _skimage_zero(seed, seed, f, fp_shape, tuple(d // 2 for d in fp_shape), False)
    return _from_kernel_dtype(xp, values, image.dtype)


def regional_maxima(image: Array, footprint: Any = None) -> Array:
    """The regional maxima of ``image``: a boolean mask of the plateaus above all their neighbours.

    A plateau is a set of pixels of one value connected by ``footprint`` steps; it is a regional
    maximum if every neighbour of its pixels is strictly lower. This equals
    ``skimage.morphology.local_maxima(image, footprint, allow_borders=True)``: in particular a plateau
    of the image's minimum value never is one (scikit-image pads the image with its minimum and
    rejects a plateau that touches the padding with an equal value). Computed by reconstruction::

        maxima = (R^δ_f(f⁻) < f) & (f != min f),     f⁻ = the next value below f (nextafter, f - 1)

    with the reconstruction's steps reversed (a plateau looks at the pixels it steps to, as in
    scikit-image's flood fill).

    Parameters
    ----------
    image : array
        Boolean, integer or real floating point (no NaN), any number of dimensions.
    footprint : array-like, optional
        The neighbourhood, ``image.ndim`` odd dimensions, centred. Default: all ones of shape
        ``(3,) * image.ndim`` (scikit-image's default, full connectivity). A footprint with no
        neighbour makes every pixel a maximum (as in scikit-image).

    Returns
    -------
    array of bool

    Notes
    -----
    The equality with scikit-image holds for symmetric footprints (``footprint[k] ==
    footprint[-k]``) that contain their centre, the default among them. scikit-image drops one
    neighbour of a footprint without its centre (it takes the first offset by distance for the
    centre), and with an asymmetric footprint its plateaus depend on the order of its scan; tropic
    uses every nonzero entry but the centre, and a plateau always looks along the steps.

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.core.geodesic import regional_maxima
    >>> regional_maxima(np.array([0, 2, 2, 1, 3, 3, 3, 0, 4]))
    array([False,  True,  True, False,  True,  True,  True, False,  True])
    """
    return _regional(image, footprint, maxima=True)


def regional_minima(image: Array, footprint: Any = None) -> Array:
    """The regional minima of ``image``: the dual of :func:`regional_maxima` (plateaus strictly below
    all their neighbours; never one of the image's maximum value), equal to
    ``skimage.morphology.local_minima(image, footprint, allow_borders=True)``::

        minima = (R^ε_f(f⁺) > f) & (f != max f),     f⁺ = the next value above f

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.core.geodesic import regional_minima
    >>> regional_minima(np.array([[5, 5, 5, 5], [5, 1, 5, 5], [5, 5, 5, 0]]))
    array([[False, False, False, False],
           [False,  True, False, False],
           [False, False, False,  True]])
    """
    return _regional(image, footprint, maxima=False)


# ------------------------------------------------------------------------------- the reconstruction


def _reconstruct(
    xp: ModuleType, seed: Array, mask: Array, steps: np.ndarray, maximise: bool, winners: bool
) -> tuple[Array, Array | None, bool]:
    """``(values, winners or None, mixed_zeros)``: the compiled kernel for NumPy arrays where it runs,
    else :func:`reconstruction_reference`. ``mixed_zeros``: the inputs hold both +0.0 and -0.0."""
    if seed.ndim == 0:  # one pixel, no neighbours
        values, index, mixed = _reconstruct(
            xp, xp.reshape(seed, (1,)), xp.reshape(mask, (1,)), np.zeros((0, 1), np.int64), maximise, winners
        )
        return xp.reshape(values, ()), None if index is None else xp.reshape(index, ()), mixed
    kernel = kernel_for("reconstruction", xp)
    result = None if kernel is None else kernel(xp, seed, mask, steps, maximise, winners)
    if result is not None:
        return result
    values, index = reconstruction_reference(xp, seed, mask, steps, maximise, winners)
    return values, index, isinstance(seed, np.ndarray) and _mixed_zeros(seed, mask)


def reconstruction_reference(
    xp: ModuleType, seed: Array, mask: Array, steps: Any, maximise: bool, winners: bool = False
) -> tuple[Array, Array | None]:
    """The array-API reference: iterate the geodesic dilation (erosion) to stability.

    ``seed`` and ``mask`` share one real dtype and shape (``ndim >= 1``), ``seed <= mask``
    (``maximise``) or ``seed >= mask``; ``steps`` is an (n_steps, ndim) integer array (the value at
    ``p`` reaches ``p + step``). With ``winners``, runs on the pairs (value, candidate) of the module
    docstring and returns their candidates too (int64), else ``(values, None)``. NaN: the outputs
    that a NaN reaches are NaN (winner -1), computed first as a boolean flood.
    """
    shape = tuple(seed.shape)
    dev = device(seed)
    steps = [tuple(int(v) for v in s) for s in np.asarray(steps, dtype=np.int64).reshape(-1, len(shape))]
    steps = [s for s in steps if any(s)]
    reach = tuple(max((abs(s[d]) for s in steps), default=0) for d in range(len(shape)))
    lowest = _neutral(xp, seed.dtype, maximise)
    reached = None
    if xp.isdtype(seed.dtype, "real floating"):
        nan = xp.logical_or(xp.isnan(seed), xp.isnan(mask))
        if bool(xp.any(nan)):
            reached = _flood(xp, nan, steps, reach)
            inert = xp.full(shape, lowest, dtype=seed.dtype, device=dev)
            seed, mask = xp.where(reached, inert, seed), xp.where(reached, inert, mask)

    def better(a, ia, b, ib):  # (a, ia) ahead of (b, ib) in the pair order
        ahead = a > b if maximise else a < b
        return ahead if ia is None else xp.logical_or(ahead, xp.logical_and(a == b, ia < ib))

    def pick(take, a, ia, b, ib):
        return xp.where(take, a, b), None if ia is None else xp.where(take, ia, ib)

    if winners:
        n = int(np.prod(shape, dtype=np.int64))
        seed_id = xp.reshape(xp.arange(n, dtype=xp.int64, device=dev), shape)
        mask_id = seed_id + n
    else:
        seed_id = mask_id = None
    # J_0 = min(seed, mask) in the pair order (seed <= mask in value, so only ties pick the mask)
    J, JW = pick(better(seed, seed_id, mask, mask_id), mask, mask_id, seed, seed_id)
    while True:
        D, DW = J, JW
        for view, view_id in zip(
            _shifted(xp, J, steps, reach, lowest),
            _shifted(xp, JW, steps, reach, _NO_ID) if winners else [None] * len(steps),
            strict=True,
        ):
            D, DW = pick(better(view, view_id, D, DW), view, view_id, D, DW)
        D, DW = pick(better(D, DW, mask, mask_id), mask, mask_id, D, DW)  # min(δ(J), mask)
        new, new_id = pick(better(D, DW, J, JW), D, DW, J, JW)  # max(J, ·): the pair order is total
        if bool(xp.all(new == J)) and (not winners or bool(xp.all(new_id == JW))):
            break
        J, JW = new, new_id
    if reached is not None:
        J = xp.where(reached, xp.full(shape, float("nan"), dtype=J.dtype, device=dev), J)
        if winners:
            JW = xp.where(reached, xp.full(shape, -1, dtype=xp.int64, device=dev), JW)
    return J, JW


def _shifted(xp: ModuleType, x: Array, steps: list, reach: tuple, fill: Any) -> list:
    """For each step s, the array ``y(p) = x(p - s)`` (``fill`` where ``p - s`` is outside)."""
    shape = tuple(x.shape)
    padded = xp.full(
        tuple(n + 2 * r for n, r in zip(shape, reach, strict=True)), fill, dtype=x.dtype, device=device(x)
    )
    padded[tuple(slice(r, r + n) for r, n in zip(reach, shape, strict=True))] = x
    return [
        padded[tuple(slice(r - d, r - d + n) for r, d, n in zip(reach, s, shape, strict=True))] for s in steps
    ]


def _flood(xp: ModuleType, start: Array, steps: list, reach: tuple) -> Array:
    """The pixels reachable from ``start`` (boolean) along the steps."""
    reached = start
    while True:
        grown = reached
        for view in _shifted(xp, reached, steps, reach, False):
            grown = xp.logical_or(grown, view)
        if bool(xp.all(grown == reached)):
            return reached
        reached = grown


def _neutral(xp: ModuleType, dtype: Any, maximise: bool) -> Any:
    """The value that never wins: -inf / the lowest integer (by dilation), +inf / the highest."""
    if xp.isdtype(dtype, "real floating"):
        return -float("inf") if maximise else float("inf")
    info = xp.iinfo(dtype)
    return int(info.min) if maximise else int(info.max)


# --------------------------------------------------------------------------- the derived operators


def _by_reconstruction(image: Array, footprint: Any, size: Any, rec_footprint: Any, opening: bool) -> Array:
    xp = array_namespace(image=image)
    _require_real(xp, "image", image)
    f = _to_kernel_dtype(xp, image)
    element = _structuring_element(footprint, size, image.ndim)
    fp, centre, steps = _footprint_steps(
        rec_footprint, None, image.ndim, _ones_footprint, name="reconstruction_footprint"
    )
    if _size(f) == 0:
        return _from_kernel_dtype(xp, f, image.dtype)
    # Flat erosion min_b f(x + b - c) (opening) or dilation max_b f(x - b + c), c = shape // 2 (SciPy's
    # orientations), the neutral value outside the image.
    operator = erosion if opening else dilation
    filtered = operator(f, footprint=element, axes=tuple(range(f.ndim)), mode="neutral") if f.ndim else f
    values, _, mixed_zeros = _reconstruct(xp, filtered, f, steps, opening, False)
    if isinstance(values, np.ndarray) and mixed_zeros:
        values[values == 0] = _skimage_zero(filtered, filtered, f, fp.shape, centre, opening)
    return _from_kernel_dtype(xp, values, image.dtype)


def _regional(image: Array, footprint: Any, maxima: bool) -> Array:
    xp = array_namespace(image=image)
    _require_real(xp, "image", image)
    _, _, steps = _footprint_steps(footprint, None, image.ndim, _ones_footprint)
    f = _to_kernel_dtype(xp, image)
    dev = device(f)
    if len(steps) == 0:  # no neighbour: every pixel is its own plateau, an extremum (or no pixel)
        return xp.full(tuple(f.shape), True, dtype=xp.bool, device=dev)
    if _size(f) == 0:
        return xp.full(tuple(f.shape), False, dtype=xp.bool, device=dev)
    floating = xp.isdtype(f.dtype, "real floating")
    if floating and bool(xp.any(xp.isnan(f))):
        raise ValueError("image must not contain NaN: regional maxima and minima are undefined there")
    if floating:
        towards = xp.full_like(f, -float("inf") if maxima else float("inf"))
        near = xp.nextafter(f, towards)
    else:
        edge = _neutral(xp, f.dtype, maxima)  # f - 1 (f + 1) except at the dtype's end
        near = xp.where(f == edge, f, f - 1 if maxima else f + 1)
    # reversed steps: a pixel is not an extremum if a higher (lower) value reaches it from the
    # pixels it steps to through values >= (<=) its own
    rebuilt, _, _ = _reconstruct(xp, near, f, -steps, maxima, False)
    extreme = xp.min(f) if maxima else xp.max(f)
    strict = rebuilt < f if maxima else rebuilt > f
    return xp.logical_and(strict, f != extreme)


def _border(xp: ModuleType, shape: tuple, steps: np.ndarray, dev: Any) -> Array:
    """Pixels ``x`` with ``x - s`` outside the image for some step ``s`` (reached from outside)."""
    border = np.zeros(shape, dtype=bool)
    for s in steps:
        for d, v in enumerate(s):
            index = [slice(None)] * len(shape)
            if v > 0:
                index[d] = slice(0, int(v))
            elif v < 0:
                index[d] = slice(shape[d] + int(v), None)
            else:
                continue
            border[tuple(index)] = True
    return border if xp is np or backend_name(xp) == "numpy" else xp.asarray(border, device=dev)


# ------------------------------------------------------------------------------ arguments and dtypes


def _method(method: Any) -> bool:
    """True for "dilation", False for "erosion"."""
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be 'dilation' or 'erosion', got {method!r}")
    return method == "dilation"


def _require_real(xp: ModuleType, name: str, x: Array) -> None:
    dtype = x.dtype
    if isinstance(dtype, np.dtype):
        ok = dtype.kind in "biuf"
    else:
        ok = xp.isdtype(dtype, ("bool", "integral", "real floating"))
    if not ok:
        raise TypeError(f"{name} must be a boolean, integer or real floating-point array, got dtype {dtype}")


def _require_order(wrong: Array, maximise: bool) -> None:
    """``wrong``: where the seed is above (by dilation) or below (by erosion) the mask."""
    if isinstance(wrong, np.ndarray):
        if not wrong.any():
            return
        count, first = int(np.count_nonzero(wrong)), tuple(int(i) for i in np.argwhere(wrong)[0])
        where = f" at {count} of {wrong.size} pixels, the first at index {first}"
    else:
        xp = array_namespace(wrong=wrong)
        if not bool(xp.any(wrong)):
            return
        where = f" at {int(xp.sum(xp.astype(wrong, xp.int64)))} of {_size(wrong)} pixels"
    if maximise:
        raise ValueError(
            f"seed must be <= mask everywhere for reconstruction by dilation (the seed's values spread "
            f"under the mask), but seed > mask{where}"
        )
    raise ValueError(
        f"seed must be >= mask everywhere for reconstruction by erosion (the seed's values spread "
        f"above the mask), but seed < mask{where}"
    )


def _skimage_float_dtype(xp: ModuleType, dtype: Any) -> Any:
    """scikit-image's ``_supported_float_type``: float32 for float16 and float32, else float64."""
    if isinstance(dtype, np.dtype):
        return np.dtype(np.float32) if dtype.char in "ef" else np.dtype(np.float64)
    if xp.isdtype(dtype, "real floating") and dtype != xp.float64:
        return xp.float32
    return xp.float64


def _to_kernel_dtype(xp: ModuleType, x: Array) -> Array:
    """``x`` in a dtype that the kernels take and that holds its values exactly: float32 / float64
    (float16: float32; NumPy's long double: float64, rounded), int64 (booleans and integers up to 32 bits
    too), uint64."""
    dtype = x.dtype
    if isinstance(x, np.ndarray):  # native byte order too (a '>f8' image is not float64 to the kernels)
        if dtype.kind == "f":
            target = np.float32 if dtype.itemsize <= 4 else np.float64
        else:
            target = np.uint64 if dtype.kind == "u" and dtype.itemsize == 8 else np.int64
        return x.astype(target, copy=False)
    if xp.isdtype(dtype, "real floating"):
        return x if dtype in (xp.float32, xp.float64) else xp.astype(x, xp.float32)
    if dtype == getattr(xp, "uint64", None):
        return x
    return x if dtype == xp.int64 else xp.astype(x, xp.int64)


def _from_kernel_dtype(xp: ModuleType, x: Array, dtype: Any) -> Array:
    return x if x.dtype == dtype else xp.astype(x, dtype)


def _size(x: Array) -> int:
    """Number of elements (torch's ``size`` is a method)."""
    return math.prod(tuple(x.shape))


def _ones_footprint(ndim: int) -> np.ndarray:
    return np.ones((3,) * ndim, dtype=bool)


def _cross_footprint(ndim: int) -> np.ndarray:
    grid = np.indices((3,) * ndim) - 1
    return np.abs(grid).sum(axis=0) <= 1


def _footprint_steps(
    footprint: Any,
    offset: Any,
    ndim: int,
    default: Callable[[int], np.ndarray],
    name: str = "footprint",
    any_size: bool = False,
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """``(footprint as bool, its centre, the neighbour steps)``; the steps are an (n, ndim) int64
    array of ``k - centre`` over the footprint's nonzero entries ``k``, the zero step left out.
    ``any_size``: even dimensions are centred at ``shape // 2`` (SciPy's rule) instead of refused."""
    fp = default(ndim) if footprint is None else _host(footprint)
    try:
        fp = fp.astype(bool)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of 0s and 1s (or booleans), got {footprint!r}") from exc
    if fp.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, like the image, got shape {fp.shape}")
    if offset is None:
        if not any_size and any(d % 2 == 0 for d in fp.shape):
            raise ValueError(
                f"{name}'s dimensions must all be odd when no offset gives its centre, got shape {fp.shape}"
            )
        if any(d == 0 for d in fp.shape):
            raise ValueError(f"{name} must not be empty, got shape {fp.shape}")
        centre = tuple(d // 2 for d in fp.shape)
    else:
        given = _host(offset)
        if given.shape != (ndim,) or given.dtype.kind not in "iu":
            raise ValueError(
                f"offset must be a sequence of {ndim} ints (the centre of {name}), got {offset!r}"
            )
        centre = tuple(int(o) for o in given)
        if not all(0 <= o < d for o, d in zip(centre, fp.shape, strict=True)):
            raise ValueError(
                f"offset must lie inside {name} (0 <= offset[i] < {name}.shape[i]), got offset {centre} "
                f"for {name} of shape {fp.shape}"
            )
    steps = np.argwhere(fp).astype(np.int64) - np.asarray(centre, dtype=np.int64)
    steps = steps[np.any(steps != 0, axis=1)] if ndim else np.zeros((0, 0), np.int64)
    return fp, centre, steps


def _structuring_element(footprint: Any, size: Any, ndim: int) -> np.ndarray:
    """The flat element of the erosion / dilation: ``footprint``, or a box of ``size``, or the cross."""
    if footprint is not None and size is not None:
        raise ValueError("give footprint or size, not both")
    if size is not None:
        sizes = (size,) * ndim if isinstance(size, (int, np.integer)) else tuple(size)
        if len(sizes) != ndim or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in sizes):
            raise ValueError(f"size must be a positive int or a tuple of {ndim} positive ints, got {size!r}")
        return np.ones(tuple(int(k) for k in sizes), dtype=bool)
    fp = _cross_footprint(ndim) if footprint is None else _host(footprint).astype(bool)
    if fp.ndim != ndim:
        raise ValueError(f"footprint must have {ndim} dimensions, like the image, got shape {fp.shape}")
    return fp


def _mixed_zeros(seed: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the float inputs hold both +0.0 and -0.0."""
    if seed.dtype.kind != "f":
        return False
    zeros = np.concatenate([seed[seed == 0], mask[mask == 0]])
    negative = np.signbit(zeros)
    return bool(negative.any() and not negative.all())


def _skimage_zero(
    seed: np.ndarray, seed_w: np.ndarray, mask_w: np.ndarray, fp_shape: tuple, centre: tuple, maximise: bool
) -> np.ndarray:
    """The zero (+0.0 or -0.0) that scikit-image's reconstruction returns for every zero output when
    its inputs hold both: the first zero in NumPy's argsort of its padded stack of seed and mask (the
    representative of the zeros' rank), negated twice by erosion. ``seed``: the caller's seed (its
    minimum / maximum pads the stack), ``seed_w`` and ``mask_w``: both in the work dtype."""
    shape = seed_w.shape
    dims = (2, *(n + k - 1 for n, k in zip(shape, fp_shape, strict=True)))
    pad = np.min(seed) if maximise else np.max(seed)
    images = np.full(dims, pad, dtype=seed_w.dtype)
    inside = tuple(slice(o, o + n) for o, n in zip(centre, shape, strict=True))
    images[(0, *inside)] = seed_w
    images[(1, *inside)] = mask_w
    flat = images.reshape(-1) if maximise else -images.reshape(-1)
    ordered = flat[flat.argsort()]
    zero = ordered[int(np.argmax(ordered == 0))]
    return zero if maximise else -zero
