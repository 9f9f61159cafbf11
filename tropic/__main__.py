"""``python -m tropic ...``: the same as the ``tropic`` command (see :mod:`tropic.apps.cli`)."""

from __future__ import annotations

import sys

from tropic.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
