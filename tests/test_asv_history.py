"""The performance history: ``scripts/asv_history.py``, the asv configuration that builds any commit,
the stored results under ``benchmarks/results/`` and the headline benchmarks they measure.

Timings are never asserted; what is asserted is which commits the history covers, that the stored
results are asv's and complete up to the newest one, that the CI comparison picks the right baseline,
that the plot is drawn from them, and that the benchmarks' baselines compute what tropic computes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_history_script():
    spec = importlib.util.spec_from_file_location("asv_history", ROOT / "scripts" / "asv_history.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


history = _load_history_script()


def git(*args: str) -> list[str]:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()


def test_covered_commits_are_the_kernel_changes_and_one_in_ten_of_the_rest():
    covered = history.covered_commits()
    since_first = git("rev-list", "--reverse", f"{history.FIRST}^..HEAD")
    kernel = set(git("rev-list", f"{history.FIRST}^..HEAD", "--", *history.KERNEL_PATHS))
    assert covered[0].startswith(history.FIRST) and covered[-1] == git("rev-parse", "HEAD")[0]
    assert covered == [c for c in since_first if c in set(covered)]  # oldest first, no strangers
    assert kernel <= set(covered)
    # the C sources are kernels: the commit that added the conv tap blocks is covered
    assert any(c.startswith("46a77ee") for c in covered)
    others = [c for c in since_first if c not in kernel]
    chosen = [c for c in covered if c not in kernel]
    assert len(others) // history.EVERY_OTHER <= len(chosen) <= len(others) // history.EVERY_OTHER + 2


def test_stored_results_are_complete_up_to_the_newest_and_readable():
    stored = history.stored_commits()
    covered = history.covered_commits()
    assert stored, "benchmarks/results holds the history (python scripts/asv_history.py record --all)"
    since_first = set(git("rev-list", f"{history.FIRST}^..HEAD"))
    assert set(stored) <= since_first | set(git("rev-list", "--all")), "results of unknown commits"
    newest = max(covered.index(c) for c in stored if c in covered)
    missing = [c[:8] for c in covered[:newest] if c not in stored]
    assert not missing, f"covered commits older than the newest stored one lack results: {missing}"

    loaded = history.load_history()
    assert [commit for commit, _, _ in loaded] == sorted(stored, key=lambda c: covered.index(c))
    for commit, _, values in loaded:
        for case in ("product", "conv2d", "dilation"):  # public since the first compiled kernels
            seconds = values[("time_call", case, "tropic")]
            ratio = values[("track_tropic_over_baseline", case, None)]
            assert 0 < seconds < 10 and 0 < ratio < math.inf, (commit[:8], case)
        has_torch_modules = subprocess.run(
            ["git", "cat-file", "-e", f"{commit}:tropic/torch/nn/__init__.py"], cwd=ROOT
        ).returncode == 0
        # a model step is skipped exactly where the commit has no tropic.torch.nn
        assert (("time_call", "mpm step", "tropic") in values) == has_torch_modules, commit[:8]


def test_the_history_plot_is_drawn_from_the_stored_results(tmp_path):
    pytest.importorskip("matplotlib")
    path = history.plot(tmp_path / "history.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_picks_the_newest_stored_ancestor_never_head():
    head, parent, grandparent, great = git("rev-list", "-4", "HEAD")
    assert history.newest_stored_ancestor({great: "a", grandparent: "b", "f" * 40: "c"}, head) == grandparent
    assert history.newest_stored_ancestor({head: "h", parent: "p", great: "g"}, head) == parent
    assert history.newest_stored_ancestor({"f" * 40: "c"}, head) is None


def test_the_configuration_builds_any_commit_with_torch_pinned(tmp_path):
    config = json.loads((ROOT / "asv.conf.json").read_text())
    assert config["environment_type"] == "virtualenv"
    assert config["matrix"]["req"]["torch"] == ["2.13.0"]  # never a newer torch with CUDA packages
    assert config["results_dir"] == "benchmarks/results"
    assert any("[test]" in command for command in config["install_command"])
    copy = json.loads(history.write_config(tmp_path, tmp_path / "results").read_text())
    assert copy["results_dir"] == str(tmp_path / "results")
    assert Path(copy["repo"]) == ROOT and Path(copy["benchmark_dir"]) == ROOT / "benchmarks"
    assert {k: v for k, v in copy.items() if "dir" not in k and k != "repo"} == {
        k: v for k, v in config.items() if "dir" not in k and k != "repo"
    }


@pytest.mark.parametrize("case", ["product", "conv2d", "dilation"])
def test_history_baselines_compute_what_tropic_computes(case):
    if case == "dilation":
        pytest.importorskip("scipy.ndimage")
    from benchmarks import bench_history

    tropic, baseline = (bench_history.make(case, i)() for i in bench_history.IMPLEMENTATIONS)
    np.testing.assert_array_equal(tropic, baseline)


@pytest.mark.parametrize("case", ["mpm step", "sparse-morph step"])
def test_history_model_steps_train_both_networks(case):
    pytest.importorskip("torch")
    from benchmarks import bench_history

    for implementation in bench_history.IMPLEMENTATIONS:
        step = bench_history.make(case, implementation)
        first = float(step().detach())
        for _ in range(5):
            last = float(step().detach())
        assert math.isfinite(first) and last < first, (implementation, first, last)


def test_median_seconds_is_a_per_call_time():
    from benchmarks import bench_history

    calls = []
    seconds = bench_history.median_seconds(lambda: calls.append(1), samples=3, sample_time=1e-4)
    assert seconds > 0 and len(calls) >= 4  # a warm-up call and three samples of at least one call


def test_the_machine_is_registered_once_under_its_stable_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".asv-machine.json").write_text(json.dumps({"version": 1, "other": {"machine": "other"}}))
    history.ensure_machine()
    machines = json.loads((tmp_path / ".asv-machine.json").read_text())
    entry = machines[history.MACHINE]
    assert machines["other"] == {"machine": "other"} and machines["version"] == 1
    assert entry["machine"] == history.MACHINE and entry["num_cpu"].isdigit() and entry["arch"]
    entry["cpu"] = "kept"
    (tmp_path / ".asv-machine.json").write_text(json.dumps(machines))
    history.ensure_machine()  # an existing entry is left as it is
    assert json.loads((tmp_path / ".asv-machine.json").read_text())[history.MACHINE]["cpu"] == "kept"
    stored = json.loads((ROOT / "benchmarks" / "results" / history.MACHINE / "machine.json").read_text())
    assert stored["machine"] == history.MACHINE and stored["cpu"]  # the stored history says what ran it
