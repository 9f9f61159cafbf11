"""Tables, verdicts and the results files shared by the reproductions of :mod:`tropic.apps.reproduce`.

A :class:`Report` holds the claims of one paper; each :class:`Claim` has Markdown tables (mean ± std
over seeds, the paper's number beside ours where it gives one) and a verdict decided by a rule that is
written down *before* the run: the rule's text is part of the report, next to the numbers it was
applied to. :meth:`Report.write` produces ``results.md`` and ``results.json`` (the raw per-seed
numbers).

The comparison helpers return ``"yes"``, ``"no"`` or ``"unclear"``; :func:`combine` turns several of
them into one verdict: all ``"yes"`` -> agrees, any ``"no"`` -> does not agree, else inconclusive.

Each paper's module describes its report as data, a :class:`Paper`: one :class:`ClaimSpec` per claim
(its wording, setup and rule, and a ``judge`` that reads the per-seed results and returns the tables
and the verdict), its figures (:class:`FigureSpec`), settings lines and notes. :func:`summarize` is
the one renderer: it turns a :class:`Paper` and the per-seed results into a :class:`Report`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "AGREES",
    "DISAGREES",
    "INCONCLUSIVE",
    "Claim",
    "ClaimSpec",
    "FigureSpec",
    "Finding",
    "Paper",
    "Report",
    "Results",
    "as_good",
    "better",
    "combine",
    "markdown_table",
    "mean_std",
    "pm",
    "summarize",
]

AGREES = "agrees"
DISAGREES = "does not agree"
INCONCLUSIVE = "inconclusive"
VERDICTS = (AGREES, DISAGREES, INCONCLUSIVE)

#: Smallest spread used by the comparisons of accuracies (0.5 percentage points): with two or three
#: seeds a measured std can be 0 by chance.
ACCURACY_FLOOR = 0.005


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; ``(nan, nan)`` for no values."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


def pm(values: Iterable[float], *, percent: bool = True, digits: int | None = None) -> str:
    """``"mean ± std"`` of ``values`` (in percent by default)."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    scale = 100.0 if percent else 1.0
    digits = (1 if percent else 3) if digits is None else digits
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def better(a: Sequence[float], b: Sequence[float], floor: float = ACCURACY_FLOOR) -> str:
    """Is ``a`` better (higher) than ``b``?

    ``"yes"`` if ``mean(a) - mean(b) > s`` with ``s = max(std(a), std(b), floor)``; ``"no"`` if
    ``mean(a) <= mean(b)``; ``"unclear"`` in between.
    """
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    s = max(sa, sb, floor)
    gap = ma - mb
    if gap > s:
        return "yes"
    if gap <= 0:
        return "no"
    return "unclear"


def as_good(a: Sequence[float], b: Sequence[float], floor: float = ACCURACY_FLOOR) -> str:
    """Is ``a`` as good as ``b`` (within noise)?

    ``"yes"`` if ``mean(a) >= mean(b) - s`` with ``s = max(std(a), std(b), floor)``; ``"no"`` if
    ``mean(a) < mean(b) - 2 s``; ``"unclear"`` in between.
    """
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    s = max(sa, sb, floor)
    gap = ma - mb
    if gap >= -s:
        return "yes"
    if gap < -2 * s:
        return "no"
    return "unclear"


def combine(outcomes: Iterable[str]) -> str:
    """All ``"yes"`` -> agrees; any ``"no"`` -> does not agree; otherwise inconclusive."""
    outcomes = list(outcomes)
    if outcomes and all(o == "yes" for o in outcomes):
        return AGREES
    if any(o == "no" for o in outcomes):
        return DISAGREES
    return INCONCLUSIVE


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Claim:
    """One claim of a paper, our numbers for it, and the verdict.

    Attributes
    ----------
    id : str
        ``"1"``, ``"2"``, ... (as numbered at the end of the paper's summary).
    statement : str
        The claim, as the paper's summary words it.
    setup : str
        What we ran for it (one paragraph).
    tables : list of str
        Markdown tables.
    rule : str
        The verdict rule, fixed before the run.
    verdict : str
        One of :data:`VERDICTS`.
    reason : str
        The numbers the rule was applied to.
    """

    id: str
    statement: str
    setup: str = ""
    tables: list[str] = field(default_factory=list)
    rule: str = ""
    verdict: str = INCONCLUSIVE
    reason: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def verdict_line(self) -> str:
        return f"**Verdict (claim {self.id}): {self.verdict}.** {self.reason}".rstrip()

    def markdown(self) -> str:
        parts = [f"## Claim {self.id}: {self.statement}", ""]
        if self.setup:
            parts += [self.setup, ""]
        for table in self.tables:
            parts += [table, ""]
        parts += [f"Rule (fixed before the run): {self.rule}", "", self.verdict_line(), ""]
        return "\n".join(parts)


