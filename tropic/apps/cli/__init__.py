"""The ``tropic`` command (also ``python -m tropic``): one module per subcommand.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(options) -> int``. Mistakes a user can make (bad arguments, missing or malformed data files)
raise :class:`CommandError`; :func:`main` prints them as one ``tropic: error: ...`` line and exits
with status 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module; imported only when that subcommand runs, so `tropic info` stays fast
SUBCOMMANDS = {
    "info": "tropic.apps.cli.info",
    "bench": "tropic.apps.cli.bench",
    "train": "tropic.apps.cli.train",
    "reproduce": "tropic.apps.cli.reproduce",
}


class CommandError(Exception):
    """A user-facing error of a subcommand: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: the same one-line format
        subcommand = self.prog.partition(" ")[2]
        raise CommandError(f"{subcommand}: {message}" if subcommand else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tropic", description="Morphological (tropical) networks: train, reproduce, bench.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module_name in SUBCOMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tropic <subcommand> ...``; returns the exit status."""
    try:
        options = build_parser().parse_args(argv)
        return _load(SUBCOMMANDS[options.command]).run(options) or 0
    except CommandError as exc:
        print(f"tropic: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tropic: interrupted", file=sys.stderr)
        return 130


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # a subcommand not written yet
            return None
        raise
