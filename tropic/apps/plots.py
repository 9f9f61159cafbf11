"""PNG plots for ``tropic train`` and ``tropic reproduce``: learning curves (:func:`line_plot`,
:func:`line_plots` for side-by-side panels) and image grids (:func:`image_grid`).

matplotlib is optional (``pip install matplotlib``, or the ``plot`` / ``test`` extras). It is imported
inside each function, with the non-interactive Agg backend, so importing tropic never imports it and
never touches a display.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> line_plot({"relu": [0.5, 0.8, 0.9]}, folder / "acc.png", title="accuracy", xlabel="epoch",
...           ylabel="accuracy").read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["image_grid", "line_plot", "line_plots"]


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or an ImportError saying how to install it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("tropic's plots need matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]] | Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    bands: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Draw one line per series and save a PNG; returns ``path`` (as a :class:`~pathlib.Path`).

    ``series`` maps a label to ``(x, y)`` or to ``y`` alone (x is then 1, 2, ..., as epochs are).
    ``bands`` optionally maps a label of ``series`` to a standard deviation per point: a shaded band
    ``y ± std`` is drawn around that line (a mean over seeds, say).
    """
    panel = {"series": series, "title": "", "xlabel": xlabel, "ylabel": ylabel, "bands": bands}
    return line_plots([panel], path, title=title)


def line_plots(panels: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Several :func:`line_plot` panels side by side in one PNG; returns ``path``.

    Each panel is a mapping with the keys of :func:`line_plot`: ``series`` (required), and optionally
    ``title``, ``xlabel``, ``ylabel``, ``bands``. ``title`` is the figure's title.
    """
    plt = _pyplot()
    path = Path(path)
    if not panels:
        raise ValueError("line_plots needs at least one panel")
    figure, grid = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False)
    try:
        for axes, panel in zip(grid[0], panels, strict=True):
            _draw(axes, panel["series"], panel.get("bands"))
            axes.set_title(panel.get("title", ""))
            axes.set_xlabel(panel.get("xlabel", ""))
            axes.set_ylabel(panel.get("ylabel", ""))
        if title:
            if len(panels) == 1 and not panels[0].get("title"):
                grid[0, 0].set_title(title)
            else:
                figure.suptitle(title)
        return _save(figure, path)
    finally:
        plt.close(figure)


def _save(figure: Any, path: Path) -> Path:
    """Lay out ``figure`` and write it to ``path`` (its folder created)."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _draw(axes: Any, series: Mapping[str, Any], bands: Mapping[str, Sequence[float]] | None) -> None:
    for label, values in series.items():
        x, y = _xy(values)
        (line,) = axes.plot(x, y, marker="o" if len(y) <= 30 else None, markersize=3, label=label)
        if bands and label in bands:
            std = np.asarray(bands[label], dtype=float)
            if std.shape != y.shape:
                raise ValueError(f"bands[{label!r}] has {std.size} values, the series has {y.size}")
            axes.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2, linewidth=0)
    xs = [_xy(values)[0] for values in series.values()]
    if xs and all(np.array_equal(x, np.round(x)) for x in xs):  # epochs: integer ticks
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    if series:
        axes.legend(fontsize="small")


def image_grid(
    images: Sequence[np.ndarray],
    path: str | Path,
    *,
    titles: Sequence[str] | None = None,
    title: str = "",
    columns: int | None = None,
) -> Path:
    """Save 2-d arrays (structuring elements, images) side by side as a PNG; returns ``path``.

    Each image gets its own grey scale (min to max, ``-inf`` drawn as the minimum), with an optional
    title under it; ``columns`` defaults to about the square root of the count.
    """
    plt = _pyplot()
    path = Path(path)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    count = max(len(images), 1)
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.9 * rows + 0.4), squeeze=False)
    try:
        for index, axes in enumerate(grid.flat):
            axes.set_axis_off()
            if index >= len(images):
                continue
            image = np.asarray(images[index], dtype=float)
            if image.ndim > 2 and math.prod(image.shape[:-2]) == 1:
                image = image.reshape(image.shape[-2:])  # (1, k, k) or (1, 1, k, k): one channel
            if image.ndim != 2:
                raise ValueError(f"image {index} must be 2-d, got shape {np.shape(images[index])}")
            finite = image[np.isfinite(image)]
            low = finite.min() if finite.size else 0.0
            high = finite.max() if finite.size else 1.0
            shown = np.where(np.isfinite(image), image, low)
            high = high if high > low else low + 1
            axes.imshow(shown, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if titles is not None:
                axes.set_title(str(titles[index]), fontsize="small")
        if title:
            figure.suptitle(title)
        return _save(figure, path)
    finally:
        plt.close(figure)


def _xy(values) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(values, tuple) and len(values) == 2 and np.ndim(values[0]) == 1:
        x, y = (np.asarray(v, dtype=float) for v in values)
        if x.shape != y.shape:
            raise ValueError(f"x has {x.size} values, y has {y.size}")
        return x, y
    y = np.asarray(values, dtype=float)
    return np.arange(1, y.size + 1, dtype=float), y
