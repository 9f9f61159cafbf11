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


class _GradMode(contextlib.ContextDecorator):
    """Set the mode to ``_mode`` inside the context, restore the previous one on exit."""

    _mode: bool

    def _recreate_cm(self) -> _GradMode:
        # A fresh context per call of a decorated function, so recursive and concurrent calls each
        # restore their own previous mode (one shared instance would restore the innermost one's).
        return type(self)()

    def __enter__(self) -> _GradMode:
        self._previous = is_grad_enabled()
        _state.enabled = self._mode
        return self

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self._previous


class no_grad(_GradMode):
    """Context manager and decorator under which no operation records the tape.

    Examples
    --------
    >>> import tropic.autodiff as ad
    >>> x = ad.tensor([1.0, 2.0], requires_grad=True)
    >>> with ad.no_grad():
    ...     y = x * 2.0
    >>> y.requires_grad
    False
    >>> @ad.no_grad()
    ... def depth(n):
    ...     return depth(n - 1) if n else ad.is_grad_enabled()
    >>> depth(2), ad.is_grad_enabled()  # the recursion restores the mode it found
    (False, True)
    """

    _mode = False


class enable_grad(_GradMode):
    """Context manager and decorator that turns recording back on (inside :class:`no_grad`)."""

    _mode = True
