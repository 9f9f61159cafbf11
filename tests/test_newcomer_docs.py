"""The documentation stands on its own inside the repository (issue 18, item 13): no links to files a
user of the repository does not have, and the README says how long the tests take and how to run a
quick subset of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_no_references_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/" not in text, path
    assert not re.search(r"\bpapers/[\w-]+\.md", text), path


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_local_links_point_at_files_of_the_repository(path):
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if not re.match(r"[a-z]+:", target):  # not a URL
            assert (path.parent / target).exists(), (path.name, target)


def test_the_apps_cite_no_files_outside_the_repository():
    for path in sorted((ROOT / "tropic" / "apps").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and not re.search(r"\bpapers/[\w-]+\.md", text), path


def test_readme_states_the_suite_duration_and_a_quick_subset():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"whole suite takes about \d+ to \d+ minutes", readme)
    quick = re.search(r"```bash\n(python -m pytest -q (tests/\S+\.py ?)+)\n```", readme)
    assert quick, "no quick subset command"
    for name in quick.group(1).split()[4:]:
        assert (ROOT / name).is_file(), name
