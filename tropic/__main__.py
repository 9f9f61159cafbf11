"""Command line: ``python -m tropic info`` (what runs where) and ``python -m tropic bench``."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tropic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="backends and the operators each one serves")
    bench = sub.add_parser("bench", help="time tropic against the baselines, in one process")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed on to tropic.bench")
    options = parser.parse_args(argv)
    if options.command == "info":
        from tropic.backends import info

        print(json.dumps(info(), indent=2))
        return 0
    from tropic.bench import main as bench_main

    return bench_main(options.args) or 0


if __name__ == "__main__":
    sys.exit(main())
