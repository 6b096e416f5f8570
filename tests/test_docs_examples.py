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
    from medm3.eval import TASKS
    from medm3.eval.tasks import KINDS

    TASKS._loaded.pop("modality-id", None)
    TASKS._targets.pop("modality-id", None)
    KINDS.pop("modality-id", None)


def test_plugin_expert_from_the_docs(doc_namespace):
    from medm3.experts import get_expert

    assert len(python_blocks()) == 3
    ct = np.full((12, 10, 6), -50, np.int16)
    ct[2:5, 3:6, 1:3] = 700
    result = get_expert("threshold").run(volume(ct), "Bone")
    assert result.args == "bone" and int(result.label_map.array.sum()) == 18
    assert result.text.startswith("The results are <segmentation>.")
    with pytest.raises(ExpertError, match="no voxel above 150 HU"):
        get_expert("threshold").run(volume(np.zeros((4, 4, 4), np.int16)), "contrast")
    with pytest.raises(ExpertError, match="valid args are: 'bone', or 'contrast'"):
        get_expert("threshold").run(volume(ct), "lung")


def test_plugin_eval_task_from_the_docs(doc_namespace, tmp_path: Path) -> None:
    """The doc's task kind runs through the real runner, from outside the package."""
    import json

    from PIL import Image

    from medm3.eval import get_task, run_eval
    from medm3.vlm.mock import MockBackend

    rows = []
    for i, (modality, shade) in enumerate([("CT", 40), ("MRI", 120), ("X-ray", 200)]):
        Image.new("RGB", (16, 16), (shade, shade, shade)).save(tmp_path / f"{i}.png")
        rows.append({"id": f"q{i}", "image": f"{i}.png", "modality": modality})
    data = tmp_path / "modality.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vlm = MockBackend(script=["CT.", "ct", "MRI"])
    run = run_eval("modality-id", vlm, data, tmp_path / "run", batch_size=2)
    assert run.primary_metric == "accuracy" and run.n_samples == 3
    assert run.metrics["accuracy"] == pytest.approx(100 / 3)  # only q0 is right
    asked = vlm.calls[0][0]
    assert asked.plain_text == "Which imaging modality is this? Answer with one of: ct, mri, x-ray."
    assert vlm.requests[0].config.max_new_tokens == 8
    assert get_task("modality-id").supports_experts is False
