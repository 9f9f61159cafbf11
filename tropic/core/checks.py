"""Argument checking shared by the operators: every error names the argument and what was expected."""

from __future__ import annotations

import math
import numbers
from types import ModuleType
from typing import Any

import numpy as np

from ._array_api import Array, device


def require_floating(xp: ModuleType, name: str, x: Array) -> None:
    """Tropical operators need infinities, so their operands must be real floating point."""
    dtype = x.dtype
    # NumPy's dtypes (NumPy and CuPy arrays) and torch's answered directly: isdtype costs microseconds.
    if isinstance(dtype, np.dtype):
        ok = dtype.kind == "f"
    elif type(dtype).__module__ == "torch":
        ok = dtype.is_floating_point
    else:
        ok = xp.isdtype(dtype, "real floating")
    if not ok:
        raise TypeError(f"{name} must have a real floating-point dtype, got {x.dtype}")


def require_ndim(name: str, x: Array, ndim: int, layout: str, exact: bool = True) -> None:
    """Check ``x.ndim`` (exactly ``ndim``, or at least ``ndim`` when ``exact`` is False)."""
    ok = x.ndim == ndim if exact else x.ndim >= ndim
    if not ok:
        wanted = f"{ndim}" if exact else f"at least {ndim}"
        raise ValueError(f"{name} must have {wanted} dimensions ({layout}), got shape {tuple(x.shape)}")


def require_same_device(**arrays: Array) -> None:
    """Refuse to mix devices: tropic never moves data between devices behind the caller's back."""
    present = [x for x in arrays.values() if x is not None]
    # NumPy arrays and torch CPU tensors are all on the CPU (answered without making a device
    # object per array: these checks run on every call)
    for x in present:
        if type(x) is not np.ndarray and getattr(x, "is_cpu", False) is not True:
            break
    else:
        return
    first, *others = (device(x) for x in present)
    if all(d == first for d in others):
        return  # the common case, without formatting the devices
    devices = {name: device(x) for name, x in arrays.items() if x is not None}
    if len({str(d) for d in devices.values()}) > 1:
        described = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all arrays must be on the same device, got {described}")


def pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints (stride, padding, size) and check its lower bound."""
    return ints(name, value, 2, minimum)  # type: ignore[return-value]


def ints(name: str, value: Any, n: int, minimum: int | None) -> tuple[int, ...]:
    """Normalise an int or a tuple of ``n`` ints (one per spatial axis: kernel size, stride, padding,
    origin) and check its lower bound (None: no bound)."""
    if _is_int(value):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            values = ()
        if len(values) != n or not all([_is_int(v) for v in values]):
            expected = "a pair of ints" if n == 2 else f"a tuple of {n} int{'s' if n > 1 else ''}"
            raise TypeError(f"{name} must be an int or {expected}, got {value!r}")
        values = tuple([int(v) for v in values])
    if minimum is not None and min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return values


def _is_int(value: Any) -> bool:
    """A Python or NumPy integer, not a bool."""
    if type(value) is int:  # the common case, without the abstract base class's isinstance
        return True
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int if it is an integer >= 1 (NumPy integers too; not a bool)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def require_integer(xp: ModuleType, name: str, x: Array) -> None:
    """Winner indices must be integers (as returned with ``return_indices=True``), not floats or bools."""
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(
            f"{name} must have an integer dtype (the winners returned with return_indices=True), "
            f"got {x.dtype}"
        )


def require_winners(xp: ModuleType, name: str, indices: Array, n_candidates: int) -> None:
    """Every winner must be a candidate index in ``[0, n_candidates)`` or ``-1`` (no winner).

    The gradient kernels write to the slot a winner names, so this runs before any of them does;
    a kernel that reads the indices anyway may check them itself instead (the compiled ones do, in
    the same pass).
    """
    require_integer(xp, name, indices)
    if math.prod(indices.shape) == 0:
        return
    low, high = int(xp.min(indices)), int(xp.max(indices))
    if low < -1 or high >= n_candidates:
        raise ValueError(
            f"{name} must hold winners in [0, {n_candidates}) or -1 (no winner), got values from {low} "
            f"to {high}"
        )


def shape_tuple(name: str, value: Any, min_ndim: int = 0, ndim: int | None = None) -> tuple[int, ...]:
    """``value`` as a tuple of non-negative ints (a shape), with at least ``min_ndim`` (or exactly
    ``ndim``) entries."""
    try:
        shape = tuple(value)
    except TypeError:
        shape = None
    if shape is None or not all(_is_int(n) and n >= 0 for n in shape):
        raise TypeError(f"{name} must be a shape (a tuple of non-negative ints), got {value!r}")
    if (ndim is not None and len(shape) != ndim) or len(shape) < min_ndim:
        wanted = f"{ndim}" if ndim is not None else f"at least {min_ndim}"
        raise ValueError(f"{name} must have {wanted} entries, got {value!r}")
    return tuple(int(n) for n in shape)


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``allowed``, else a ``ValueError`` naming ``name`` and them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def real_number(name: str, value: Any) -> float:
    """``value`` as a Python float if it is a real number (Python or NumPy; not a bool or a string)."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def require_no_rounding(rounding: str | None) -> None:
    """The reference kernels compute in the operands' dtype: rounding each candidate to a narrower
    one (``rounding="bfloat16"``, ``"float16"``) is an option of the NumPy backend's kernels."""
    if rounding is not None:
        raise NotImplementedError(
            f"rounding={rounding!r}: only the NumPy backend's kernels round candidates to a narrower dtype"
        )
