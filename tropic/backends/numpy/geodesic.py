"""Compiled geodesic reconstruction for NumPy arrays (``csrc/geodesic_c.c``, through ctypes).

:func:`reconstruct` returns None where the compiled kernel is switched off or not built; the caller
(:mod:`tropic.core.geodesic`) then runs its array-API reference, which gives bitwise the same values
and winners.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from tropic.core.dispatch import register

from . import compiled

_SUFFIX = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.int64): "i64",
    np.dtype(np.uint64): "u64",
}
FOUND_POSITIVE_ZERO, FOUND_NEGATIVE_ZERO, FOUND_NAN = 1, 2, 4


def available(dtype: np.dtype) -> bool:
    """Whether the compiled kernel runs for ``dtype`` now (built, not switched off, a kernel dtype)."""
    suffix = _SUFFIX.get(np.dtype(dtype))
    return suffix is not None and compiled.function(f"tropic_reconstruct_{suffix}") is not None


def reconstruct(
    seed: np.ndarray, mask: np.ndarray, steps: np.ndarray, maximise: bool, winners: bool = False
) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """``(values, winner or None, found)`` of the reconstruction of ``seed`` under (``maximise``) or
    above ``mask`` along the neighbour ``steps`` (an (n_steps, ndim) integer array: the value at p
    reaches p + step), or None when the compiled kernel is not available for their dtype.

    ``seed`` and ``mask`` have one dtype of float32, float64, int64 or uint64 and one shape with
    ``ndim >= 1``; ``found`` has the ``FOUND_*`` bits of what the inputs hold (floats only). The
    winner of an output is its candidate's id: seed pixel ``i`` -> ``i``, mask pixel ``i`` ->
    ``seed.size + i``; -1 for an output that a NaN reaches.
    """
    suffix = _SUFFIX.get(seed.dtype)
    name = f"tropic_reconstruct{'_winners' if winners else ''}_{suffix}"
    fn = compiled.function(name) if suffix is not None else None
    if fn is None:
        return None
    seed = np.ascontiguousarray(seed)
    mask = np.ascontiguousarray(mask)
    shape = np.asarray(seed.shape, dtype=np.int64)
    steps = np.ascontiguousarray(steps, dtype=np.int64).reshape(-1, seed.ndim)
    out = np.empty(seed.shape, dtype=seed.dtype)
    winner = np.empty(seed.shape, dtype=np.int64) if winners else None
    found = ctypes.c_int(0)
    extra = (winner,) if winners else ()
    status = fn(seed, mask, seed.ndim, shape, steps, steps.shape[0], 0 if maximise else 1, out, *extra, found)
    if status == 2:
        raise MemoryError("tropic's compiled reconstruction kernel could not allocate its work space")
    if status != 0:
        raise RuntimeError(f"tropic's compiled reconstruction kernel rejected its arguments ({status=})")
    return out, winner, found.value


@register("numpy", "reconstruction")
def reconstruction(
    xp: Any, seed: np.ndarray, mask: np.ndarray, steps: np.ndarray, maximise: bool, winners: bool
) -> tuple[np.ndarray, np.ndarray | None, bool] | None:
    """The operator's kernel: :func:`reconstruct` as ``(values, winners or None, mixed_zeros)``
    (``mixed_zeros``: the inputs hold both +0.0 and -0.0), or None (the core runs its reference)."""
    if not isinstance(seed, np.ndarray):
        return None
    result = reconstruct(seed, mask, steps, maximise, winners)
    if result is None:
        return None
    values, winner, found = result
    both = FOUND_POSITIVE_ZERO | FOUND_NEGATIVE_ZERO
    return values, winner, (found & both) == both
