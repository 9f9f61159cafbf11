"""docs/pytorch.md: every ``python`` block runs as it stands.

The blocks run in order, each as a script in a fresh process (the export recipe's second block
loads what the first saved, as a user's second process would), all in one scratch folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

PAGE = Path(__file__).resolve().parents[1] / "docs" / "pytorch.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.M | re.S)


def test_the_page_has_its_recipes():
    text = PAGE.read_text()
    for topic in (
        "DistributedDataParallel",
        "fully_shard",
        "torch.compile",
        "torch.export.save",
        "aoti_load_package",
        "vmap",
        "DataLoader",
        "autocast",
        "prune.",
        "state_dict",
        "AveragedModel",
        "gradgradcheck",
    ):
        assert topic in text, topic
    assert len(BLOCKS) >= 9


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("pytorch_recipes")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_recipe_runs(scratch, index):
    script = scratch / f"recipe_{index}.py"
    script.write_text(BLOCKS[index])
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=scratch, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"recipe {index}:\n{BLOCKS[index]}\n{result.stderr[-4000:]}"
