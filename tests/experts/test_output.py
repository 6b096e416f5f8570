"""Saving expert results: overlays, label map (NIfTI/PNG) and result.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medm3.errors import InputError
from medm3.experts.base import ExpertResult
from medm3.experts.output import json_default, result_files, save_result
from medm3.imaging.image import MedicalImage
from medm3.imaging.io import load_image
from tests.doubles import FakeSegExpert, volume


def test_save_segmentation_result(tmp_path: Path) -> None:
    image = volume(shape=(8, 8, 4), spacing=(0.8, 0.8, 2.5))
    image.affine[:3, 3] = (-10.0, 5.0, 20.0)
    result = FakeSegExpert().run(image, "everything", use_cache=False)
    files = save_result(result, tmp_path / "out", source_image=image, montage=True)
    assert files == {
        "overlay:fakeseg_axial_0": str(tmp_path / "out" / "fakeseg_axial_0.png"),
        "montage": str(tmp_path / "out" / "fakeseg_montage.png"),
        "label_map": str(tmp_path / "out" / "fakeseg_labels.nii.gz"),
        "result": str(tmp_path / "out" / "result.json"),
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "fakeseg_axial_0.png",
        "fakeseg_labels.nii.gz",
        "fakeseg_montage.png",
        "result.json",
    ]
    labels = load_image(files["label_map"])
    assert result.label_map is not None
    np.testing.assert_array_equal(labels.array, result.label_map.array)
    np.testing.assert_allclose(labels.affine, image.affine, atol=1e-4)
    doc = json.loads(Path(files["result"]).read_text())
    assert doc["files"] == {
        "overlay:fakeseg_axial_0": "fakeseg_axial_0.png",
        "montage": "fakeseg_montage.png",
        "label_map": "fakeseg_labels.nii.gz",
        "result": "result.json",
    }
    assert doc["measurements"] == [{"label": 1, "value": 1.5}]  # numpy scalar -> float
    with Image.open(files["overlay:fakeseg_axial_0"]) as png:
        assert png.size == (6, 4)
    assert result_files(result, image, montage=True) == doc["files"]
    assert "montage" not in result_files(result, montage=True)  # no image to draw on
    assert "montage" not in result_files(result, image)  # only when asked for


def test_save_2d_label_map_and_no_label_map(tmp_path: Path) -> None:
    flat = MedicalImage(np.zeros((5, 6)), (1.0, 1.0), np.eye(4), "XR", "caller", "x.png")
    labels = np.zeros((5, 6), np.uint16)
    labels[1, 1] = 300
    result = ExpertResult("seg2d", "", "t", label_map=flat.with_array(labels))
    files = save_result(result, tmp_path)
    with Image.open(files["label_map"]) as png:
        assert np.asarray(png)[1, 1] == 300 and files["label_map"].endswith("seg2d_labels.png")
    text_only = ExpertResult("cxr", "", "The resulting predictions are:", probabilities={"a": 0.5})
    files = save_result(text_only, tmp_path / "cxr")
    assert list(files) == ["result"]


def test_label_map_must_match_source_grid(tmp_path: Path) -> None:
    result = FakeSegExpert().run(volume(shape=(8, 8, 4)), "bright", use_cache=False)
    with pytest.raises(InputError, match="does not match the input image grid"):
        save_result(result, tmp_path / "out", source_image=volume(shape=(8, 8, 5)))
    assert not (tmp_path / "out").exists()


def test_json_default() -> None:
    doc = {"a": np.float32(1.5), "b": np.arange(2), "c": Path("/x"), "d": {1}, "e": object}
    decoded = json.loads(json.dumps(doc, default=json_default))
    assert decoded["a"] == 1.5 and decoded["b"] == [0, 1] and decoded["c"] == "/x"
    assert decoded["d"] == [1] and isinstance(decoded["e"], str)
