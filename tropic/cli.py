"""Moved to :mod:`tropic.apps.cli`; this old path re-exports its public names (a ``tropic`` script
installed before the move runs ``tropic.cli:main``)."""

from tropic.apps.cli import SUBCOMMANDS, CommandError, build_parser, main

__all__ = ["SUBCOMMANDS", "CommandError", "build_parser", "main"]
