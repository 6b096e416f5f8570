"""Render annotations (letters, scale bar, text), PNG metadata and honest window names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medm3.imaging.annotate import ORIENTATION, scale_bar_mm
from medm3.imaging.image import MedicalImage
from medm3.imaging.render import png_info, render_slice
from medm3.imaging.slicing import PLANE_AXIS, slice_to_voxel
from medm3.imaging.windowing import resolve_window

#: RAS+ axis -> letter of its positive direction.
POSITIVE = {0: "R", 1: "A", 2: "S"}
NEGATIVE = {0: "L", 1: "P", 2: "I"}


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_letters_agree_with_the_slicing_convention(plane: str) -> None:
    """Moving right / down on screen must go toward the 'right' / 'bottom' letter."""
    shape = (7, 8, 9)
    v0 = slice_to_voxel(plane, 0, 2, 2, shape)
    right = slice_to_voxel(plane, 0, 2, 3, shape)
    down = slice_to_voxel(plane, 0, 3, 2, shape)

    def letter(a, b) -> str:
        axis = next(i for i in range(3) if a[i] != b[i])
        return POSITIVE[axis] if b[axis] > a[axis] else NEGATIVE[axis]

    top, bottom, left, right_letter = ORIENTATION[plane]
    assert letter(v0, right) == right_letter and letter(right, v0) == left
    assert letter(v0, down) == bottom and letter(down, v0) == top
    assert PLANE_AXIS[plane] not in [i for i in range(3) if v0[i] != right[i]]


@pytest.mark.parametrize(
    ("width", "mm_per_px", "expected"),
    [(512, 0.5, 50.0), (512, 0.7, 50.0), (400, 3.0, 200.0), (100, 0.01, 0.2)],
)
def test_scale_bar_lengths_are_round(width, mm_per_px, expected) -> None:
    assert scale_bar_mm(width, mm_per_px) == pytest.approx(expected)


def _ct(spacing=(1.0, 1.0, 1.0), **metadata) -> MedicalImage:
    array = np.full((200, 160, 10), -1000, np.int16)
    affine = np.diag([*spacing, 1.0])
    return MedicalImage(array, spacing, affine, "CT", "caller", "ct.nii.gz", metadata=metadata)


def test_annotations_are_drawn_only_when_asked() -> None:
    plain = render_slice(_ct(), scale=2)
    marked = render_slice(_ct(), scale=2, annotate=True)
    assert plain.size == marked.size
    a, b = np.asarray(plain.convert("L")), np.asarray(marked.convert("L"))
    assert not a.any()  # air at W400 L40 is black
    h, w = b.shape
    assert b[h // 2 - 15 : h // 2 + 15, :30].max() > 200  # "R" at the left middle
    assert b[h // 2 - 15 : h // 2 + 15, -30:].max() > 200  # "L" at the right middle
    assert b[:30, w // 2 - 15 : w // 2 + 15].max() > 200  # "A" on top
    # Scale bar: 1 mm pixels at zoom 2 -> 0.5 mm/px; 320 px wide -> a fifth is 32 mm,
    # rounded down to 20 mm = 40 px.
    info = marked.info["medm3"]
    assert info["annotated"] and info["pixel_spacing_mm"] == [0.5, 0.5]
    bar_rows = [r for r in range(h - 40, h) if (b[r, :] > 200).sum() >= 40]
    assert bar_rows, "no scale bar row found"
    run = (b[bar_rows[len(bar_rows) // 2], :] > 200).sum()
    assert 40 <= run <= 60  # 20 mm bar (plus a few text pixels at most)


def longest_white_run(row: np.ndarray) -> int:
    """Longest run of consecutive bright pixels in a row (a bar is one, glyphs are short)."""
    best = run = 0
    for value in row > 200:
        run = run + 1 if value else 0
        best = max(best, run)
    return best


def test_no_scale_bar_when_spacing_is_assumed() -> None:
    marked = render_slice(_ct(spacing_assumed=True), scale=2, annotate=True)
    b = np.asarray(marked.convert("L"))
    assert max(longest_white_run(b[r]) for r in range(b.shape[0] - 40, b.shape[0])) < 30
    record = marked.info["medm3"]["annotations"]
    assert record["scale_bar_mm"] is None
    assert record["notes"] == ["spacing unknown (assumed 1 mm)"]


def test_png_metadata_round_trip(tmp_path: Path) -> None:
    labels = np.zeros((200, 160, 10), np.uint8)
    labels[50:80, 50:80, 5] = 5
    image = _ct()
    picture = render_slice(image, index=5, mask=labels, label_names={5: "liver"}, annotate=True)
    path = tmp_path / "out.png"
    picture.save(path, pnginfo=png_info(picture, source="ct.nii.gz"))
    with Image.open(path) as png:
        text = png.text
    assert text["medm3:source"] == "ct.nii.gz"
    assert (text["medm3:plane"], text["medm3:index"], text["medm3:num_slices"]) == (
        "axial",
        "5",
        "10",
    )
    assert text["medm3:window"] == resolve_window(image, "auto").describe()
    assert text["medm3:labels"] == "5=liver"
    assert text["medm3:software"].startswith("medm3 ")


def test_window_text_does_not_claim_a_stored_window() -> None:
    png = MedicalImage(np.full((4, 4), 9, np.uint8), (1.0, 1.0), np.eye(4), "OT", "caller", "a.png")
    assert resolve_window(png, "auto").describe() == "full 8-bit range (W255 L128)"
    raw = png.with_array(np.arange(16, dtype=np.int16).reshape(4, 4))
    assert resolve_window(raw, "auto").describe().startswith("data range (W15")
    tagged = MedicalImage(
        np.zeros((4, 4), np.uint16),
        (1.0, 1.0),
        np.eye(4),
        "XR",
        "tag",
        "x.dcm",
        metadata={"window": (1000, 2000)},
    )
    assert resolve_window(tagged, "auto").describe() == "stored (W1000 L2000)"
