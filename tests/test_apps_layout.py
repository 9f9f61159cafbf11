"""The applications (``tropic.apps``) sit apart from the library: no library package imports them,
and their module paths from before the move still import and give the same objects."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tropic"
LIBRARY = ("core", "backends", "autodiff", "nn", "torch")
MOVED = {
    "tropic.cli": "tropic.apps.cli",
    "tropic.reproduce": "tropic.apps.reproduce",
    "tropic.bench": "tropic.apps.bench",
    "tropic.datasets": "tropic.apps.datasets",
    "tropic.plots": "tropic.apps.plots",
}


def _imported(path: Path) -> set[str]:
    """The modules ``path`` imports (relative imports resolved; ``from X import y`` gives X and X.y)."""
    package = path.relative_to(PACKAGE.parent).parent.parts  # of a module and of an __init__.py alike
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_package_imports_the_apps():
    apps = ("tropic.apps", *MOVED)
    found = {
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for package in LIBRARY
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for name in _imported(path)
        if any(name == a or name.startswith(a + ".") for a in apps)
    }
    assert not found


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_module_paths_give_the_same_objects(old, new):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    assert old_module.__all__
    for name in old_module.__all__:
        assert getattr(old_module, name) is getattr(new_module, name), name
    if hasattr(new_module, "__all__"):
        assert sorted(old_module.__all__) == sorted(new_module.__all__)
