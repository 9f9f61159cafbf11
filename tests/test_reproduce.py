"""``tropic reproduce``: quick runs of the three papers write their tables, verdicts, JSON and plots;
bad arguments give one line; the verdict rules behave as stated."""

from __future__ import annotations

import json
import re
from typing import ClassVar

import numpy as np
import pytest

from tropic.apps.cli import main
from tropic.apps.reproduce import render
from tropic.apps.reproduce import report as rp

pytest.importorskip("sklearn", reason="scikit-learn (the test extra) provides the digits data")
pytest.importorskip("matplotlib", reason="the plots need matplotlib (the test extra)")

CLAIMS = {"hybrid": ["1", "2", "3"], "dmnn": ["1", "2", "3", "4a", "4b"], "bimonn": ["1", "2", "3"]}


class CountingBar:
    """A stand-in for tropic.apps.progress.bar that counts the steps reported to it."""

    made: ClassVar[list[CountingBar]] = []

    def __init__(self, total, description, *, quiet=False, unit="it"):
        self.total, self.n = total, 0
        CountingBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        self.n += n


@pytest.mark.parametrize("paper", list(CLAIMS))
def test_quick_run_writes_tables_verdicts_json_and_plots(paper, tmp_path, capsys, monkeypatch):
    from tropic.apps import progress

    monkeypatch.setattr(progress, "bar", CountingBar)
    CountingBar.made.clear()
    out = tmp_path / paper
    assert main(["reproduce", paper, "--quick", "--out", str(out)]) == 0
    (bar,) = CountingBar.made
    assert bar.n == bar.total > 0  # the progress bar's length is the run's number of training steps
    printed = capsys.readouterr().out
    md = (out / "results.md").read_text()
    for claim in CLAIMS[paper]:
        assert f"## Claim {claim}:" in md
        line = re.search(rf"\*\*Verdict \(claim {claim}\): (agrees|does not agree|inconclusive)\.\*\*", md)
        assert line is not None, f"no verdict line for claim {claim}"
        assert f"Verdict (claim {claim}):" in printed
    assert md.count("Rule (fixed before the run):") == len(CLAIMS[paper])
    assert re.search(r"^\|---\|", md, flags=re.M)  # at least one Markdown table
    assert "±" in md
    results = json.loads((out / "results.json").read_text())
    assert results["paper"] == paper
    assert [s["seed"] for s in results["seeds"]] == [0, 1]
    assert [c["id"] for c in results["claims"]] == CLAIMS[paper]
    assert all(c["verdict"] in rp.VERDICTS for c in results["claims"])
    assert results["figures"]
    for name in results["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md
    # the report can be rebuilt from results.json alone (no training), identically
    (out / "results.md").unlink()
    render(out)
    assert (out / "results.md").read_text() == md


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reproduce", "resnet"], "invalid choice"),
        (["reproduce", "hybrid", "--seeds", "0"], "--seeds must be at least 1"),
        (["reproduce", "dmnn", "--epochs", "0"], "--epochs must be at least 1"),
        (["reproduce", "bimonn", "--seeds", "two"], "invalid int value"),
        (["reproduce", "hybrid", "--dataset", "mnist"], "give --data-dir"),
        (["reproduce", "hybrid", "--data-dir", "/no/such"], "--data-dir /no/such does not exist"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tropic: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_mnist_files_give_one_line(tmp_path, capsys):
    assert (
        main(["reproduce", "dmnn", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("tropic: error: ") and err.count("\n") == 1 and "mnist" in err


def test_comparison_rules():
    assert rp.better([0.9, 0.92], [0.8, 0.82]) == "yes"
    assert rp.better([0.80, 0.82], [0.81, 0.81]) == "no"  # equal means: not better
    assert rp.better([0.813, 0.813], [0.81, 0.81]) == "unclear"  # above, but within the 0.5-point floor
    assert rp.as_good([0.80, 0.80], [0.803, 0.803]) == "yes"
    assert rp.as_good([0.70, 0.70], [0.80, 0.80]) == "no"
    assert rp.as_good([0.792, 0.792], [0.80, 0.80]) == "unclear"
    assert rp.combine(["yes", "yes"]) == rp.AGREES
    assert rp.combine(["yes", "no", "unclear"]) == rp.DISAGREES
    assert rp.combine(["yes", "unclear"]) == rp.INCONCLUSIVE
    assert rp.pm([0.5, 0.7]) == "60.0 ± 10.0"
    assert rp.markdown_table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def _write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.tobytes())


def test_data_dir_runs_on_mnist_files(tmp_path, capsys, monkeypatch):
    # A tiny fake MNIST in IDX format: the --data-dir path end to end (flattened 784 pixels), read once
    # (the check of the arguments and the run share it).
    from tropic.apps import datasets

    reads = []
    load = datasets.load
    monkeypatch.setattr(datasets, "load", lambda *args, **kwargs: reads.append(args) or load(*args, **kwargs))
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist"
    data.mkdir()
    for part, n in (("train", 120), ("t10k", 40)):
        _write_idx(data / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(data / f"{part}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    out = tmp_path / "out"
    args = ["reproduce", "hybrid", "--quick", "--seeds", "1", "--data-dir", str(data), "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["options"]["dataset"] == "mnist" and len(results["seeds"]) == 1
    assert len(reads) == 1
    assert "mnist" in (out / "results.md").read_text()


@pytest.mark.parametrize("quick", [True, False])
def test_quick_reports_say_they_are_not_evidence(quick):
    """A --quick run's verdicts come from toy budgets: the printed text and results.md say so at the
    top and beside every verdict; a full run's report carries no such mark."""
    from tropic.apps.reproduce.report import AGREES, DISAGREES, Claim, Report

    claims = [
        Claim(id=str(i), statement=f"claim {i}", verdict=v, reason="x.")
        for i, v in enumerate([AGREES, DISAGREES], 1)
    ]
    report = Report(paper="p", title="t", settings={"dataset": "digits"}, claims=claims, quick=quick)
    text, md = report.text(), report.markdown()
    for output in (text, md):
        assert ("QUICK RUN (--quick)" in output) is quick
        assert ("not evidence" in output) is quick
    for claim in claims:
        line = next(row for row in text.splitlines() if row.startswith(f"Verdict (claim {claim.id}):"))
        assert line.endswith("(quick run, not evidence). x.") is quick, line
        cell = next(row for row in md.splitlines() if row.startswith(f"| {claim.id}. "))
        assert cell.endswith(f"{claim.verdict} (quick run) |" if quick else f"{claim.verdict} |"), cell


@pytest.mark.parametrize("paper", ["dmnn", "bimonn"])
def test_preset_reference_reaches_the_layers_and_the_report(paper, tmp_path, monkeypatch):
    """``--preset reference`` builds the paper's networks with the paper code's initialisation (every
    preset-taking constructor is called with it), says so in the report and keeps it in results.json,
    so that ``render`` rebuilds the same report."""
    import importlib

    module = importlib.import_module(f"tropic.apps.reproduce.{paper}")
    seen = []
    if paper == "bimonn":
        for name in ("BiSE", "DenseLUI"):
            original = getattr(module, name)

            def spy(*args, _original=original, **kwargs):
                seen.append(kwargs.get("preset"))
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, name, spy)
    else:
        original = module.models.mpm

        def spy(*args, **kwargs):
            seen.append(kwargs.get("preset"))
            return original(*args, **kwargs)

        monkeypatch.setattr(module.models, "mpm", spy)
    out = tmp_path / paper
    assert (
        main(["reproduce", paper, "--quick", "--seeds", "1", "--preset", "reference", "--out", str(out)]) == 0
    )
    assert seen and set(seen) == {"reference"}
    md = (out / "results.md").read_text()
    assert "- preset: reference" in md and "--preset reference" in md
    assert json.loads((out / "results.json").read_text())["options"]["preset"] == "reference"
    assert "- preset: reference" in render(out).markdown()


def test_preset_reference_is_refused_for_the_hybrid_paper(tmp_path, capsys):
    assert (
        main(["reproduce", "hybrid", "--quick", "--preset", "reference", "--out", str(tmp_path / "o")]) == 2
    )
    assert "already start as its code's" in capsys.readouterr().err
