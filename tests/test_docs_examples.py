"""The code in docs/extending.md runs as written (the plugin example is real code)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medm3.experts import ExpertError
from tests.doubles import volume

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def doc_namespace(monkeypatch: pytest.MonkeyPatch):
    from medm3.experts import registry

    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setenv("MEDM3_NO_RESULT_CACHE", "1")
    namespace: dict = {}
    for block in python_blocks():
        exec(compile(block, str(DOC), "exec"), namespace)
    yield namespace
    registry.EXPERTS._loaded.pop("threshold", None)


def test_plugin_expert_from_the_docs(doc_namespace):
    from medm3.experts import get_expert

    assert len(python_blocks()) == 2
    ct = np.full((12, 10, 6), -50, np.int16)
    ct[2:5, 3:6, 1:3] = 700
    result = get_expert("threshold").run(volume(ct), "Bone")
    assert result.args == "bone" and int(result.label_map.array.sum()) == 18
    assert result.text.startswith("The results are <segmentation>.")
    with pytest.raises(ExpertError, match="no voxel above 150 HU"):
        get_expert("threshold").run(volume(np.zeros((4, 4, 4), np.int16)), "contrast")
    with pytest.raises(ExpertError, match="valid args are: 'bone', or 'contrast'"):
        get_expert("threshold").run(volume(ct), "lung")
