"""DICOM series: sorting, orientation, RAS conversion, validation and selection."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medm3.errors import InputError
from medm3.imaging import load_image, save_nifti

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # never download


def assert_same_image(image, info) -> None:
    np.testing.assert_array_equal(image.array, info.volume)
    np.testing.assert_allclose(image.affine, info.affine, atol=1e-4)


# (axis codes the slices are written in, original orientation reported after
# sorting the slices along the normal = row direction x column direction)
@pytest.mark.parametrize(
    ("codes", "original"),
    [
        ("LPS", "LPS"),  # standard axial, slices written feet -> head
        ("LPI", "LPS"),  # axial written head -> feet
        ("RAS", "RAS"),  # flipped ImageOrientationPatient
        ("PIL", "PIR"),  # sagittal
        ("LIP", "LIP"),  # coronal
        ("ASR", "ASR"),  # axes permuted
    ],
)
def test_series_any_orientation_reads_back_as_ras(make_series, codes: str, original: str) -> None:
    info = make_series(codes=codes)
    image = load_image(info.folder)
    assert_same_image(image, info)
    assert image.orientation == "RAS"
    assert image.metadata["original_orientation"] == original
    assert image.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert image.modality == "CT" and image.modality_source == "dicom"
    assert image.array.dtype == np.int16
    assert image.metadata["series_uid"] == info.uid
    assert image.metadata["format"] == "dicom-series"


def all_axis_codes() -> list[str]:
    """All 48 voxel axis orientations (permutations x flips)."""
    pairs = [("L", "R"), ("P", "A"), ("I", "S")]
    return [
        "".join(pairs[axis][flip] for axis, flip in zip(perm, flips, strict=True))
        for perm in itertools.permutations(range(3))
        for flips in itertools.product((0, 1), repeat=3)
    ]


def test_every_orientation_round_trips(tmp_path: Path, ras_volume, dicom_builders) -> None:
    codes = all_axis_codes()
    assert len(set(codes)) == 48
    for code in codes:
        info = dicom_builders.write_series(tmp_path / code, *ras_volume, code)
        assert_same_image(load_image(info.folder), info)


def test_file_names_sort_against_slice_order(make_series) -> None:
    info = make_series()
    by_name = sorted(info.files)
    positions = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in by_name]
    assert positions == sorted(positions, reverse=True)  # name order is wrong on purpose
    assert_same_image(load_image(info.folder), info)


def test_oblique_series_matches_closest_canonical(
    tmp_path: Path, ras_volume, dicom_builders
) -> None:
    volume, affine = ras_volume
    angle = np.deg2rad(12)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    oblique = affine.copy()
    oblique[:3, :3] = rot @ affine[:3, :3]
    info = dicom_builders.write_series(tmp_path / "obl", volume, oblique, "LPS")
    image = load_image(info.folder)
    assert_same_image(image, info)


def test_list_of_files_is_a_series(make_series) -> None:
    info = make_series()
    image = load_image([str(f) for f in reversed(info.files)])
    assert_same_image(image, info)
    assert image.metadata["container"] == "files"


def test_list_with_non_dicom_file_is_an_error(make_series, tmp_path: Path) -> None:
    info = make_series()
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt.*not a DICOM file"):
        load_image([*info.files, other])


def test_float_rescale_gives_float32(make_series) -> None:
    info = make_series(slope=0.5, intercept=-1024.0)
    image = load_image(info.folder)
    assert image.array.dtype == np.float32
    np.testing.assert_allclose(image.array, info.volume, atol=0.5)


def test_missing_slice_names_the_position(make_series) -> None:
    info = make_series()
    middle = sorted(info.files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))[1]
    z = float(pydicom.dcmread(middle).ImagePositionPatient[2])
    middle.unlink()
    with pytest.raises(InputError, match=rf"missing slice.*{z:.2f} mm") as err:
        load_image(info.folder)
    assert str(info.folder) in str(err.value)


def test_uneven_spacing_is_an_error(make_series) -> None:
    info = make_series()
    f = info.files[0]
    ds = pydicom.dcmread(f)
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.7
    ds.save_as(f)
    with pytest.raises(InputError, match=r"non-uniform slice spacing|missing slice"):
        load_image(info.folder)


def test_duplicate_position_is_an_error(make_series) -> None:
    info = make_series()
    ds = pydicom.dcmread(info.files[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(info.folder / "copy.dcm")
    with pytest.raises(InputError, match="duplicate slice position"):
        load_image(info.folder)


def test_inconsistent_size_or_orientation_is_an_error(make_series) -> None:
    info = make_series()
    ds = pydicom.dcmread(info.files[0])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(info.files[0])
    with pytest.raises(InputError, match="orientation"):
        load_image(info.folder)


def test_several_series_listed_and_selectable(make_series, tmp_path: Path) -> None:
    axial = make_series("mixed", description="AX 2.5mm", series_number=2)
    sag = make_series("sag_tmp", codes="PIL", description="SAG T1", series_number=5)
    for f in sag.files:
        shutil.move(str(f), axial.folder / f"sag_{f.name}")
    with pytest.raises(InputError) as err:
        load_image(axial.folder)
    msg = str(err.value)
    assert "2 DICOM series" in msg and "--series" in msg and "\n" not in msg
    assert f"[0] {axial.uid} 'AX 2.5mm' (4 files)" in msg
    assert f"[1] {sag.uid} 'SAG T1' (6 files)" in msg
    assert_same_image(load_image(axial.folder, series=0), axial)
    assert_same_image(load_image(axial.folder, series="1"), sag)
    assert_same_image(load_image(axial.folder, series=sag.uid), sag)
    assert_same_image(load_image(axial.folder, series="sag t1"), sag)
    with pytest.raises(InputError, match="no DICOM series '7'"):
        load_image(axial.folder, series=7)


def test_non_image_and_non_dicom_files_are_skipped(make_series) -> None:
    info = make_series()
    shutil.copy(TEST_FILES / "rtplan.dcm", info.folder / "plan.dcm")
    (info.folder / "README.txt").write_text("exported by a PACS")
    (info.folder / "DICOMDIR").write_bytes(b"\0" * 200)
    image = load_image(info.folder)
    assert_same_image(image, info)
    assert image.metadata["skipped_files"] == 3


def test_folder_without_dicom_images(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    shutil.copy(TEST_FILES / "rtplan.dcm", tmp_path / "plan.dcm")
    with pytest.raises(InputError, match="no DICOM image files"):
        load_image(tmp_path)


def test_series_and_its_nifti_export_agree(make_series, tmp_path: Path) -> None:
    info = make_series(codes="PIL")
    image = load_image(info.folder)
    out = save_nifti(image, tmp_path / "out" / "export.nii.gz")
    assert [p.name for p in out.parent.iterdir()] == ["export.nii.gz"]  # no temp file left
    again = load_image(out)
    np.testing.assert_array_equal(again.array, image.array)
    np.testing.assert_allclose(again.affine, image.affine, atol=1e-4)
    assert again.array.dtype == image.array.dtype
    assert nib.aff2axcodes(nib.load(out).affine) == ("R", "A", "S")


def test_enhanced_multiframe_is_a_volume(
    tmp_path: Path, make_series, ras_volume, dicom_builders
) -> None:
    info = make_series()
    path = dicom_builders.write_enhanced(tmp_path / "enhanced.dcm", *ras_volume, codes="LPS")
    image = load_image(path)
    assert_same_image(image, info)
    assert image.metadata["frames"] == info.volume.shape[2]


def test_multiframe_without_geometry_is_refused() -> None:
    with pytest.raises(InputError, match=r"multi-frame DICOM \(2 frames\) without per-frame"):
        load_image(TEST_FILES / "SC_rgb_rle_2frame.dcm")


def test_single_file_series_folder_gives_2d(make_series) -> None:
    info = make_series()
    for f in info.files[1:]:
        f.unlink()
    image = load_image(info.folder)
    assert not image.is_volume and image.modality == "CT"


def test_a_long_gap_is_one_short_line_with_details(make_series) -> None:
    """161 missing positions: the message lists three, --verbose details list them all."""
    info = make_series()
    ordered = sorted(info.files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    last = ordered[-1]
    ds = pydicom.dcmread(last)
    step = float(ds.ImagePositionPatient[2]) - float(
        pydicom.dcmread(ordered[-2]).ImagePositionPatient[2]
    )
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 161 * step
    ds.save_as(last)
    with pytest.raises(InputError) as err:
        load_image(info.folder)
    message = str(err.value)
    assert "... (161 slices)" in message and len(message) - len(str(info.folder)) < 300
    assert len(err.value.details[1].split(", ")) == 161
