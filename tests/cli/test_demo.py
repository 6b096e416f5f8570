"""`m3 demo`: the whole expert-calling loop offline on the bundled CT (random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medm3.demo import DEMO_ANSWER, DEMO_TRIGGER
from tests.cli.helpers import run


def test_demo_runs_the_real_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel as nib

    cache, out = tmp_path / "cache", tmp_path / "out"
    code, stdout, err = run(["demo", "--cache", str(cache), "-o", str(out), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert "RANDOM WEIGHTS" in doc["note"]
    steps = [s["step"] for s in doc["trace"]]
    assert steps == ["question", "view", "generate", "expert", "generate", "answer"]
    view, first, expert, second = doc["trace"][1:5]
    assert (view["plane"], view["slice"]) == ("axial", 15)  # the middle of 30 slices
    assert Path(view["files"][0]).is_file() and view["window"].startswith("soft_tissue")
    assert first["output"] == DEMO_TRIGGER
    assert first["input"][0]["images"] == 1  # the VLM saw the CT view
    assert "VISTA3D" in first["input"][0]["text"]  # ... and the model card
    assert (expert["expert"], expert["args"]) == ("vista3d", "liver")
    assert second["input"][-1]["images"] == 1  # the overlay went back to the VLM
    assert doc["answer"] == DEMO_ANSWER
    # The expert's files: an overlay PNG and a label map on the CT's grid.
    (overlay,) = doc["overlays"]
    assert Path(overlay).is_file() and Image.open(overlay).size[0] > 100
    label_map = next(f for f in doc["files"] if f.endswith(".nii.gz"))
    labels = nib.load(label_map)
    assert labels.shape == (122, 101, 30)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1}  # liver = VISTA3D id 1

    # Second run, text mode: models reused, the banner and the trace are printed.
    stamp = cache / "vila-m3-tiny-random" / ".medm3-demo.json"
    before = stamp.stat().st_mtime_ns
    code, stdout, err = run(["demo", "--cache", str(cache), "-o", str(out)], capsys)
    assert code == 0, err
    assert stamp.stat().st_mtime_ns == before
    assert "RANDOM WEIGHTS - MEANINGLESS ANSWERS" in err
    assert f"model> {DEMO_TRIGGER}" in stdout
    assert "[expert <VISTA3D(liver)> ran on the full CT" in stdout
    assert "overlay: " in stdout and str(out) in stdout
