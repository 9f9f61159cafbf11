"""Small-scale reproductions of the claims of the papers behind tropic (``tropic reproduce``).

One module per paper: :mod:`~tropic.apps.reproduce.hybrid` (sparse hybrid heads),
:mod:`~tropic.apps.reproduce.dmnn` (deep morphological networks) and :mod:`~tropic.apps.reproduce.bimonn`
(binarised morphological networks); :mod:`~tropic.apps.reproduce.report` holds the tables and verdicts.
Each module's ``run(settings)`` trains the models for every seed and returns a
:class:`~tropic.apps.reproduce.report.Report`, and its ``steps(settings)`` says how many training
steps that takes (the length of ``tropic reproduce``'s progress bar: each step calls
``settings.progress``); :func:`reproduce` also writes ``results.md``, ``results.json`` and the plots
into ``settings.out``, which it creates only then, when the training is done.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ._common import Settings
from .report import Report, summarize

__all__ = ["PAPERS", "Report", "Settings", "render", "reproduce", "steps"]

#: paper name -> the module that reproduces its claims (its docstring names the paper)
PAPERS = {
    "hybrid": "tropic.apps.reproduce.hybrid",
    "dmnn": "tropic.apps.reproduce.dmnn",
    "bimonn": "tropic.apps.reproduce.bimonn",
}


def reproduce(paper: str, settings: Settings) -> Report:
    """Run the reproduction of ``paper`` and write its results into ``settings.out``."""
    report = _module(paper).run(settings)
    return _finish(report, settings)


def steps(paper: str, settings: Settings) -> int:
    """The training steps :func:`reproduce` will report to ``settings.progress`` for ``paper``."""
    return _module(paper).steps(settings)


def _module(paper: str):
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    return importlib.import_module(PAPERS[paper])


def _finish(report: Report, settings: Settings) -> Report:
    if settings.preset != "tropic":
        report.settings["preset"] = f"{settings.preset} (the layers start as the paper's code starts them)"
    if settings.command:
        report.settings["command"] = f"`{settings.command}`"
    report.options = {
        "quick": settings.quick,
        "seeds": settings.seeds,
        "epochs": settings.epochs,
        "dataset": settings.dataset,
        "data_dir": None if settings.data_dir is None else str(settings.data_dir),
        "command": settings.command,
        "preset": settings.preset,
    }
    report.write(settings.out)
    return report


def render(folder: str | Path, settings: Settings | None = None) -> Report:
    """Rebuild ``results.md`` and the plots in ``folder`` from its ``results.json`` (no training).

    ``settings`` defaults to the options stored in the JSON file; the wall time is the stored one.
    """
    folder = Path(folder)
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    if settings is None:
        options = dict(data.get("options") or {})
        data_dir = options.pop("data_dir", None)
        settings = Settings(out=folder, data_dir=None if data_dir is None else Path(data_dir), **options)
    settings.out = folder
    module = importlib.import_module(PAPERS[data["paper"]])
    report = summarize(module.PAPER, settings, data["seeds"], float(data.get("seconds", 0.0)))
    return _finish(report, settings)