@dataclass
class Report:
    """All claims of one paper, the settings, raw per-seed numbers, figures and notes."""

    paper: str
    title: str
    settings: dict[str, Any]
    seeds: list[dict[str, Any]] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)  # how it was run (for :func:`render`)
    quick: bool = False  # a --quick run: its verdicts test the pipeline, not the papers' claims

    def quick_warning(self) -> list[str]:
        """The lines that head a ``--quick`` report (none otherwise)."""
        if not self.quick:
            return []
        return [
            "QUICK RUN (--quick): tiny budgets and widths, a test that the pipeline works. Its verdicts",
            "are not evidence for or against the paper's claims; run without --quick for those.",
            "",
        ]

    def markdown(self, figure_prefix: str = "") -> str:
        lines = [f"# `tropic reproduce {self.paper}`: {self.title}", ""]
        lines += [f"> {line}" if line else "" for line in self.quick_warning()]
        lines += [f"- {k}: {v}" for k, v in self.settings.items()]
        lines += [f"- wall time: {self.seconds:.0f} s", ""]
        lines += ["| claim | verdict |", "|---|---|"]
        marker = " (quick run)" if self.quick else ""
        lines += [f"| {c.id}. {c.statement} | {c.verdict}{marker} |" for c in self.claims]
        lines.append("")
        if self.notes:
            lines += ["Notes:", ""] + [f"- {n}" for n in self.notes] + [""]
        for claim in self.claims:
            lines.append(claim.markdown())
        if self.figures:
            lines += ["## Figures", ""]
            for name, caption in self.figures:
                lines += [f"![{caption}]({figure_prefix}{name})", "", f"*{caption}*", ""]
        return "\n".join(lines)

    def text(self) -> str:
        """What is printed to stdout: the tables and verdicts of every claim."""
        parts = [f"tropic reproduce {self.paper}: {self.title}", "", *self.quick_warning()]
        marker = " (quick run, not evidence)" if self.quick else ""
        for claim in self.claims:
            parts += [f"Claim {claim.id}: {claim.statement}", ""]
            for table in claim.tables:
                parts += [table, ""]
            parts += [
                f"Rule: {claim.rule}",
                f"Verdict (claim {claim.id}): {claim.verdict}{marker}. {claim.reason}",
                "",
            ]
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "paper": self.paper,
            "title": self.title,
            "settings": self.settings,
            "seconds": self.seconds,
            "options": self.options,
            "claims": [
                {
                    "id": c.id,
                    "statement": c.statement,
                    "rule": c.rule,
                    "verdict": c.verdict,
                    "reason": c.reason,
                }
                for c in self.claims
            ],
            "seeds": self.seeds,
            "figures": [name for name, _ in self.figures],
        }

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write ``results.md`` and ``results.json`` into ``out``; returns their paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        md = out / "results.md"
        md.write_text(self.markdown(), encoding="utf-8")
        js = out / "results.json"
        js.write_text(json.dumps(_plain(self.to_json()), indent=1, allow_nan=True) + "\n", encoding="utf-8")
        return md, js


class Results:
    """One run's per-seed results (as a paper's ``run_seed`` returns them, or read back from
    ``results.json``), its settings, and the values its texts are filled with (:attr:`fields`)."""

    def __init__(self, settings: Any, seeds: list[dict[str, Any]], fields: dict[str, Any]) -> None:
        self.settings = settings
        self.seeds = seeds
        self.fields = fields

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, *keys: str | int) -> list[Any]:
        """``seed[keys[0]][keys[1]]...`` for every seed, in seed order."""
        values = []
        for seed in self.seeds:
            value: Any = seed
            for key in keys:
                value = value[key]
            values.append(value)
        return values


class Finding(NamedTuple):
    """What a claim's ``judge`` returns."""

    tables: list[tuple[Sequence[str], Sequence[Sequence[Any]]]]  # (header, rows) per Markdown table
    verdict: str
    reason: str  # the numbers the rule was applied to


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of a paper as data.

    ``setup`` and ``rule`` are templates (``str.format``) filled from :attr:`Results.fields`;
    ``judge`` reads the per-seed results and returns the tables and the verdict (:class:`Finding`).
    """

    id: str
    statement: str
    setup: str
    rule: str
    judge: Callable[[Results], Finding]


@dataclass(frozen=True)
class FigureSpec:
    """One PNG of a report: its file name, its caption, and ``draw(results, path)`` that writes it."""

    name: str
    caption: str
    draw: Callable[[Results, Path], Any]


@dataclass(frozen=True)
class Paper:
    """A paper's reproduction report as data, rendered by :func:`summarize`.

    Attributes
    ----------
    name, title : str
    fields : callable
        ``fields(settings, seeds)``: the values the templates use besides ``dataset`` and ``seeds``
        (the number of seeds), which every paper has.
    settings : dict
        The report's settings lines: a template, or a function of the :class:`Results`.
    claims : tuple of ClaimSpec
    figures : tuple of FigureSpec
    notes : tuple of str
        Templates.
    """

    name: str
    title: str
    fields: Callable[[Any, list[dict[str, Any]]], dict[str, Any]]
    settings: dict[str, str | Callable[[Results], Any]]
    claims: tuple[ClaimSpec, ...]
    figures: tuple[FigureSpec, ...]
    notes: tuple[str, ...]


def summarize(paper: Paper, settings: Any, seeds: list[dict[str, Any]], seconds: float) -> Report:
    """The report of ``paper`` for per-seed results (as its ``run_seed`` returns them, or read back
    from ``results.json``): every claim judged, every figure drawn into ``settings.out``."""
    fields = {"dataset": settings.dataset, "seeds": len(seeds)} | paper.fields(settings, seeds)
    results = Results(settings, seeds, fields)
    lines = {k: v.format_map(fields) if isinstance(v, str) else v(results) for k, v in paper.settings.items()}
    report = Report(paper=paper.name, title=paper.title, settings=lines, seeds=seeds)
    report.quick = bool(getattr(settings, "quick", False))
    for spec in paper.claims:
        finding = spec.judge(results)
        claim = Claim(
            id=spec.id,
            statement=spec.statement,
            setup=spec.setup.format_map(fields),
            tables=[markdown_table(header, rows) for header, rows in finding.tables],
            rule=spec.rule.format_map(fields),
            verdict=finding.verdict,
            reason=finding.reason,
        )
        report.claims.append(claim)
    for figure in paper.figures:
        figure.draw(results, settings.out / figure.name)
        report.figures.append((figure.name, figure.caption))
    report.notes = [note.format_map(fields) for note in paper.notes]
    report.seconds = seconds
    return report


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as plain JSON values (non-finite floats as strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    return value
