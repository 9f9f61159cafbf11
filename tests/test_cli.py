"""The ``tropic`` command's contract: JSON from ``info``, one-line errors with status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import tropic
from tropic.apps.cli import main


def test_info_reports_version_backends_and_libraries(capsys):
    assert main(["info"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tropic"] == tropic.__version__
    assert report["backends"]["numpy"] == "loaded"
    assert "threads" in report["cpu"]
    assert set(report["libraries"]) >= {"numpy", "torch", "cupy"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-command"], "invalid choice"),
        (["bench", "--repeat", "0"], "--repeat must be at least 1"),
        (["bench", "--repeat", "x"], "invalid int value"),
        (["info", "--extra"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tropic: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_module_entry_points_behave_like_the_command():
    entries = (
        ["-m", "tropic", "bench", "--repeat", "0"],
        ["-m", "tropic.apps.bench", "--repeat", "0"],
        ["-m", "tropic.bench", "--repeat", "0"],  # the path before the move to tropic.apps
    )
    for entry in entries:
        result = subprocess.run([sys.executable, *entry], capture_output=True, text=True)
        assert result.returncode == 2
        assert result.stderr.strip() == "tropic: error: --repeat must be at least 1"
