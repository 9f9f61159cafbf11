"""Progress bars of the commands that run longer than a few seconds (``tropic train``, ``bench``,
``reproduce``), drawn by tqdm.

A bar goes to standard error, and only when standard error is a terminal and ``--quiet`` was not
given: piped or redirected output, log files and tests get no bar and no control characters. Lines
printed while a bar is shown go through :func:`write`, which clears the bar, prints the line and
draws the bar again below it.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

__all__ = ["bar", "shown", "write"]


def shown(quiet: bool, stream: IO[str] | None = None) -> bool:
    """Whether a bar is drawn: not ``quiet`` and ``stream`` (standard error by default) a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and callable(isatty) and bool(isatty())


def bar(total: int, description: str, *, quiet: bool = False, unit: str = "it") -> Any:
    """A tqdm bar of ``total`` units on standard error, with the elapsed time, the rate and the
    estimated time left (ETA); a disabled one (every method a no-op) when :func:`shown` is false.

    Use it as a context manager (the bar is removed when the work ends) and call ``update(n)``;
    ``set_description`` and ``set_postfix_str`` say what runs now.
    """
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=not shown(quiet),
        leave=False,
        dynamic_ncols=True,
        smoothing=0.05,  # the ETA follows the average rate of the run, not the last few units
    )


def write(line: str, stream: IO[str] | None = None) -> None:
    """Print ``line`` to ``stream`` (standard output by default) without breaking a bar on screen."""
    tqdm.write(line, file=sys.stdout if stream is None else stream)
    (sys.stdout if stream is None else stream).flush()
