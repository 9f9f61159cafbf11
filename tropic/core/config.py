"""Run-time settings shared by the backends."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from contextvars import ContextVar

from .checks import positive_int

MAX_THREADS = 1024  # more threads than this is a mistake (each one is an OS thread of tropic's pool)
_num_threads: int | None = None
_cpu_count = os.cpu_count() or 1
_warned: set[tuple[str, str]] = set()
# The thread count of the library a kernel runs inside (torch's intra-op pool size, for the torch
# engine's CPU kernels): the default there, so that tropic never uses more threads than the caller's
# library was told to (torch.set_num_threads, DataLoader workers' 1).
host_threads: ContextVar[Callable[[], int] | None] = ContextVar("tropic_host_threads", default=None)


def set_num_threads(n: int | None) -> None:
    """Use at most ``n`` threads in tropic's CPU kernels (``None``: back to the default).

    The default is ``TROPIC_NUM_THREADS``; else, for PyTorch tensors, torch's intra-op thread count
    (``torch.get_num_threads()``); else ``OMP_NUM_THREADS``; else the number of CPUs.
    Results do not depend on it: every output is computed by exactly one thread. It may be changed
    at any time, also while other Python threads are inside tropic's kernels.

    Parameters
    ----------
    n : int or None
        ``1 <= n <= 1024`` (a Python or NumPy integer), or None.
    """
    global _num_threads
    if n is not None:
        n = positive_int("n", n)
        if n > MAX_THREADS:
            raise ValueError(f"n must be at most {MAX_THREADS} threads, got {n}")
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads tropic's CPU kernels may use (see :func:`set_num_threads`)."""
    if _num_threads is not None:
        return _num_threads
    value = os.environ.get("TROPIC_NUM_THREADS", "").strip()
    if value:
        if _valid_count(value):
            return int(value)
        _warn_once("TROPIC_NUM_THREADS", value)
    host = host_threads.get()
    if host is not None:
        return min(max(int(host()), 1), MAX_THREADS)
    # OpenMP's variable may list one count per nesting level ("4,2"): the first is the outer one.
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if _valid_count(value) else _cpu_count


def _valid_count(value: str) -> bool:
    return value.isdigit() and 0 < int(value) <= MAX_THREADS


def _warn_once(variable: str, value: str) -> None:
    """Say once per value that an environment setting is ignored (it is read on every call)."""
    if (variable, value) not in _warned:
        _warned.add((variable, value))
        warnings.warn(
            f"{variable}={value!r} is not a thread count from 1 to {MAX_THREADS}; ignored",
            RuntimeWarning,
            stacklevel=3,
        )
