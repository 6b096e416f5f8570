"""measure: names in any word order, boundary warnings, per-component diameters, overlays."""

from __future__ import annotations

import numpy as np
import pytest

from medm3.experts.base import ExpertError, RunContext
from medm3.experts.measure import MeasureExpert, select_structures
from medm3.experts.measure_geometry import touched_faces
from tests.doubles import volume

NAMES = {1: "kidney_right", 2: "kidney_left", 3: "kidney_cyst_left", 5: "liver"}


def _run(image, mask, args="", names=NAMES, context=None):
    context = context or RunContext()
    context.options = {"label_names": names}
    inputs = {"image": image, "mask": image.with_array(mask)}
    return MeasureExpert().run(inputs, args, context=context)


def _labels() -> np.ndarray:
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[2:6, 2:6, 3:6] = 1
    labels[12:16, 2:6, 3:6] = 2
    labels[12:14, 8:10, 4:5] = 3
    labels[8:12, 10:16, 2:8] = 5
    return labels


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("right kidney", [1]),
        ("Kidney_Right", [1]),
        ("LEFT  kidney", [2]),
        ("kidney", [1, 2, 3]),
        ("left", [2, 3]),
        ("liver, right kidney", [5, 1]),
    ],
)
def test_names_match_ignoring_order_case_and_underscores(query, ids) -> None:
    labels = _labels()
    args = MeasureExpert().parse_args(query)
    assert [i for i, _ in select_structures(args, labels, NAMES)] == ids


def test_unknown_name_still_lists_what_is_there() -> None:
    with pytest.raises(ExpertError, match=r"no structure named 'spleen'.*kidney right"):
        select_structures("spleen", _labels(), NAMES)


def test_boundary_faces_and_warning() -> None:
    labels = _labels()
    labels[0:3, 15:18, 0:2] = 5  # a piece of liver at the left, inferior edge
    image = volume(np.zeros(labels.shape, np.int16), spacing=(1.0, 1.0, 1.0))
    result = _run(image, labels, "liver, right kidney")
    rows = {r["name"]: r for r in result.measurements}
    assert rows["liver"]["touches_boundary"] == ["L", "I"]
    assert rows["kidney_right"]["touches_boundary"] == []
    assert "Warning: liver (L/I) touch the edge of the scan" in result.text
    assert "lower bounds" in result.text and "kidney_right (" not in result.text
    assert touched_faces((slice(0, 20), slice(3, 4), slice(9, 10)), (20, 5, 10)) == [
        "L",
        "R",
        "S",
    ]


def test_diameter_is_per_component_not_across_pieces() -> None:
    """Two 4x4 squares 10 px apart in one slice: the diameter is one square's, per skimage."""
    from skimage.measure import regionprops

    labels = np.zeros((30, 12, 3), np.uint8)
    labels[2:6, 2:6, 1] = 7
    labels[16:20, 2:6, 1] = 7
    labels[16:21, 6:9, 1] = 7  # the second piece is larger
    image = volume(np.zeros(labels.shape, np.int16), spacing=(1.0, 1.0, 1.0))
    (row,) = _run(image, labels, "all", names={7: "lesion"}).measurements
    assert row["components"] == 2
    pieces = row["component_list"]
    assert [p["voxels"] for p in pieces] == [31, 16]
    reference = [
        r.feret_diameter_max
        for r in regionprops(
            np.where(labels[:, :, 1] > 0, 1 + (np.arange(30)[:, None] > 10), 0).astype(int)
        )
    ]
    assert sorted(p["max_axial_diameter_mm"] for p in pieces) == pytest.approx(sorted(reference))
    assert row["max_axial_diameter_mm"] == pytest.approx(max(reference))
    assert row["max_axial_diameter_mm"] < 14  # not the 18+ mm spanning both pieces


def test_one_overlay_per_structure_with_legend_and_ids() -> None:
    labels = _labels()
    image = volume(np.zeros(labels.shape, np.int16), spacing=(1.0, 1.0, 1.0))
    result = _run(image, labels, "kidney right, kidney left")
    assert [o.name for o in result.overlays] == [
        "measure_axial_3_kidney_right",
        "measure_axial_3_kidney_left",
    ]
    for overlay, label in zip(result.overlays, (1, 2), strict=True):
        legend = overlay.image.info["medm3"]["legend"]
        assert [(e["id"], e["name"]) for e in legend] == [(label, f"{label}: {NAMES[label]}")]
        assert overlay.slice_index == 3  # the first slice of largest diameter, not an edge
    fixed = _run(image, labels, "kidney", context=RunContext(slice_index=4))
    assert len(fixed.overlays) == 1 and fixed.overlays[0].slice_index == 4
