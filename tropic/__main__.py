"""Command line: ``python -m tropic info`` (what runs where) and ``python -m tropic bench``."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tropic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="backends and the operators each one serves")
    sub.add_parser("bench", help="time tropic against the baselines (options: python -m tropic.bench -h)")
    options, rest = parser.parse_known_args(argv)
    if options.command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if options.command == "info":
        from tropic.backends import info

        print(json.dumps(info(), indent=2))
        return 0
    from tropic.bench import main as bench_main

    return bench_main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
