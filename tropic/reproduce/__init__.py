"""Small-scale reproductions of the claims of the papers behind tropic (``tropic reproduce``).

One module per paper: :mod:`~tropic.reproduce.hybrid` (sparse hybrid heads),
:mod:`~tropic.reproduce.dmnn` (deep morphological networks) and :mod:`~tropic.reproduce.bimonn`
(binarised morphological networks); :mod:`~tropic.reproduce.report` holds the tables and verdicts.
Each module's ``run(settings)`` trains the models for every seed and returns a
:class:`~tropic.reproduce.report.Report`; :func:`reproduce` also writes ``results.md``,
``results.json`` and the plots into ``settings.out``.
"""

from __future__ import annotations

import importlib

from ._common import Settings
from .report import Report

__all__ = ["PAPERS", "Report", "Settings", "reproduce"]

#: paper name -> (module, the summary in ../shared/papers it reproduces)
PAPERS = {
    "hybrid": "tropic.reproduce.hybrid",
    "dmnn": "tropic.reproduce.dmnn",
    "bimonn": "tropic.reproduce.bimonn",
}


def reproduce(paper: str, settings: Settings) -> Report:
    """Run the reproduction of ``paper`` and write its results into ``settings.out``."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    settings.out.mkdir(parents=True, exist_ok=True)
    report = importlib.import_module(PAPERS[paper]).run(settings)
    if settings.command:
        report.settings["command"] = f"`{settings.command}`"
    report.write(settings.out)
    return report
