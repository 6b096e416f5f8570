"""Annotations of 2D renders: letters from DICOM or "orientation unknown", honest scale bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from medm3.imaging import load_image
from medm3.imaging.annotate import direction_letters, letters_2d, opposite
from medm3.imaging.render import render_slice

from .conftest import base_dataset, set_pixels, synthetic_volume, write_series
from .test_annotate import longest_white_run

DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def xray(tmp_path: Path, name: str = "x.dcm", **tags) -> Path:
    """A 200 x 160 DX image (black) with the given tags."""
    ds = base_dataset(modality="DX", series_uid=generate_uid(), description="chest", sop_class=DX)
    set_pixels(ds, np.zeros((200, 160), np.uint16), 1.0, 0.0)
    for key, value in tags.items():
        setattr(ds, key, value)
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def marks(path: Path, **kwargs):
    picture = render_slice(load_image(path), annotate=True, **kwargs)
    return picture, picture.info["medm3"]["annotations"]


def bar_length_px(picture: Image.Image) -> int:
    grey = np.asarray(picture.convert("L"))
    return max(longest_white_run(grey[r]) for r in range(grey.shape[0] - 40, grey.shape[0]))


def test_patient_orientation_gives_the_letters(tmp_path: Path) -> None:
    # PA chest: rows run to the patient's left, columns to the feet.
    path = xray(tmp_path, PatientOrientation=["L", "F"], PixelSpacing=[0.5, 0.5])
    picture, record = marks(path)
    assert record["letters"] == ["H", "F", "R", "L"]  # top, bottom, left, right
    assert record["notes"] == []
    # 160 columns x 0.5 mm = 80 mm across; a fifth is 16 mm, rounded down to 10 mm.
    assert record["scale_bar_mm"] == 10 and record["scale_bar_note"] is None
    mm_per_px = picture.info["medm3"]["pixel_spacing_mm"][1]
    assert abs(bar_length_px(picture) - 10 / mm_per_px) <= 3
    grey = np.asarray(picture.convert("L"))
    h, w = grey.shape
    assert grey[h // 2 - 15 : h // 2 + 15, :30].max() > 200  # "R" at the left middle
    assert grey[:30, w // 2 - 15 : w // 2 + 15].max() > 200  # "H" on top


def test_lateral_and_oblique_patient_orientation(tmp_path: Path) -> None:
    path = xray(tmp_path, PatientOrientation=["P", "F"], PixelSpacing=[0.5, 0.5])
    assert marks(path)[1]["letters"] == ["H", "F", "A", "P"]
    path = xray(tmp_path, "o.dcm", PatientOrientation=["LP", "FL"], PixelSpacing=[0.5, 0.5])
    assert marks(path)[1]["letters"] == ["HR", "FL", "RA", "LP"]


def test_letters_from_image_orientation_of_a_single_slice(tmp_path: Path) -> None:
    info = write_series(tmp_path / "s", synthetic_volume((6, 5, 1)), np.diag([1.0, 1, 2, 1]))
    image = load_image(info.files[0])  # one axial CT slice: a 2D image
    assert not image.is_volume and "patient_orientation" not in image.metadata
    picture = render_slice(image, annotate=True)
    # Rows run to the patient's left (+x LPS), columns to the back (+y LPS).
    assert picture.info["medm3"]["annotations"]["letters"] == ["A", "P", "R", "L"]


def test_imager_pixel_spacing_bar_says_at_detector(tmp_path: Path) -> None:
    path = xray(tmp_path, PatientOrientation=["L", "F"], ImagerPixelSpacing=[0.5, 0.5])
    picture, record = marks(path)
    assert record["scale_bar_mm"] == 10 and record["scale_bar_note"] == "at detector"
    assert bar_length_px(picture) >= 30


def test_dicom_without_orientation_or_spacing(tmp_path: Path) -> None:
    path = xray(tmp_path)
    image = load_image(path)
    assert image.metadata["spacing_assumed"] and image.summary()["spacing_known"] is False
    picture, record = marks(path)
    assert record["letters"] is None and record["scale_bar_mm"] is None
    assert record["notes"] == ["orientation unknown", "spacing unknown (assumed 1 mm)"]
    assert bar_length_px(picture) < 30
    grey = np.asarray(picture.convert("L"))
    h, w = grey.shape
    assert grey[h // 2 - 15 : h // 2 + 15, :30].max() < 200  # no left letter
    assert grey[h - 60 :, w // 2 :].max() > 200  # the notes, bottom right


def test_png_is_orientation_and_spacing_unknown(cxr_png_path: Path) -> None:
    _, record = marks(cxr_png_path)
    assert record["letters"] is None and record["scale_bar_mm"] is None
    assert record["notes"] == ["orientation unknown", "spacing unknown (assumed 1 mm)"]


def test_shared_cxr_has_spacing_but_no_orientation(cxr_mono1_path: Path) -> None:
    """The shared CR has PixelSpacing 0.168 mm and an empty PatientOrientation."""
    _, record = marks(cxr_mono1_path)
    assert record["letters"] is None and record["notes"] == ["orientation unknown"]
    assert record["scale_bar_mm"] == 20  # 1024 x 0.168 = 172 mm across; a fifth -> 20 mm


@pytest.mark.parametrize(
    ("cosines", "letters"),
    [((1, 0, 0), "L"), ((-1, 0, 0), "R"), ((0, 1, 0), "P"), ((0, 0, -1), "F"),
     ((0.8, 0, 0.6), "LH"), ((0, -0.6, -0.8), "FA"), ((0.1, 0, 0.995), "H")],
)  # fmt: skip
def test_direction_letters(cosines, letters: str) -> None:
    assert direction_letters(cosines) == letters
    assert direction_letters([-c for c in cosines]) == opposite(letters)


def test_letters_2d_refuses_what_it_cannot_read() -> None:
    assert letters_2d({}) is None
    assert letters_2d({"patient_orientation": ["L", "X"]}) is None
    assert letters_2d({"image_orientation": [0, 0, 0, 0, 0, 0]}) is None


def test_filled_slice_is_marked_on_the_render(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    info = write_series(tmp_path / "g", synthetic_volume((6, 5, 6)), affine)
    gone = [f for f in info.files if float(pydicom.dcmread(f).ImagePositionPatient[2]) == 5.0]
    gone[0].unlink()  # RAS z index 2
    image = load_image(info.folder, allow_gaps="fill")
    assert render_slice(image, index=2, annotate=True).info["medm3"]["annotations"]["notes"] == [
        "FILLED slice (copy of 1)"
    ]
    assert render_slice(image, index=3, annotate=True).info["medm3"]["annotations"]["notes"] == []
    coronal = render_slice(image, plane="coronal", annotate=True)
    assert coronal.info["medm3"]["annotations"]["notes"] == ["1 filled slice(s) cross this view"]


def test_corner_text_moves_off_the_centred_letters(tmp_path: Path) -> None:
    """On a narrow image the long window text goes one line down instead of over the 'H'."""
    path = xray(tmp_path, PatientOrientation=["L", "F"], PixelSpacing=[0.5, 0.5])
    picture = render_slice(load_image(path), annotate=True, window="1000,500", scale=1.0)
    grey = np.asarray(picture.convert("L"))
    h, w = grey.shape
    size = int(np.clip(round(min(w, h) / 28), 10, 28))
    first_line = grey[: max(3, size // 2) + size] > 200
    columns = np.flatnonzero(first_line.any(axis=0))
    assert columns.size and columns.min() > w / 2 - size and columns.max() < w / 2 + size
    assert (grey[size : 3 * size, w // 2 + size :] > 200).any()  # the window text, line two
