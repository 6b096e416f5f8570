"""Overlays: colours, mask validation, contours, blending, legend, label-map JSON."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.labels import label_name, load_label_map, parse_label_map
from medm3.imaging.overlay import (
    blend_labels,
    check_mask,
    color_name,
    draw_legend,
    label_color,
    label_color_name,
    label_contours,
    legend_entries,
)


def volume(shape: tuple[int, ...], spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> MedicalImage:
    return MedicalImage(
        np.zeros(shape, np.int16),
        spacing,
        np.diag([*spacing, 1.0]),
        "CT",
        "caller",
        "ct.nii.gz",
    )


# --- colours -----------------------------------------------------------------


def test_label_colors_are_pinned_and_named() -> None:
    assert label_color(1) == (230, 25, 75)
    assert label_color(5) == (245, 130, 48)
    assert label_color_name(1) == "red"
    assert label_color_name(2) == "green"
    assert label_color_name(5) == "orange"
    assert label_color(256) == label_color(1)


def test_label_colors_distinct_for_totalsegmentator_ids() -> None:
    colours = [label_color(i) for i in range(1, 118)]
    assert colours == [label_color(i) for i in range(1, 118)]  # deterministic
    assert len(set(colours)) == 117

    def min_distance(cs: list[tuple[int, int, int]]) -> float:
        return min(
            float(np.linalg.norm(np.subtract(a, b, dtype=float)))
            for a, b in itertools.combinations(cs, 2)
        )

    assert min_distance(colours[:20]) > 50
    assert min_distance(colours) > 20
    # No near-grey colours: they would vanish on grey-scale scans.
    assert all(max(c) - min(c) >= 40 for c in colours)


def test_background_has_no_colour() -> None:
    with pytest.raises(ValueError):
        label_color(0)


def test_color_name_nearest() -> None:
    assert color_name((250, 0, 60)) == "red"
    assert color_name((0, 0, 140)) == "navy"
    assert all(isinstance(label_color_name(i), str) for i in range(1, 200))


# --- mask validation ----------------------------------------------------------


def test_mask_shape_mismatch_reports_both_grids() -> None:
    mask = volume((4, 4, 4), (2.0, 2.0, 2.0))
    mask.source = "mask.nii.gz"
    with pytest.raises(InputError) as info:
        check_mask(volume((4, 5, 6)), mask)
    text = str(info.value)
    assert text.startswith("mask.nii.gz: mask grid does not match image")
    assert "(4, 4, 4)" in text and "(4, 5, 6)" in text and "(2, 2, 2)" in text


def test_mask_affine_mismatch_is_an_error() -> None:
    mask = volume((4, 4, 4))
    mask.affine = mask.affine.copy()
    mask.affine[0, 3] = 5.0
    with pytest.raises(InputError, match="mask grid does not match image"):
        check_mask(volume((4, 4, 4)), mask)
    mask.affine[0, 3] = 0.001  # within tolerance
    assert check_mask(volume((4, 4, 4)), mask).shape == (4, 4, 4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.full((2, 2, 2), 1.5), "non-integer"),
        (np.full((2, 2, 2), -1), "negative"),
        (np.full((2, 2, 2), np.nan), "NaN"),
    ],
)
def test_bad_mask_values(values: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_mask(volume((2, 2, 2)), values)


def test_multichannel_mask_is_rejected() -> None:
    with pytest.raises(InputError, match="single-channel"):
        check_mask(volume((2, 2, 2)), np.zeros((2, 2, 2, 3), np.uint8))


def test_integral_float_and_bool_masks_become_unsigned_ints() -> None:
    labels = check_mask(volume((2, 2, 2)), np.full((2, 2, 2), 5.0, np.float32))
    assert labels.dtype == np.uint8 and labels.max() == 5
    assert check_mask(volume((2, 2, 2)), np.ones((2, 2, 2), bool)).dtype == np.uint8
    assert check_mask(volume((2, 2, 2)), np.full((2, 2, 2), 300)).dtype == np.uint16


# --- contours and blending ----------------------------------------------------


def square_labels() -> np.ndarray:
    labels = np.zeros((11, 11), np.uint8)
    labels[2:9, 2:9] = 4  # 7x7 square
    return labels


def test_contours_are_boundary_rings_of_given_width() -> None:
    labels = square_labels()
    ring = label_contours(labels, 1)
    assert ring.sum() == 7 * 7 - 5 * 5
    assert not ring[3:8, 3:8].any()
    thick = label_contours(labels, 2)
    assert thick.sum() == 7 * 7 - 3 * 3
    assert not (label_contours(labels, 1) & (labels == 0)).any()


def test_contours_separate_touching_labels() -> None:
    labels = np.zeros((6, 6), np.uint8)
    labels[:, :3], labels[:, 3:] = 1, 2
    ring = label_contours(labels, 1)
    assert ring[2, 2] and ring[2, 3]  # the shared border
    assert not ring[2, 1]


def test_contours_only_leave_interior_unchanged() -> None:
    base = np.full((11, 11), 90, np.uint8)
    labels = square_labels()
    out = blend_labels(base, labels, contours=True)
    assert out.shape == (11, 11, 3)
    assert (out[3:8, 3:8] == 90).all()  # interior untouched
    assert (out[labels == 0] == 90).all()  # background untouched
    assert tuple(out[2, 2]) == label_color(4)  # contours are opaque
    filled = blend_labels(base, labels, alpha=0.5)
    expected = np.floor(0.5 * 90 + 0.5 * np.array(label_color(4)) + 0.5)
    assert filled[5, 5].tolist() == expected.tolist()
    assert (filled[labels == 0] == 90).all()


# --- legend -------------------------------------------------------------------


def test_legend_entries_use_names_and_defaults() -> None:
    entries = legend_entries([0, 5, 2, 5], {5: "liver"})
    assert [(e.label_id, e.name) for e in entries] == [(2, "label 2"), (5, "liver")]
    assert entries[1].color == label_color(5)
    assert entries[1].as_dict()["color_name"] == "orange"


def test_draw_legend_widens_image_and_draws_swatches() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    entries = legend_entries([1, 5], {1: "spleen", 5: "liver"})
    out = draw_legend(image, entries)
    assert out.height == 100 and out.width > 200
    panel = np.asarray(out)[:, 200:]
    assert (panel == label_color(1)).all(axis=-1).any()
    assert (panel == label_color(5)).all(axis=-1).any()
    assert (panel == 255).all(axis=-1).any()  # white text
    assert draw_legend(image, []).size == (200, 100)


def test_long_legend_uses_columns_and_may_grow_taller() -> None:
    image = Image.new("RGB", (300, 60))
    out = draw_legend(image, legend_entries(range(1, 118)))
    assert out.width > 300 and out.height > 60


# --- label-map JSON -----------------------------------------------------------


def write(tmp_path: Path, data: object, raw: str | None = None) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(raw if raw is not None else json.dumps(data))
    return path


def test_load_label_map_id_to_name(tmp_path: Path) -> None:
    names = load_label_map(write(tmp_path, {"5": "liver", "1": "spleen"}))
    assert names == {1: "spleen", 5: "liver"}
    assert list(names) == [1, 5]


def test_load_label_map_name_to_id(tmp_path: Path) -> None:
    assert load_label_map(write(tmp_path, {"liver": 1, "spleen": 3})) == {1: "liver", 3: "spleen"}


@pytest.mark.parametrize(
    ("data", "raw", "message"),
    [
        (None, "{not json", "not valid JSON"),
        ([1, 2], None, "non-empty JSON object"),
        ({}, None, "non-empty JSON object"),
        ({"1": "a", "b": 2}, None, "mixes value types"),
        ({"x": "liver"}, None, "not a non-negative integer"),
        ({"liver": -1}, None, "not a non-negative integer"),
        ({"liver": 1, "hepar": 1}, None, "two names"),
        ({"1": "  "}, None, "empty name"),
        ({"liver": True}, None, "mixes value types"),
    ],
)
def test_load_label_map_rejects(
    tmp_path: Path, data: object, raw: str | None, message: str
) -> None:
    path = write(tmp_path, data, raw)
    with pytest.raises(InputError, match=message) as info:
        load_label_map(path)
    assert str(info.value).startswith(str(path))


def test_load_label_map_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="label map not found"):
        load_label_map(tmp_path / "nope.json")


def test_label_name_default() -> None:
    assert label_name(None, 7) == "label 7"
    assert label_name({7: "aorta"}, 7) == "aorta"
    assert parse_label_map({"0": "background", "2": "kidney"})[0] == "background"


def test_real_label_maps(ct_label_names_path: Path, shared_data: Path) -> None:
    totalseg = load_label_map(ct_label_names_path)
    assert len(totalseg) == 117 and totalseg[5] == "liver"
    vista = load_label_map(shared_data / "reference" / "vista3d_labels.json")
    assert len(vista) == 132 and vista[1] == "liver"
