"""The README's promises: its test command is what CI runs, and the backend report is honest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import tropic
from tropic.backends import info

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks]


def test_ci_runs_exactly_the_readme_test_command():
    """`.ci/run` must run the README's test command, not a private variant of it."""
    test_command = next(c for c in _readme_commands() if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_install_commands_pin_torch_before_the_project():
    """No install step may resolve a newer torch: 2.13.0 is installed before the project."""
    for command in _readme_commands():
        if "pip install" in command and "torch" in command:
            assert command.index("torch==2.13.0") < command.index('-e ".[test]"')


def test_backend_report_lists_numpy_kernels_for_every_primitive():
    report = info()
    assert report["backends"]["numpy"] == "loaded"
    for operator in (
        "matmul",
        "matmul_vjp",
        "morphology",
        "morphology_vjp",
        "conv2d",
        "conv2d_vjp",
        "maxout",
    ):
        assert "numpy" in report["native"][operator], operator


def test_command_line_info_runs():
    out = subprocess.run(
        [sys.executable, "-m", "tropic", "info"], capture_output=True, text=True, check=True
    ).stdout
    assert '"numpy": "loaded"' in out


def test_core_imports_no_backend():
    """Dependencies point one way: importing tropic must not import a backend."""
    code = "import sys, tropic; print([m for m in sys.modules if m.startswith('tropic.backends.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_operators_return_the_callers_array_library():
    strict = __import__("pytest").importorskip("array_api_strict", reason="array-api-strict is not installed")
    a = strict.asarray(np.ones((2, 3)))
    b = strict.asarray(np.zeros((3, 2)))
    assert type(tropic.maxplus_matmul(a, b)) is type(a)
    assert type(tropic.maxplus_matmul(np.ones((2, 3)), np.zeros((3, 2)))) is np.ndarray


def test_compiled_kernels_can_be_switched_off():
    """TROPIC_DISABLE_COMPILED=1 falls back to NumPy, says so, and gives the same results."""
    code = (
        "import json, numpy as np, tropic; from tropic.backends import info; "
        "r = np.random.default_rng(0); a = r.integers(-3, 3, (40, 30)).astype(np.float32); "
        "b = r.integers(-3, 3, (30, 20)).astype(np.float32); "
        "c, k = tropic.maxplus_matmul(a, b, return_indices=True); "
        "print(json.dumps([info()['cpu']['in use'], c.tolist(), k.tolist()]))"
    )
    runs = []
    for disabled in ("1", ""):
        env = dict(os.environ, TROPIC_DISABLE_COMPILED=disabled)
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        runs.append(json.loads(done.stdout))
    assert runs[0][0] is False
    assert runs[0][1:] == runs[1][1:]
