"""The ``tropic`` command (also ``python -m tropic``): one module per subcommand.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(options) -> int``. Mistakes a user can make (bad arguments, missing or malformed data files,
output paths that cannot be written) raise :class:`CommandError`, before any long work starts;
:func:`main` prints them as one ``tropic: error: ...`` line and exits with status 2, never with a
traceback. ``tropic --version`` prints the version; ``tropic`` alone prints the usage and the list of
commands. Warnings of tropic itself (an environment variable it cannot read, say) are printed as one
``tropic: warning: ...`` line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

# name -> module; imported only when that subcommand runs, so `tropic info` stays fast
SUBCOMMANDS = {
    "info": "tropic.apps.cli.info",
    "bench": "tropic.apps.cli.bench",
    "train": "tropic.apps.cli.train",
    "reproduce": "tropic.apps.cli.reproduce",
}

_EPILOG = "Run 'tropic COMMAND --help' for the options of a command."


class CommandError(Exception):
    """A user-facing error of a subcommand: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: the same one-line format
        subcommand = self.prog.partition(" ")[2]
        raise CommandError(f"{subcommand}: {message}" if subcommand else message)


def build_parser() -> argparse.ArgumentParser:
    import tropic

    parser = _Parser(
        prog="tropic",
        description="Morphological (tropical) networks: train, reproduce, bench.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"tropic {tropic.__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, title="commands", metavar="COMMAND"
    )
    for name, module_name in SUBCOMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tropic <subcommand> ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            parser = build_parser()
            if not argv:  # `tropic` alone: what it can do, not an error about a missing argument
                parser.print_help()
                return 0
            options = parser.parse_args(argv)
            _check_environment()
            return _load(SUBCOMMANDS[options.command]).run(options) or 0
        except CommandError as exc:
            print(f"tropic: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("tropic: interrupted", file=sys.stderr)
            return 130
        except SystemExit as exc:  # --help, --version: argparse exits after printing
            return exc.code if isinstance(exc.code, int) else 0


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # a subcommand not written yet
            return None
        raise


# -- environment variables and warnings ----------------------------------------------------------

#: Values of TROPIC_MAX_ISA that the compiled kernels understand (read by the C code, which ignores
#: anything else).
MAX_ISA_VALUES = ("avx2",)


def environment_problems() -> list[str]:
    """What tropic ignores in the environment, one sentence each (``tropic info`` lists them too).

    ``TROPIC_MAX_ISA`` is read by the compiled kernels, which know only ``avx2`` (cap the choice at
    AVX2) and silently ignore any other value; ``TROPIC_NUM_THREADS`` must be a thread count (tropic
    itself warns when it is not, see :func:`tropic.get_num_threads`).
    """
    problems = []
    value = os.environ.get("TROPIC_MAX_ISA", "")
    if value and value not in MAX_ISA_VALUES:
        problems.append(
            f"TROPIC_MAX_ISA={value!r} is not a known cap (the only one is 'avx2'); ignored: the "
            f"compiled kernels use the best instructions this CPU has"
        )
    return problems


def _check_environment() -> None:
    """Warn, once per command, about environment variables tropic cannot read."""
    from tropic.core.config import get_num_threads

    for problem in environment_problems():
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
    get_num_threads()  # warns about an unreadable TROPIC_NUM_THREADS now, not in the middle of a run


_TROPIC_FOLDER = Path(__file__).resolve().parents[2]
_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """tropic's own warnings as one ``tropic: warning: ...`` line; other libraries' as Python prints them."""
    try:
        ours = Path(filename).resolve().is_relative_to(_TROPIC_FOLDER)
    except (OSError, ValueError):
        ours = False
    if ours:
        print(f"tropic: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)
