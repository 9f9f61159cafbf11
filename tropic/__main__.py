"""``python -m tropic ...``: the same as the ``tropic`` command (see :mod:`tropic.cli`)."""

from __future__ import annotations

import sys

from tropic.cli import main

if __name__ == "__main__":
    sys.exit(main())
