"""What a newcomer meets on the command line (issue 18): every mistake is one ``tropic: error:`` line
naming the option, status 2, found before any long work and leaving nothing behind; ``--version`` and
bare ``tropic``; progress bars only on a terminal and never with ``--quiet``; labels that read right;
run folders that can be reused; environment variables that are not silently ignored."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import types

import pytest
from tqdm import tqdm

import tropic
from tropic.apps import bench, progress
from tropic.apps.cli import main

pytest.importorskip("sklearn", reason="scikit-learn (the test extra) provides the digits data")

# A bench of tiny sizes (well under a second): the cases, labels and bars without the timing cost.
TINY = bench.Sizes(
    square=(8,),
    layers=(),
    nonflat=(1, 1, 8, 8),
    flat=(16, 3),
    conv=(1, 1, 1, 6, 3),
    train=(4, 8, 8),
    memory=16,
)


class Terminal(io.StringIO):
    """Standard error as a terminal (progress bars are drawn only on one)."""

    def isatty(self) -> bool:
        return True


class EagerBar(tqdm):
    """tqdm redrawing at every update, so that a short test run shows the time left for sure."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "mininterval": 0, "miniters": 1})


def one_error_line(capsys, args, message):
    """Run ``tropic ARGS``: status 2 and exactly one ``tropic: error:`` line holding ``message``."""
    assert main(args) == 2, args
    err = capsys.readouterr().err
    assert err.startswith("tropic: error: ") and message in err, (args, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def forbid(monkeypatch, target, name):
    """Make ``target.name`` fail the test if called: the long work must not start."""

    def called(*args, **kwargs):
        raise AssertionError(f"{name} ran: the mistake was not caught before the long work")

    monkeypatch.setattr(target, name, called)


# -- 1. tropic bench --plot ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("missing/x.png", "missing/x.png: the folder missing does not exist"),
        (".", "--plot . is a folder: give a file name such as bench.png"),
        ("bench_noext", "--plot bench_noext: give a file name ending in .png, .svg, .pdf"),
        ("notes.txt/x.png", "--plot notes.txt/x.png: notes.txt is a file, not a folder"),
    ],
)
def test_bench_plot_mistakes_before_any_timing(capsys, tmp_path, monkeypatch, plot, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("notes")
    forbid(monkeypatch, bench, "_product_cases")
    one_error_line(capsys, ["bench", "--quick", "--plot", plot], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written


def test_bench_writes_the_chart_it_names(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "QUICK", TINY)
    chart = tmp_path / "speed-ups.svg"
    assert main(["bench", "--quick", "--repeat", "1", "--plot", str(chart)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"chart: {chart}") and chart.read_bytes().lstrip().startswith(b"<?xml")


# -- 2. tropic reproduce --out ---------------------------------------------------------------------


def fake_reproduce(calls):
    """A stand-in for tropic.apps.reproduce.reproduce: logs a line, advances the bar, writes nothing."""

    def reproduce(paper, settings):
        calls.append((paper, settings.out))
        settings.log("  seed 0: trained")
        settings.advance(1)
        return types.SimpleNamespace(text=lambda: "the tables")

    return reproduce


def test_reproduce_out_mistakes_before_training(capsys, tmp_path, monkeypatch):
    import tropic.apps.reproduce as reproduce

    forbid(monkeypatch, reproduce, "reproduce")
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "results.md").write_text("an earlier run")
    cases = [
        (tmp_path / "notes.txt", "is a file, not a folder: choose another --out"),
        (tmp_path / "notes.txt" / "x", "notes.txt is a file, not a folder"),
        (tmp_path / "earlier", "exists and is not empty: it holds an earlier run's results?"),
    ]
    for out, message in cases:
        err = one_error_line(capsys, ["reproduce", "hybrid", "--quick", "--out", str(out)], message)
        assert f"--out {out}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "notes"


def test_reproduce_overwrite_and_quiet(capsys, tmp_path, monkeypatch):
    import tropic.apps.reproduce as reproduce

    calls = []
    monkeypatch.setattr(reproduce, "reproduce", fake_reproduce(calls))
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "results.md").write_text("an earlier run")
    assert main(["reproduce", "hybrid", "--quick", "--out", str(earlier), "--overwrite"]) == 0
    out, err = capsys.readouterr()
    assert calls == [("hybrid", earlier)] and "the tables" in out and err == "  seed 0: trained\n"
    assert main(["reproduce", "hybrid", "--quick", "--out", str(earlier), "--overwrite", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "the tables" in out and err == ""


def test_interrupted_reproduction_leaves_no_folder(capsys, tmp_path, monkeypatch):
    from tropic.apps.reproduce import hybrid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hybrid, "run_seed", interrupted)
    out = tmp_path / "new" / "hybrid"
    assert main(["reproduce", "hybrid", "--quick", "--out", str(out)]) == 130
    assert capsys.readouterr().err == "tropic: interrupted\n"
    assert list(tmp_path.iterdir()) == []  # created only when the results are written


# -- 3, 4, 5. tropic train: split sizes, options that do not apply, files for folders -------------


def train_mistakes(tmp_path):
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "empty_folder").mkdir()
    bise = ["--model", "bise", "--dataset", "diskorect"]
    return [
        ([*bise, "--test-fraction", "0.001"], "--test-fraction 0.001 leaves the test set empty"),
        ([*bise, "--test-fraction", "0.999"], "--test-fraction 0.999 leaves the training set empty"),
        (["--test-fraction", "0.0001"], "--test-fraction 0.0001 leaves the test set empty"),
        (["--test-fraction", "0.9999"], "--test-fraction 0.9999 leaves the training set empty"),
        (["--data-dir", "empty_folder"], "--data-dir is for the data sets read from files"),
        ([*bise, "--data-dir", "empty_folder"], "--dataset is diskorect, which is built in"),
        (["--device", "cuda"], "--device cuda needs --engine torch"),
        (["--dataset", "mnist", "--data-dir", "notes.txt"], "--data-dir notes.txt is a file, not a folder"),
        (["--dataset", "mnist", "--data-dir", "nowhere"], "--data-dir nowhere does not exist"),
        (["--out", "notes.txt"], "--out notes.txt is a file, not a folder"),
        (["--out", "notes.txt/run"], "--out notes.txt/run: notes.txt is a file, not a folder"),
    ]


def test_train_mistakes_before_loading_any_data(capsys, tmp_path, monkeypatch):
    from tropic.apps.cli import train

    monkeypatch.chdir(tmp_path)
    forbid(monkeypatch, train, "_load_data")
    for args, message in train_mistakes(tmp_path):
        one_error_line(capsys, ["train", *args], message)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_folder", "notes.txt"], args


def test_the_split_check_matches_the_split():
    from tropic.apps import datasets

    for name, count in (("digits", 0), ("diskorect", 8)):
        n = datasets.DIGITS_SAMPLES if name == "digits" else count
        for fraction in (1 / n, 0.3, 1 - 1 / n):
            x_train, _, x_test, _ = datasets.load(name, test_fraction=fraction, count=count or 256, size=8)
            assert (len(x_train), len(x_test)) == datasets.split_sizes(name, fraction, count=count or 256)


def test_a_failing_run_removes_everything_it_wrote(capsys, tmp_path, monkeypatch):
    """An interruption in the middle of training (Ctrl-C) leaves no run folder, not even runs/."""
    from tropic.apps.cli import train

    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_epoch", interrupted)
    assert main(["train", "--epochs", "1", "--width", "8"]) == 130
    assert list(tmp_path.iterdir()) == []


# -- 6. --version and bare tropic -------------------------------------------------------------------


def test_version_and_bare_command(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"tropic {tropic.__version__}\n"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tropic ") and "--version" in out
    for command in ("info", "bench", "train", "reproduce"):
        assert re.search(rf"^    {command}\b", out, re.MULTILINE), command
    result = subprocess.run([sys.executable, "-m", "tropic"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == out and result.stderr == ""


# -- 7. progress bars ---------------------------------------------------------------------------------


def test_train_progress_bar_on_a_terminal_only(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "tqdm", EagerBar)
    args = ["train", "--model", "relu", "--epochs", "2", "--width", "8"]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    bar = terminal.getvalue()
    assert re.search(r"training: +\d+%\|.*\| \d+/86 \[\d\d:\d\d<\d\d:\d\d", bar), bar  # elapsed<left
    assert "epoch 2/2, loss" in bar
    out = capsys.readouterr().out
    assert len(re.findall(r"^epoch [12]/2 ", out, re.MULTILINE)) == 2  # the epoch lines, on stdout
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert quiet.getvalue() == ""
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "c")]) == 0  # stderr not a terminal: no bar
    assert capsys.readouterr().err == ""


def test_bench_progress_bar_on_a_terminal_only(capsys, monkeypatch):
    monkeypatch.setattr(bench, "QUICK", TINY)
    monkeypatch.setattr(progress, "tqdm", EagerBar)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["bench", "--quick", "--repeat", "1"]) == 0
    assert re.search(r"tropic bench: +\d+%\|.*\| \d+/\d+ \[\d\d:\d\d<\d\d:\d\d", terminal.getvalue())
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main(["bench", "--quick", "--repeat", "1", "--quiet"]) == 0
    assert quiet.getvalue() == ""
    assert "extra peak memory" in capsys.readouterr().out  # the report itself is printed either way


