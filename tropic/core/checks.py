"""Argument checking shared by the operators: every error names the argument and what was expected."""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import Any

import numpy as np

from ._array_api import Array


def require_floating(xp: ModuleType, name: str, x: Array) -> None:
    """Tropical operators need infinities, so their operands must be real floating point."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating-point dtype, got {x.dtype}")


def require_ndim(name: str, x: Array, ndim: int, layout: str, exact: bool = True) -> None:
    """Check ``x.ndim`` (exactly ``ndim``, or at least ``ndim`` when ``exact`` is False)."""
    ok = x.ndim == ndim if exact else x.ndim >= ndim
    if not ok:
        wanted = f"{ndim}" if exact else f"at least {ndim}"
        raise ValueError(f"{name} must have {wanted} dimensions ({layout}), got shape {tuple(x.shape)}")


def require_same_device(**arrays: Array) -> None:
    """Refuse to mix devices: tropic never moves data between devices behind the caller's back."""
    from ._array_api import device

    devices = {name: device(x) for name, x in arrays.items() if x is not None}
    if len({str(d) for d in devices.values()}) > 1:
        described = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all arrays must be on the same device, got {described}")


def pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints (stride, padding, size) and check its lower bound."""
    if isinstance(value, int) and not isinstance(value, bool):
        values = (value, value)
    else:
        try:
            values = tuple(value)
        except TypeError:
            values = ()
        if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return values  # type: ignore[return-value]


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int if it is an integer >= 1 (NumPy integers too; not a bool)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
