"""pytest: optional backends whose library is not installed cannot be imported, so
``--doctest-modules`` skips their modules instead of failing the collection."""

import importlib

collect_ignore_glob = []
for _backend in ("cupy",):
    try:
        importlib.import_module(_backend)
    except ImportError:
        collect_ignore_glob.append(f"{_backend}/*")
