"""``tropic reproduce hybrid | dmnn | bimonn``: small-scale reproductions of the papers' claims.

Writes ``results.md`` (a table per claim, mean ± std over seeds, the paper's numbers beside ours, a
verdict per claim decided by a rule stated in the file), ``results.json`` (raw per-seed numbers) and
PNG plots into ``--out`` (default ``reproductions/<paper>/``), and prints the tables and verdicts.

The output folder must be new or empty (``--overwrite`` replaces the results of an earlier run in
it); it is checked before training starts and created only when the results are written, so a run
that fails or is interrupted leaves nothing behind. A progress bar (training steps, with the time
left) is drawn on standard error when it is a terminal, with a line per trained model; ``--quiet``
keeps only the tables, verdicts and the line naming the results.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import CommandError
from .paths import check_input_folder, check_output_folder

HELP = "reproduce a paper's claims at small scale (hybrid | dmnn | bimonn): tables, verdicts, plots"

PAPERS = ("hybrid", "dmnn", "bimonn")
DATASETS = ("digits", "mnist", "fashion-mnist")
PRESETS = ("tropic", "reference")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paper", choices=PAPERS, help="which paper's claims to reproduce")
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, tiny widths and budgets (a test-sized run)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 2 with --quick)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="main training budget in epochs (each paper's module says what it scales)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder, new or empty (default reproductions/<paper>)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the results of an earlier run in --out"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or per-model lines: the tables and verdicts only",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the MNIST / Fashion-MNIST IDX files (default: digits)",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="tropic",
        help="initialisations: tropic's defaults, or the paper code's (reference; dmnn and bimonn)",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="data set (default digits; mnist when --data-dir is given)",
    )


def run(options: argparse.Namespace) -> int:
    from tropic.apps import progress
    from tropic.apps.reproduce import Settings, reproduce, steps

    seeds = options.seeds if options.seeds is not None else (2 if options.quick else 3)
    if seeds < 1:
        raise CommandError(f"--seeds must be at least 1, got {seeds}")
    if options.epochs is not None and options.epochs < 1:
        raise CommandError(f"--epochs must be at least 1, got {options.epochs}")
    dataset = options.dataset or ("mnist" if options.data_dir is not None else "digits")
    if dataset != "digits" and options.data_dir is None:
        raise CommandError(f"--dataset {dataset} is read from local files: give --data-dir")
    if options.data_dir is not None:
        check_input_folder("--data-dir", options.data_dir)
    if options.preset != "tropic" and options.paper == "hybrid":
        raise CommandError("--preset reference: the hybrid paper's layers already start as its code's")
    if dataset == "digits":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise CommandError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError("the plots need matplotlib: pip install matplotlib") from None
    out = options.out if options.out is not None else Path("reproductions") / options.paper
    check_output_folder(
        "--out",
        out,
        hint="it holds an earlier run's results? choose another --out, or add --overwrite",
        replace=options.overwrite,
    )
    quiet = options.quiet
    settings = Settings(
        quick=options.quick,
        seeds=seeds,
        epochs=options.epochs,
        out=out,
        dataset=dataset,
        data_dir=options.data_dir,
        preset=options.preset,
        log=(lambda line: None) if quiet else (lambda line: progress.write(line, sys.stderr)),
    )
    settings.command = "tropic reproduce " + " ".join(shlex.quote(a) for a in _argv(options))
    if dataset != "digits":
        from tropic.apps.reproduce._common import load_files

        try:
            load_files(settings)  # the run reuses what this reads
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
    total = steps(options.paper, settings)
    with progress.bar(total, f"reproduce {options.paper}", quiet=quiet, unit="step") as bar:
        settings.progress = bar.update
        report = reproduce(options.paper, settings)
    print(report.text())
    print(f"results written to {out}/results.md, {out}/results.json and the PNGs there")
    return 0


def _argv(options: argparse.Namespace) -> list[str]:
    args = [options.paper]
    if options.quick:
        args.append("--quick")
    if options.preset != "tropic":
        args += ["--preset", options.preset]
    for flag, value in (("--seeds", options.seeds), ("--epochs", options.epochs), ("--out", options.out),
                        ("--data-dir", options.data_dir), ("--dataset", options.dataset)):  # fmt: skip
        if value is not None:
            args += [flag, str(value)]
    return args
