"""Moved to :mod:`tropic.apps.reproduce`; this old path re-exports its public names."""

from tropic.apps.reproduce import PAPERS, Report, Settings, render, reproduce, steps

__all__ = ["PAPERS", "Report", "Settings", "render", "reproduce", "steps"]
