"""Tables, verdicts and the results files shared by the reproductions of :mod:`tropic.apps.reproduce`.

A :class:`Report` holds the claims of one paper; each :class:`Claim` has Markdown tables (mean ± std
over seeds, the paper's number beside ours where it gives one) and a verdict decided by a rule that is
written down *before* the run: the rule's text is part of the report, next to the numbers it was
applied to. :meth:`Report.write` produces ``results.md`` and ``results.json`` (the raw per-seed
numbers).

The comparison helpers return ``"yes"``, ``"no"`` or ``"unclear"``; :func:`combine` turns several of
them into one verdict: all ``"yes"`` -> agrees, any ``"no"`` -> does not agree, else inconclusive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AGREES",
    "DISAGREES",
    "INCONCLUSIVE",
    "Claim",
    "Report",
    "as_good",
    "better",
    "combine",
    "markdown_table",
    "mean_std",
    "pm",
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

    def markdown(self, figure_prefix: str = "") -> str:
        lines = [f"# `tropic reproduce {self.paper}`: {self.title}", ""]
        lines += [f"- {k}: {v}" for k, v in self.settings.items()]
        lines += [f"- wall time: {self.seconds:.0f} s", ""]
        lines += ["| claim | verdict |", "|---|---|"]
        lines += [f"| {c.id}. {c.statement} | {c.verdict} |" for c in self.claims]
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
        parts = [f"tropic reproduce {self.paper}: {self.title}", ""]
        for claim in self.claims:
            parts += [f"Claim {claim.id}: {claim.statement}", ""]
            for table in claim.tables:
                parts += [table, ""]
            parts += [
                f"Rule: {claim.rule}",
                f"Verdict (claim {claim.id}): {claim.verdict}. {claim.reason}",
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
