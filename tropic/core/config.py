"""Run-time settings shared by the backends."""

from __future__ import annotations

import os

_num_threads: int | None = None
_cpu_count = os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Use at most ``n`` threads in tropic's CPU kernels (``None``: back to the default).

    The default is ``TROPIC_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the number of CPUs.
    Results do not depend on it: every output is computed by exactly one thread.
    """
    global _num_threads
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads tropic's CPU kernels may use (see :func:`set_num_threads`)."""
    if _num_threads is not None:
        return _num_threads
    for variable in ("TROPIC_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "")
        if value.strip().isdigit() and int(value) > 0:
            return int(value)
    return _cpu_count
