"""``tropic bench``: tropic's operators beside the baselines a user would otherwise pick."""

from __future__ import annotations

import argparse

HELP = "time tropic's operators against NumPy, SciPy and PyTorch baselines in one run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tropic.apps.bench import add_arguments as add

    add(parser)


def run(options: argparse.Namespace) -> int:
    from tropic.apps.bench import run as bench

    return bench(options)
