"""tropic's performance history with asv: which commits it covers, recording, CI comparison, plots.

The history is asv's own result files for the headline benchmarks (``benchmarks/bench_history.py``),
kept in git under ``benchmarks/results/<MACHINE>/``: every commit built in its own virtualenv
(``asv.conf.json``: Python 3.11, torch 2.13.0, numpy 2.4.6, the project's wheel with its test extra)
and measured on this machine kind (2-core AMD EPYC VM) under the stable machine name ``MACHINE``.

    python scripts/asv_history.py commits          # the commits the history covers, oldest first
    python scripts/asv_history.py record [REV ...] # measure REVs (default HEAD) into benchmarks/results
    python scripts/asv_history.py record --all     # every covered commit that has no result yet
    python scripts/asv_history.py compare          # CI: HEAD against the newest stored ancestor
    python scripts/asv_history.py plot             # docs/figures/history.png from the stored results

Covered commits (``commits``): every commit since the first compiled kernels (``FIRST``) that touched
a kernel (C and CUDA sources and headers, ``setup.py``, the NumPy backend that calls the compiled
code), one in ten of the others, and HEAD. ``compare`` never fails on a timing: it prints asv's table
(timings are not pass/fail on shared machines); it fails only if the benchmarks cannot be built or run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "epyc-2core-vm"
FIRST = "e0a803d"  # "Compiled CPU kernels: ...", the first commit with compiled kernels
KERNEL_PATHS = ("*.c", "*.h", "*.cu", "*.cuh", "csrc", "setup.py", "tropic/backends/numpy")
EVERY_OTHER = 10  # one in this many of the commits that touched no kernel
BENCHMARKS = "^bench_history"
RESULTS = ROOT / "benchmarks" / "results"
FIGURE = ROOT / "docs" / "figures" / "history.png"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def covered_commits() -> list[str]:
    """Full hashes of the commits the history covers, oldest first (see the module docstring)."""
    every = git("rev-list", "--reverse", f"{FIRST}^..HEAD").split()
    kernel = set(git("rev-list", f"{FIRST}^..HEAD", "--", *KERNEL_PATHS).split())
    others = [c for c in every if c not in kernel]
    chosen = kernel | set(others[::EVERY_OTHER]) | {every[-1]}
    return [c for c in every if c in chosen]


def stored_commits(results: Path = RESULTS, machine: str = MACHINE) -> dict[str, str]:
    """``{full commit hash: result file name}`` of the virtualenv results stored for ``machine``."""
    stored = {}
    for path in sorted((results / machine).glob("*-virtualenv-*.json")):
        stored[json.loads(path.read_text())["commit_hash"]] = path.name
    return stored


def asv(*args: str, config: Path | None = None) -> int:
    """Run asv in the repository (``config``: another configuration file), streaming its output."""
    command = ["asv", *args] + ([] if config is None else ["--config", str(config)])
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def ensure_machine() -> None:
    """Register ``MACHINE`` in ``~/.asv-machine.json`` (asv's per-user machine file) with this host's
    description, so that the results land under the stable name whoever records them. Written
    directly: ``asv machine --yes`` keeps only the values that it could not detect itself."""
    path = Path.home() / ".asv-machine.json"
    machines = json.loads(path.read_text()) if path.exists() else {"version": 1}
    if MACHINE in machines:
        return
    cpuinfo = _cpuinfo()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    ram = ""
    if Path("/proc/meminfo").exists():
        ram = Path("/proc/meminfo").read_text().split()[1]  # kB, as asv writes it
    machines[MACHINE] = {
        "machine": MACHINE, "arch": platform.machine(), "cpu": f"{cpu} ({isa})" if isa else cpu,
        "num_cpu": str(os.cpu_count() or ""), "os": f"{platform.system()} {platform.release()}", "ram": ram,
    }
    path.write_text(json.dumps(machines, indent=4))


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.exists() else []


def record(revisions: list[str], all_covered: bool) -> int:
    """Build and measure the commits (each in its own virtualenv) into ``benchmarks/results``."""
    ensure_machine()
    if all_covered:
        done = stored_commits()
        hashes = [c for c in reversed(covered_commits()) if c not in done]  # newest first: asv
        # discovers the benchmarks with the first hash, and only recent commits have the whole suite
    else:
        hashes = [git("rev-parse", revision).strip() for revision in revisions or ["HEAD"]]
    if not hashes:
        print("every covered commit has a stored result")
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(hashes) + "\n")
    print(f"recording {len(hashes)} commit(s) on {MACHINE}", flush=True)
    try:
        return asv(
            "run", f"HASHFILE:{handle.name}", "--machine", MACHINE, "--bench", BENCHMARKS,
            "--no-interleave-rounds", "--show-stderr",
        )
    finally:
        os.unlink(handle.name)


def newest_stored_ancestor(stored: dict[str, str], head: str) -> str | None:
    """The newest commit with a stored result that is HEAD or one of its ancestors, HEAD excluded."""
    candidates = [c for c in git("rev-list", "HEAD").split() if c != head]
    return next((c for c in candidates if c in stored), None)


def write_config(directory: Path, results: Path) -> Path:
    """A copy of ``asv.conf.json`` in ``directory`` that keeps its results in ``results`` (and its
    HTML in ``directory``); the other paths point into this checkout. Returns its path."""
    config = json.loads((ROOT / "asv.conf.json").read_text())
    config.update(
        repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(results),
        env_dir=str(ROOT / ".asv" / "env"), html_dir=str(directory / "html"),
    )
    path = directory / "asv.conf.json"
    path.write_text(json.dumps(config, indent=4))
    return path


def compare() -> int:
    """Measure HEAD like the history does and print ``asv compare`` against the newest stored result.

    Works on copies (a temporary results directory and configuration), so the checkout's results
    stay as committed. Exit status 0 unless asv cannot build or run the benchmarks.
    """
    head = git("rev-parse", "HEAD").strip()
    baseline = newest_stored_ancestor(stored_commits(), head)
    ensure_machine()
    with tempfile.TemporaryDirectory(prefix="tropic-asv-") as tmp:
        results = Path(tmp) / "results"
        shutil.copytree(RESULTS, results)
        for name in stored_commits(results).values():  # HEAD's own stored result, if any, is replaced
            if name.startswith(head[:8]):
                (results / MACHINE / name).unlink()
        config_path = write_config(Path(tmp), results)
        status = asv(
            "run", "HEAD^!", "--machine", MACHINE, "--bench", BENCHMARKS,
            "--show-stderr", config=config_path,
        )
        if status != 0:
            return status
        if baseline is None:
            print("no stored result of an ancestor of HEAD to compare with (see benchmarks/results)")
            return 0
        print(f"\nHEAD {head[:8]} against the newest stored result, {baseline[:8]} "
              "(ratios above 1: HEAD is slower; shared machines are noisy, so this is never a failure)")
        asv("compare", "--machine", MACHINE, "--split", baseline, head, config=config_path)
    return 0


def load_history(results: Path = RESULTS, machine: str = MACHINE):
    """``[(commit, date, {(benchmark, case, implementation): value})]`` of the stored results, oldest
    first; ``implementation`` is None for the ratios. Values that a commit could not measure (a case
    whose operator it lacks) are absent."""
    from asv.results import Results

    history = []
    for name in stored_commits(results, machine).values():
        result = Results.load(str(results / machine / name))
        values = {}
        for key in result.get_all_result_keys():
            if not key.startswith("bench_history."):
                continue
            params = result.get_result_params(key)
            combinations = [tuple(item.strip("'") for item in c) for c in itertools.product(*params)]
            for combination, value in zip(combinations, result.get_result_value(key, params), strict=True):
                if value is not None and value == value:
                    implementation = combination[1] if len(combination) > 1 else None
                    values[(key.rsplit(".", 1)[-1], combination[0], implementation)] = value
        history.append((result.commit_hash, result.date, values))
    return sorted(history, key=lambda item: item[1])


def plot(path: Path = FIGURE, results: Path = RESULTS) -> Path:
    """Two panels over the covered commits: tropic's time per call of each headline case (log scale)
    and the tropic / baseline ratio measured in the same process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = load_history(results)
    if not history:
        raise SystemExit(f"no stored results for {MACHINE} under {results}")
    cases = sorted({key[1] for _, _, values in history for key in values}, key=_case_order)
    figure, (times, ratios) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    positions = range(len(history))
    for case in cases:
        seconds = [values.get(("time_call", case, "tropic")) for _, _, values in history]
        ratio = [values.get(("track_tropic_over_baseline", case, None)) for _, _, values in history]
        times.plot(positions, [s * 1e3 if s else float("nan") for s in seconds], marker=".", label=case)
        ratios.plot(positions, [r if r else float("nan") for r in ratio], marker=".", label=case)
    title = f"Headline benchmarks over tropic's history ({MACHINE}; asv results in benchmarks/results)"
    figure.suptitle(title)
    times.set(yscale="log", ylabel="tropic, ms per call (log)")
    ratios.set(yscale="log", ylabel="tropic time / baseline time (log; below 1: tropic faster)")
    ratios.axhline(1.0, color="grey", linewidth=0.8)
    step = max(1, len(history) // 16)
    ratios.set_xticks(list(positions)[::step], [commit[:7] for commit, _, _ in history][::step], rotation=60)
    ratios.set_xlabel("commit (oldest left); models' baseline: the same network with Linear + ReLU")
    for axes in (times, ratios):
        axes.grid(True, which="major", alpha=0.3)
    times.legend(fontsize=8, ncols=len(cases), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


def _case_order(case: str) -> int:
    order = ("product", "conv2d", "dilation", "mpm step", "sparse-morph step")
    return order.index(case) if case in order else len(order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("commits", help="print the covered commits, oldest first")
    recording = commands.add_parser("record", help="measure commits into benchmarks/results")
    recording.add_argument("revisions", nargs="*", help="git revisions (default HEAD)")
    recording.add_argument("--all", action="store_true", help="every covered commit not stored yet")
    commands.add_parser("compare", help="measure HEAD and compare with the newest stored result")
    plotting = commands.add_parser("plot", help="write the history plot")
    plotting.add_argument("--output", type=Path, default=FIGURE)
    args = parser.parse_args(argv)
    if args.command == "commits":
        stored = stored_commits()
        for commit in covered_commits():
            subject = git("log", "-1", "--format=%s", commit).strip()[:80]
            print(commit[:8], "stored" if commit in stored else "-", subject)
        return 0
    if args.command == "record":
        return record(args.revisions, args.all)
    if args.command == "compare":
        return compare()
    print(plot(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