def test_bars_are_off_when_output_is_not_a_terminal():
    assert progress.shown(quiet=False, stream=Terminal())
    assert not progress.shown(quiet=True, stream=Terminal())
    assert not progress.shown(quiet=False, stream=io.StringIO())
    with progress.bar(3, "x", quiet=True) as bar:
        assert bar.disable


# -- 8. labels -----------------------------------------------------------------------------------------


def test_info_says_what_runs_each_operator(capsys):
    from tropic.backends.numpy import compiled

    assert main(["info"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "native" not in report
    matmul = report["kernels"]["matmul"]
    expected = "compiled C" if compiled.available() else "pure NumPy"
    assert any(entry.startswith("NumPy arrays: ") and expected in entry for entry in matmul), matmul


def test_bench_labels_and_the_nominal_note(capsys, monkeypatch):
    monkeypatch.setattr(bench, "QUICK", TINY)
    assert main(["bench", "--quick", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "tropic (numpy)" not in out and "NumPy path" not in out
    assert bench.reference_label() in out and bench.TORCH_TENSORS in out
    flat = [line for line in out.splitlines() if line.startswith("dilation (flat)")]
    assert flat and all(re.search(r"\d\.\d\d\* ", line) for line in flat), flat
    assert re.search(r"^\* dilation \(flat\): nominal Gp/s", out, re.MULTILINE)


def test_bench_chart_reads_at_a_glance(tmp_path, monkeypatch):
    """A title, log-scale speed-ups, one colour per implementation (the same colour in every case)."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figures = []
    savefig = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda self, *a, **k: figures.append(self) or savefig(self, *a, **k)
    )
    Row = bench.Row
    rows = [
        Row("op", "small", "tropic, compiled C", 1.0, None, 1.0, 10, "reference"),
        Row("op", "small", "baseline A", 4.0, None, 1.0, 10, "equal"),
        Row("op", "small", "baseline B", 0.5, None, 1.0, 10, "equal"),
        Row("op", "large", "tropic, compiled C", 2.0, None, 2.0, 10, "reference"),
        Row("op", "large", "baseline A", 60.0, None, 2.0, 10, "equal"),
        Row("op", "large", "baseline B", None, None, 2.0, 10, "skipped: too large"),
    ]
    assert bench.plot(rows, tmp_path / "chart.png") == str(tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (axes,) = [a for a in figures[0].axes if a.get_legend() is not None]
    assert axes.get_xscale() == "log" and "tropic" in axes.get_title()
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["baseline A", "baseline B"]
    colours = [tuple(p.get_facecolor()) for p in axes.patches]  # A, B (small); A (large)
    assert len(colours) == 3 and colours[0] == colours[2] != colours[1]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["op\nsmall", "op\nlarge"]


# -- 9. reusing a run ----------------------------------------------------------------------------------


def test_a_runs_config_works_as_is_and_quiet_names_the_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "relu", "--epochs", "1", "--width", "8", "--quiet"]) == 0
    (first,) = (tmp_path / "runs").iterdir()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0] == f"run folder: {first.relative_to(tmp_path)}"
    assert lines[1].startswith("final test accuracy: ")
    assert main(["train", "--config", str(first / "config.json")]) == 0  # no --out needed
    out = capsys.readouterr().out
    assert "epoch 1/1" in out  # the first run's --quiet is not carried over
    second = next(p for p in (tmp_path / "runs").iterdir() if p != first)
    first_config, second_config = (json.loads((p / "config.json").read_text()) for p in (first, second))
    assert {k: v for k, v in first_config.items() if k not in ("out", "quiet")} == {
        k: v for k, v in second_config.items() if k not in ("out", "quiet")
    }


# -- 10. environment variables --------------------------------------------------------------------------


def test_bad_environment_variables_are_one_warning_line(capsys, monkeypatch):
    from tropic.core import config

    monkeypatch.setenv("TROPIC_MAX_ISA", "bogus")
    monkeypatch.setenv("TROPIC_NUM_THREADS", "abc")
    monkeypatch.setattr(config, "_warned", set())  # tropic warns once per process and value
    assert main(["info"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "tropic: warning: TROPIC_MAX_ISA='bogus' is not a known cap (the only one is 'avx2'); ignored: the "
        "compiled kernels use the best instructions this CPU has",
        "tropic: warning: TROPIC_NUM_THREADS='abc' is not a thread count from 1 to 1024; ignored",
    ]
    assert json.loads(out)["environment"][0].startswith("TROPIC_MAX_ISA='bogus'")
    monkeypatch.delenv("TROPIC_MAX_ISA")  # (not "avx2": the C kernels read it once, at their first call)
    monkeypatch.delenv("TROPIC_NUM_THREADS")
    assert main(["info"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and isinstance(json.loads(out)["environment"], str)


# -- 14. threads -------------------------------------------------------------------------------


def test_threads_option_checked_first_and_held_for_the_run_only(capsys, monkeypatch, tmp_path):
    """``tropic train --threads N``: a bad N is one error line before any data is read; a good one
    holds tropic's kernels (and torch's pool with --engine torch) during the run, then the previous
    settings are back."""
    from tropic.apps.cli import train as train_cli

    forbid(monkeypatch, train_cli, "_load_data")
    for bad in ("0", "1025"):
        one_error_line(capsys, ["train", "--threads", bad, "--out", str(tmp_path / bad)], "--threads")
    monkeypatch.undo()
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads(), tropic.get_num_threads()
    seen = []
    real_epoch = train_cli._epoch

    def epoch(*args, **kwargs):
        seen.append((torch.get_num_threads(), tropic.get_num_threads()))
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_cli, "_epoch", epoch)
    args = ["train", "--engine", "torch", "--threads", "1", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert seen == [(1, 1)]
    assert (torch.get_num_threads(), tropic.get_num_threads()) == before
    assert "threads" not in capsys.readouterr().err
