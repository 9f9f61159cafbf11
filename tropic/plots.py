"""Moved to :mod:`tropic.apps.plots`; this old path re-exports its public names."""

from tropic.apps.plots import image_grid, line_plot, line_plots

__all__ = ["image_grid", "line_plot", "line_plots"]
