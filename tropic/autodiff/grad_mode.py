"""Grad mode: whether operations on tensors record the tape (per thread, on by default)."""

from __future__ import annotations

import contextlib
import threading

__all__ = ["enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when operations record the tape for tensors that require gradients (the default)."""
    return getattr(_state, "enabled", True)


class set_grad_enabled:
    """Switch recording on or off: as a plain call it sets the mode, as a ``with`` context it also
    restores the previous mode on exit.

    Examples
    --------
    >>> from tropic.autodiff import set_grad_enabled, is_grad_enabled
    >>> with set_grad_enabled(False):
    ...     is_grad_enabled()
    False
    >>> is_grad_enabled()
    True
    """

    def __init__(self, mode: bool) -> None:
        self._previous = is_grad_enabled()
        self._mode = bool(mode)
        _state.enabled = self._mode

    def __enter__(self) -> set_grad_enabled:
        _state.enabled = self._mode
        return self

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self._previous


class no_grad(contextlib.ContextDecorator):
    """Context manager and decorator under which no operation records the tape.

    Examples
    --------
    >>> import tropic.autodiff as ad
    >>> x = ad.tensor([1.0, 2.0], requires_grad=True)
    >>> with ad.no_grad():
    ...     y = x * 2.0
    >>> y.requires_grad
    False
    """

    def __enter__(self) -> no_grad:
        self._previous = is_grad_enabled()
        _state.enabled = False
        return self

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self._previous


class enable_grad(contextlib.ContextDecorator):
    """Context manager and decorator that turns recording back on (inside :class:`no_grad`)."""

    def __enter__(self) -> enable_grad:
        self._previous = is_grad_enabled()
        _state.enabled = True
        return self

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self._previous
