"""The measure expert on the real CT and on synthetic masks of known geometry."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medm3 import prompts
from medm3.experts.base import ExpertError, ExpertResult, RunContext
from medm3.experts.measure import CONNECTIVITY, MeasureExpert, measure_structures
from medm3.experts.measure_geometry import feret_diameter, max_axial_diameter
from medm3.imaging.image import MedicalImage
from medm3.imaging.io import load_image
from medm3.imaging.labels import load_label_map
from tests.doubles import volume, xray


@functools.cache
def _load_ct(
    image_path: Path, labels_path: Path, names_path: Path
) -> tuple[MedicalImage, MedicalImage, dict[int, str]]:
    return load_image(image_path), load_image(labels_path), load_label_map(names_path)


@pytest.fixture
def ct(
    ct_path: Path, ct_labels_path: Path, ct_label_names_path: Path
) -> tuple[MedicalImage, MedicalImage, dict[int, str]]:
    """The real CT, its TotalSegmentator labels and names (loaded once per session)."""
    return _load_ct(ct_path, ct_labels_path, ct_label_names_path)


def run_on(
    image: MedicalImage,
    mask: np.ndarray | MedicalImage,
    args: str = "",
    label_names: dict[int, str] | None = None,
) -> ExpertResult:
    mask_image = mask if isinstance(mask, MedicalImage) else image.with_array(mask)
    options = {"label_names": label_names} if label_names else {}
    context = RunContext(options=options)
    return MeasureExpert().run({"image": image, "mask": mask_image}, args, context=context)


def ball(shape: tuple[int, int, int], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    dist = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return dist <= radius**2


# ---------------------------------------------------------------- real CT
def test_liver_volume_on_real_ct(ct: tuple[MedicalImage, MedicalImage, dict[int, str]]) -> None:
    image, labels, names = ct
    result = run_on(image, labels, "Liver", label_names=names)
    (row,) = result.measurements
    assert (row["label"], row["name"], row["voxels"]) == (5, "liver", 38634)
    assert row["volume_ml"] == pytest.approx(38634 * 27 / 1000, abs=1e-9)
    assert row["volume_ml"] == pytest.approx(1043.118, abs=1e-9)
    assert row["components"] == 1 and row["largest_component_ml"] == row["volume_ml"]
    assert row["intensity_unit"] == "HU" and 0 < row["mean_intensity"] < 100
    assert row["std_intensity"] > 0
    # The bounding box of the liver fits in the volume and the diameter in its diagonal.
    extents = (row["extent_rl_mm"], row["extent_ap_mm"], row["extent_si_mm"])
    assert all(0 < e <= n * 3.0 for e, n in zip(extents, image.spatial_shape, strict=True))
    assert 0 < row["max_axial_diameter_mm"] <= math.hypot(extents[0], extents[1]) + 3
    assert result.text.splitlines()[0] == prompts.MEASUREMENT_HEADER
    assert result.text.splitlines()[1].startswith("liver: volume 1043.1 mL, max axial diameter")
    assert result.info["label_source"] == "mask" and result.info["connectivity"] == CONNECTIVITY
    assert result.info["voxel_volume_mm3"] == 27.0
    (overlay,) = result.overlays
    assert overlay.plane == "axial" and overlay.slice_index == row["max_axial_diameter_slice"]
    assert "liver" in overlay.caption and overlay.image.width > 0
    assert result.label_map is None and result.label_names == {5: "liver"}


def test_all_structures_on_real_ct(ct: tuple[MedicalImage, MedicalImage, dict[int, str]]) -> None:
    image, labels, names = ct
    result = run_on(image, labels, "all", label_names=names)
    present = sorted(int(i) for i in np.unique(labels.array) if i > 0)
    assert [r["label"] for r in result.measurements] == present
    assert sum(r["voxels"] for r in result.measurements) == int((labels.array > 0).sum())
    assert len(result.text.splitlines()) == len(present) + 1
    assert result.args == "all"


def test_group_and_absent_names(ct: tuple[MedicalImage, MedicalImage, dict[int, str]]) -> None:
    image, labels, names = ct
    result = run_on(image, labels, "kidney right, liver", label_names=names)
    assert [r["name"] for r in result.measurements] == ["kidney_right", "liver"]
    result = run_on(image, labels, "kidney", label_names=names)  # every name containing it
    found = {r["name"]: r["voxels"] for r in result.measurements}
    assert found["kidney_left"] > 0 and found["kidney_right"] > 0
    assert found["kidney_cyst_left"] == 0  # known name, no voxels
    assert "kidney cyst left: not present" in result.text
    with pytest.raises(ExpertError, match="Did you mean 'liver'"):
        run_on(image, labels, "livr", label_names=names)


# ------------------------------------------------------------- synthetic
def test_two_spheres_are_two_components() -> None:
    shape = (40, 40, 40)
    mask = (ball(shape, (10, 10, 10), 5) | ball(shape, (28, 28, 28), 6)).astype(np.uint8)
    image = volume(np.zeros(shape, np.int16), spacing=(1.0, 1.0, 1.0))
    (row,) = run_on(image, mask).measurements
    assert row["components"] == 2
    assert row["voxels"] == int(mask.sum())
    assert row["largest_component_ml"] == pytest.approx(
        int(ball(shape, (28, 28, 28), 6).sum()) / 1000
    )
    assert (
        "2 component(s) (largest"
        in MeasureExpert().run({"image": image, "mask": image.with_array(mask)}, "").text
    )


def test_diagonal_neighbours_are_one_component() -> None:
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # touching at a corner only
    (row,) = run_on(volume(np.zeros((5, 5, 5), np.int16)), mask).measurements
    assert CONNECTIVITY == 26 and row["components"] == 1


@pytest.mark.parametrize(("radius_mm", "centre"), [(12.3, (40.0, 40.0)), (7.9, (39.4, 41.2))])
def test_disk_diameter_within_a_pixel(radius_mm: float, centre: tuple[float, float]) -> None:
    pixel = 0.8
    shape = (80, 80, 3)
    rows, cols = np.indices(shape[:2]) * pixel
    disk = (rows - centre[0] * pixel) ** 2 + (cols - centre[1] * pixel) ** 2 <= radius_mm**2
    mask = np.zeros(shape, np.uint8)
    mask[:, :, 1] = disk
    image = volume(np.zeros(shape, np.int16), spacing=(pixel, pixel, 2.5))
    (row,) = run_on(image, mask).measurements
    assert abs(row["max_axial_diameter_mm"] - 2 * radius_mm) <= pixel
    assert row["max_axial_diameter_slice"] == 1
    assert row["extent_si_mm"] == 2.5


def test_ellipsoid_extents() -> None:
    spacing = (0.5, 1.0, 2.0)
    shape = (80, 50, 30)
    semi_mm = (15.0, 10.0, 20.0)  # along R-L, A-P, S-I
    grid = np.indices(shape, dtype=np.float64)
    centre = (40, 25, 15)
    inside = (
        sum(
            ((g - c) * s / a) ** 2
            for g, c, s, a in zip(grid, centre, spacing, semi_mm, strict=True)
        )
        <= 1
    )
    image = volume(np.zeros(shape, np.int16), spacing=spacing)
    (row,) = run_on(image, inside.astype(np.uint8)).measurements
    for key, semi, step in zip(
        ("extent_rl_mm", "extent_ap_mm", "extent_si_mm"), semi_mm, spacing, strict=True
    ):
        assert abs(row[key] - 2 * semi) <= step + 1e-9, key
    assert abs(row["max_axial_diameter_mm"] - 2 * semi_mm[0]) <= spacing[0] * 2
    expected_ml = 4 / 3 * math.pi * np.prod(semi_mm) / 1000
    assert row["volume_ml"] == pytest.approx(expected_ml, rel=0.03)


def test_intensity_stats_and_units() -> None:
    array = np.full((6, 6, 6), 100, np.int16)
    mask = np.zeros((6, 6, 6), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    array[1, 1, 1] = 300
    values = array[mask.astype(bool)].astype(float)
    (row,) = run_on(volume(array), mask).measurements
    assert row["mean_intensity"] == pytest.approx(values.mean())
    assert row["std_intensity"] == pytest.approx(values.std())
    (mr_row,) = run_on(volume(array, modality="MR"), mask).measurements
    assert mr_row["intensity_unit"] == ""


def test_single_pixel_and_feret_helpers() -> None:
    mask = np.zeros((3, 3, 1), bool)
    mask[1, 1, 0] = True
    assert max_axial_diameter(mask, (0.8, 0.5)) == (pytest.approx(0.8), 0)
    assert max_axial_diameter(np.zeros((2, 2, 2), bool), (1.0, 1.0)) == (0.0, None)
    line = np.stack([np.arange(100.0), np.zeros(100)], axis=1)  # collinear: no hull
    assert feret_diameter(line) == pytest.approx(99.0)
    assert feret_diameter(np.zeros((1, 2))) == 0.0


# -------------------------------------------------------------- chaining
def test_measure_chains_on_previous_segmentation() -> None:
    image = volume(shape=(10, 10, 6))
    labels = np.zeros((10, 10, 6), np.uint8)
    labels[2:5, 2:5, 1:3] = 3
    segmentation = ExpertResult(
        expert="vista3d",
        args="spleen",
        text="...",
        label_map=image.with_array(labels),
        label_names={3: "spleen"},
    )
    later = ExpertResult(expert="cxr", args="", text="no label map here")
    context = RunContext(previous=[segmentation, later])
    result = MeasureExpert().run(image, "spleen", context=context)
    (row,) = result.measurements
    assert row["name"] == "spleen" and row["voxels"] == 18
    assert row["volume_ml"] == pytest.approx(18 * 2.0 / 1000)
    assert result.info["label_source"] == "previous:vista3d"
    assert result.text.startswith(prompts.MEASUREMENT_HEADER + "\nspleen: volume 0.036 mL")


def test_no_label_map_is_an_expert_error() -> None:
    with pytest.raises(ExpertError, match="run a segmentation expert first or pass a mask"):
        MeasureExpert().run(volume(), "", context=RunContext(previous=[]))


def test_mismatched_masks() -> None:
    image = volume(shape=(8, 8, 4))
    with pytest.raises(ExpertError, match="mask grid does not match"):
        MeasureExpert().run({"image": image, "mask": volume(shape=(8, 8, 5))}, "")
    shifted = volume(np.zeros((8, 8, 4), np.uint8))
    shifted.affine[2, 3] = 10.0
    with pytest.raises(ExpertError, match="mask grid does not match"):
        MeasureExpert().run({"image": image, "mask": shifted}, "")
    previous = ExpertResult("vista3d", "", "", label_map=volume(shape=(4, 4, 4)))
    with pytest.raises(ExpertError, match="cannot measure the vista3d result"):
        MeasureExpert().run(image, "", context=RunContext(previous=[previous]))


def test_inputs_and_modality() -> None:
    with pytest.raises(ExpertError, match="MEASURE works on CT/MR images"):
        MeasureExpert().run(xray(), "")
    flat = MedicalImage(np.zeros((4, 4)), (1.0, 1.0), np.eye(4), "CT", "caller", "slice.png")
    with pytest.raises(ExpertError, match="needs a 3D volume"):
        MeasureExpert().run(flat, "")
    with pytest.raises(ExpertError, match="needs the input"):
        MeasureExpert().run({"mask": volume()}, "")
    # A label map read from disk has an inferred modality: the mask is exempt.
    mask = volume(np.ones((8, 8, 4), np.uint8), modality="OT")
    assert (
        MeasureExpert().run({"image": volume(), "mask": mask}, "").measurements[0]["voxels"] == 256
    )


def test_parse_args_and_card(tmp_path: Path) -> None:
    expert = MeasureExpert()
    assert expert.parse_args("") == expert.parse_args("Everything") == "all"
    assert expert.parse_args(" Liver ,  hepatic   Tumor; liver") == "liver, hepatic tumor"
    assert MeasureExpert.model_card().startswith(
        "<MEASURE(args)> Modality: CT or MRI, Task: measurement, Overview: "
    )
    assert MeasureExpert.model_card().endswith("Valid args are: 'all'")
    assert MeasureExpert.weights_name is None and MeasureExpert().weights_id() == "none"


def test_measure_structures_missing_label() -> None:
    image = volume()
    rows = measure_structures(image, np.zeros(image.spatial_shape, np.uint8), [(4, "x")])
    assert rows[0]["voxels"] == 0 and rows[0]["max_axial_diameter_mm"] is None
    assert prompts.measurement_text(rows) == prompts.MEASUREMENT_HEADER + "\nx: not present"
    assert prompts.measurement_text([]) == prompts.MEASUREMENT_HEADER + "\nno structures to measure"


# ------------------------------------------------------------ properties
@settings(max_examples=30, deadline=None)
@given(
    mask=hnp.arrays(np.bool_, st.tuples(*(st.integers(1, 7),) * 3)),
    spacing=st.tuples(*(st.sampled_from([0.5, 0.8, 1.0, 3.0]),) * 3),
)
def test_measurement_invariants(mask: np.ndarray, spacing: tuple[float, float, float]) -> None:
    image = volume(np.zeros(mask.shape, np.int16), spacing=spacing)
    rows = measure_structures(image, mask.astype(np.uint8), [(1, "x")])
    (row,) = rows
    count = int(mask.sum())
    assert row["voxels"] == count
    assert row["volume_ml"] == pytest.approx(count * np.prod(spacing) / 1000)
    if count:
        assert 1 <= row["components"] <= count
        assert row["largest_component_ml"] <= row["volume_ml"] + 1e-12
        diameter = row["max_axial_diameter_mm"]
        assert min(spacing[:2]) - 1e-9 <= diameter
        assert diameter <= math.hypot(row["extent_rl_mm"], row["extent_ap_mm"]) + 1e-9
    else:
        assert row["components"] == 0 and row["max_axial_diameter_mm"] is None


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(65, 200), st.just(2)), elements=st.floats(-50, 50))
)
def test_feret_hull_matches_brute_force(points: np.ndarray) -> None:
    diff = points[:, None, :] - points[None, :, :]
    assert feret_diameter(points) == pytest.approx(float(np.sqrt((diff**2).sum(-1)).max()))
