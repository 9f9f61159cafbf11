"""pytest: without torch installed, ``--doctest-modules`` skips this package instead of failing."""

import importlib

collect_ignore_glob = []
try:
    importlib.import_module("torch")
except ImportError:
    collect_ignore_glob.append("*")
