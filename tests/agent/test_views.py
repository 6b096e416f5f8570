"""The views the VLM is shown: recorded as trace steps, saved only when asked (ViewLog)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medm3.agent.views import ViewLog
from medm3.imaging.image import MedicalImage
from medm3.imaging.render import render_slice


def _picture(index: int):
    data = np.arange(8 * 8 * 6, dtype=np.float32).reshape(8, 8, 6)
    image = MedicalImage(
        array=data,
        spacing=(1.0, 1.0, 2.0),
        affine=np.eye(4),
        modality="CT",
        modality_source="caller",
        source="test",
    )
    return render_slice(image, plane="axial", index=index, window="auto", legend=False)


def test_steps_name_the_slice_and_the_file_and_are_taken_once(tmp_path: Path) -> None:
    log = ViewLog()
    log.record("image", ("axial", 2), _picture(2), folder=tmp_path, question=1)
    (step,) = log.take_steps()
    assert (step["image"], step["plane"], step["slice"]) == ("image", "axial", 2)
    assert step["files"] == [str(tmp_path / "q1_view_image_axial_2.png")]
    assert log.take_steps() == [] and log.shown == {"image": ("axial", 2)}
    assert list(tmp_path.iterdir()) == []  # nothing written before save()
    log.save()
    assert [p.name for p in tmp_path.iterdir()] == ["q1_view_image_axial_2.png"]
    log.save()  # saved once: nothing left to write
    assert len(list(tmp_path.iterdir())) == 1


def test_without_a_folder_nothing_is_saved(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = ViewLog()
    log.record("t1ce", ("axial", 3), _picture(3), folder=None, question=2)
    assert log.take_steps()[0]["files"] == []
    log.save()
    assert list(tmp_path.iterdir()) == []
