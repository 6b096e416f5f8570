"""DICOM-SEG export: label maps written back onto the source DICOM series.

Synthetic series are written with the builders of ``tests/imaging/conftest.py``
(shuffled file names, InstanceNumber running backwards). The label map is
drawn in *source* coordinates (row, column, file) and turned into the loaded
RAS+ grid with nibabel, independently of the code under test; the SEG frames
must then show it at exactly the same source positions.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medm3.errors import InputError
from medm3.experts.base import ExpertResult
from medm3.experts.dicom_seg import (
    segment_codes,
    supports_dicom_seg,
    write_dicom_seg,
)
from medm3.experts.output import result_files, save_result
from medm3.imaging.image import MedicalImage
from medm3.imaging.io import load_image, save_nifti
from tests.imaging.conftest import LPS, slices_in_orientation, synthetic_volume, write_series

hd = pytest.importorskip("highdicom")

FOR_UID = "1.2.826.0.1.3680043.8.498.77"
RAS_AFFINE = np.array(
    [[0.8, 0, 0, -20.0], [0, 0.9, 0, 10.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]], dtype=float
)
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
NAMES = {5: "liver", 2: "left kidney"}


class Series:
    """A synthetic series on disk, its loaded image and source-space label planes."""

    def __init__(
        self,
        folder: Path,
        codes: str,
        shape: tuple[int, int, int] = (32, 28, 12),
        volume: np.ndarray | None = None,
    ) -> None:
        volume = synthetic_volume(shape) if volume is None else volume
        self.info = write_series(folder, volume, RAS_AFFINE, codes)
        for path in self.info.files:  # the fixtures write no Frame of Reference
            ds = pydicom.dcmread(path)
            ds.FrameOfReferenceUID = FOR_UID
            ds.save_as(path)
        data, self.lps = slices_in_orientation(volume, RAS_AFFINE, codes)
        self.source_shape = data.shape  # (cols, rows, files): file k holds data[:, :, k].T
        self.uids = [
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.info.files
        ]

    def labels(self, source: np.ndarray, image: MedicalImage) -> MedicalImage:
        """A label map drawn in source space ``(cols, rows, files)``, on ``image``'s grid."""
        canon = nib.as_closest_canonical(nib.Nifti1Image(source, LPS @ self.lps))
        np.testing.assert_allclose(canon.affine, image.affine, atol=1e-4)
        return image.with_array(np.asarray(canon.dataobj).astype(np.uint8), modality="OT")


def box_labels(series: Series) -> np.ndarray:
    """Label 5 in a box at rows 3-6, cols 5-10, files 2-4; label 2 in a corner of the last file."""
    source = np.zeros(series.source_shape, np.uint8)
    source[5:11, 3:7, 2:5] = 5
    source[0:2, 0:3, -1] = 2
    return source


def seg_masks(path: Path) -> tuple[Any, dict[str, dict[int, np.ndarray]]]:
    """Read a SEG with pydicom: ``{source SOP UID: {segment number: mask}}``."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    shared = ds.SharedFunctionalGroupsSequence[0]
    masks: dict[str, dict[int, np.ndarray]] = {}
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ident = item if "SegmentIdentificationSequence" in item else shared  # one segment: shared
        number = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        masks.setdefault(str(source.ReferencedSOPInstanceUID), {})[number] = pixels[i]
    return ds, masks


def assert_frames_match(series: Series, source: np.ndarray, path: Path) -> Any:
    """Every source file's SEG masks equal the source-space labels of that file."""
    ds, masks = seg_masks(path)
    numbers = {2: 1, 5: 2}  # label ids renumbered in increasing order
    for k, uid in enumerate(series.uids):
        plane = source[:, :, k].T  # (rows, cols) of file k
        for label, number in numbers.items():
            got = masks.get(uid, {}).get(number, np.zeros_like(plane))
            np.testing.assert_array_equal(got, (plane == label).astype(got.dtype), err_msg=uid)
    for k in (2, 3, 4):  # the box, checked at its known source positions
        mask = masks[series.uids[k]][2]
        assert mask[3:7, 5:11].all() and mask.sum() == 24
    assert masks[series.uids[-1]][1][0:3, 0:2].all()
    return ds


@pytest.mark.parametrize("codes", ["LPS", "PIL", "RAI"], ids=["axial", "sagittal", "flipped"])
def test_series_round_trip(tmp_path: Path, codes: str) -> None:
    series = Series(tmp_path / "series", codes)
    image = load_image(series.info.folder)
    assert supports_dicom_seg(image)
    source = box_labels(series)
    labels = series.labels(source, image)
    out = write_dicom_seg(
        labels, NAMES, image, tmp_path / "x_seg.dcm", expert="vista3d", expert_version="0.5.8"
    )
    ds = assert_frames_match(series, source, out)
    assert ds.SOPClassUID == SEG_STORAGE and ds.Modality == "SEG"
    assert ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == FOR_UID
    first = pydicom.dcmread(series.info.files[0], stop_before_pixels=True)
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.PatientID == "SYN0001"
    assert ds.SeriesInstanceUID != series.info.uid
    assert ds.SeriesDescription == "medm3 vista3d" and ds.SeriesNumber == 1001
    referenced = ds.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == series.info.uid
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == set(
        series.uids
    )
    kidney, liver = ds.SegmentSequence
    assert (kidney.SegmentNumber, kidney.SegmentLabel) == (1, "left kidney")
    assert (liver.SegmentNumber, liver.SegmentLabel) == (2, "liver")
    assert liver.SegmentDescription == "vista3d label 5"
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT Liver
    kidney_type = kidney.SegmentedPropertyTypeCodeSequence[0]
    assert kidney_type.CodeMeaning == "Kidney"
    assert kidney_type.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    algorithm = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medm3 vista3d"
    assert algorithm.AlgorithmVersion.startswith("medm3 ") and "0.5.8" in algorithm.AlgorithmVersion

    seg = hd.seg.segread(out)  # highdicom reads it back to the same planes
    planes = seg.get_pixels_by_source_instance(
        series.uids,
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    expected = np.searchsorted([0, 2, 5], source.transpose(2, 1, 0))
    np.testing.assert_array_equal(planes, expected)


def test_zip_and_file_list_sources(tmp_path: Path) -> None:
    series = Series(tmp_path / "series", "LPS", shape=(16, 14, 8))
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README.txt", "not dicom")
        for path in series.info.files:
            zf.write(path, f"dicom/{path.name}")
    image = load_image(archive)
    assert image.metadata["container"] == "zip" and supports_dicom_seg(image)
    source = box_labels(series)
    out = write_dicom_seg(
        series.labels(source, image), NAMES, image, tmp_path / "z.dcm", expert="e"
    )
    assert_frames_match(series, source, out)

    # Only files 0..5 of the folder's 8 given: the SEG references exactly those.
    subset = series.info.files[:6]
    image = load_image(subset)
    assert image.metadata["container"] == "files"
    out = write_dicom_seg(
        series.labels(source[:, :, :6], image), NAMES, image, tmp_path / "f.dcm", expert="e"
    )
    ds, masks = seg_masks(out)
    refs = {
        str(i.ReferencedSOPInstanceUID)
        for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert refs == set(series.uids[:6])
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver"]  # label 2 is in file 7
    assert set(masks) == set(series.uids[2:5]) and masks[series.uids[3]][1][3:7, 5:11].all()


def test_real_series_with_real_headers(tmp_path: Path) -> None:
    folder = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
    folder = folder / "98892001" / "CT5N"
    image = load_image(folder)
    labels = np.zeros(image.array.shape, np.uint8)
    labels[2:6, 3:9, 1:3] = 7
    out = write_dicom_seg(
        image.with_array(labels), {7: "spleen"}, image, tmp_path / "s.dcm", expert="vista3d"
    )
    ds = pydicom.dcmread(out)
    first = pydicom.dcmread(next(p for p in folder.iterdir()), stop_before_pixels=True)
    assert ds.PatientName == first.PatientName and ds.StudyDate == first.StudyDate
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert int(ds.NumberOfFrames) == 2 and ds.SegmentSequence[0].SegmentLabel == "spleen"
    assert int(np.asarray(ds.pixel_array).sum()) == 4 * 6 * 2


def test_not_a_series_and_empty_labels(tmp_path: Path) -> None:
    series = Series(tmp_path / "series", "LPS", shape=(8, 8, 4))
    image = load_image(series.info.folder)
    nifti = load_image(save_nifti(image, tmp_path / "ct.nii.gz"))
    assert not supports_dicom_seg(nifti) and not supports_dicom_seg(None)
    labels = nifti.with_array(np.ones(nifti.array.shape, np.uint8))
    with pytest.raises(InputError, match="needs a DICOM series"):
        write_dicom_seg(labels, {}, nifti, tmp_path / "n.dcm", expert="e")
    empty = image.with_array(np.zeros(image.array.shape, np.uint8))
    with pytest.raises(InputError, match="no labels"):
        write_dicom_seg(empty, {}, image, tmp_path / "e.dcm", expert="e")
    with pytest.raises(InputError, match="non-integer"):
        write_dicom_seg(
            image.with_array(empty.array + 0.5), {}, image, tmp_path / "e.dcm", expert="e"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "series"]


def _result(image: MedicalImage, labels: np.ndarray) -> ExpertResult:
    return ExpertResult(
        expert="vista3d",
        args="liver",
        text="t",
        label_map=image.with_array(labels, modality="OT"),
        label_names=dict(NAMES),
        info={"weights_version": "0.5.8"},
    )


def test_save_result_writes_seg_or_warns(tmp_path: Path) -> None:
    series = Series(tmp_path / "series", "PIL", shape=(12, 12, 8))
    image = load_image(series.info.folder)
    source = box_labels(series)
    result = _result(image, series.labels(source, image).array)
    assert result_files(result, image)["dicom_seg"] == "vista3d_seg.dcm"
    warnings: list[str] = []
    files = save_result(result, tmp_path / "out", source_image=image, warnings=warnings)
    assert warnings == []
    assert files["dicom_seg"] == str(tmp_path / "out" / "vista3d_seg.dcm")
    assert_frames_match(series, source, Path(files["dicom_seg"]))
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["files"]["dicom_seg"] == "vista3d_seg.dcm" and "warnings" not in doc

    # Empty label map: everything else is written, the reason is one warning line.
    empty = _result(image, np.zeros(image.array.shape, np.uint8))
    files = save_result(empty, tmp_path / "empty", source_image=image, warnings=warnings)
    assert "dicom_seg" not in files and len(warnings) == 1 and "no labels" in warnings[0]
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [
        "result.json",
        "vista3d_labels.nii.gz",
    ]
    doc = json.loads((tmp_path / "empty" / "result.json").read_text())
    assert doc["warnings"] == warnings and "dicom_seg" not in doc["files"]

    # The series changed after loading (a file removed), then lost its Frame of Reference.
    series.info.files[0].unlink()
    files = save_result(result, tmp_path / "changed", source_image=image)
    doc = json.loads(Path(files["result"]).read_text())
    assert "dicom_seg" not in files and "changed since it was read" in doc["warnings"][0]
    for path in series.info.files[1:]:
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    image = load_image(series.info.folder)
    result = _result(image, np.ones(image.array.shape, np.uint8))
    files = save_result(result, tmp_path / "nofor", source_image=image)
    doc = json.loads(Path(files["result"]).read_text())
    assert "FrameOfReferenceUID" in doc["warnings"][0]
    assert not [p for p in (tmp_path / "nofor").iterdir() if p.name.startswith(".")]

    # A NIfTI input gets no SEG and no warning.
    nifti = load_image(save_nifti(image, tmp_path / "ct.nii.gz"))
    files = save_result(
        _result(nifti, result.label_map.array), tmp_path / "nii", source_image=nifti
    )  # type: ignore[union-attr]
    assert "dicom_seg" not in files
    assert "warnings" not in json.loads(Path(files["result"]).read_text())


def test_missing_highdicom_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series = Series(tmp_path / "series", "LPS", shape=(6, 6, 3))
    image = load_image(series.info.folder)
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import fails
    warnings: list[str] = []
    files = save_result(
        _result(image, np.ones(image.array.shape, np.uint8)),
        tmp_path / "out",
        source_image=image,
        warnings=warnings,
    )
    assert "dicom_seg" not in files and "label_map" in files
    assert len(warnings) == 1 and "'highdicom' package" in warnings[0]


@pytest.mark.parametrize(
    ("name", "category", "kind"),
    [
        ("liver", "Anatomical Structure", "Liver"),
        ("inferior vena cava", "Anatomical Structure", "Inferior vena cava"),
        ("hepatic tumor", "Morphologically Abnormal Structure", "Neoplasm"),
        ("peritumoral edema", "Morphologically Abnormal Structure", "Edema"),
        ("lung nodules", "Morphologically Abnormal Structure", "Lesion"),
        ("bright", "Tissue", "Tissue"),
        ("vertebrae L5", "Tissue", "Tissue"),
    ],
)
def test_segment_codes(name: str, category: str, kind: str) -> None:
    cat, typ, modifier = segment_codes(name)
    assert (cat.meaning, typ.meaning, modifier) == (category, kind, None)


def test_cli_run_writes_seg(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    registered_fakes: None,
    result_cache: Any,
) -> None:
    from tests.cli.helpers import run

    series = Series(tmp_path / "series", "LPS", shape=(10, 9, 5))
    out_dir = tmp_path / "out"
    code, out, err = run(
        [
            "experts",
            "run",
            "fakeseg",
            str(series.info.folder),
            "--arg",
            "everything",
            "-o",
            str(out_dir),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["files"]["dicom_seg"] == str(out_dir / "fakeseg_seg.dcm") and "warnings" not in doc
    ds, masks = seg_masks(out_dir / "fakeseg_seg.dcm")
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["bright", "dark"]
    image = load_image(series.info.folder)
    assert (
        sum(int(m.sum()) for frames in masks.values() for m in frames.values()) == image.array.size
    )
    saved = json.loads((out_dir / "result.json").read_text())
    assert saved["files"]["dicom_seg"] == "fakeseg_seg.dcm"

    # No bright voxel: the label map is empty, the run succeeds with one warning line.
    dark = Series(tmp_path / "dark", "LPS", volume=np.full((6, 6, 3), -500, np.int16))
    args = ["experts", "run", "fakeseg", str(dark.info.folder), "--arg", "bright"]
    code, out, err = run([*args, "-o", str(tmp_path / "dark_out")], capsys)
    assert code == 0, err
    assert err.strip().splitlines() == [
        "m3: warning: no DICOM-SEG written: the label map has no labels, and a DICOM-SEG "
        "needs at least one segment"
    ]
    assert "wrote " in out and not (tmp_path / "dark_out" / "fakeseg_seg.dcm").exists()


def test_seg_written_into_the_series_folder_is_not_a_second_series(tmp_path: Path) -> None:
    series = Series(tmp_path / "series", "LPS", shape=(10, 10, 4))
    image = load_image(series.info.folder)
    labels = series.labels(box_labels(series), image)
    write_dicom_seg(labels, NAMES, image, series.info.folder / "seg.dcm", expert="vista3d")
    again = load_image(series.info.folder)  # no "holds 2 DICOM series" error
    assert again.spatial_shape == image.spatial_shape
    assert again.metadata["series_uid"] == series.info.uid


def test_series_with_a_gap_seg_from_largest_run_and_refused_when_filled(tmp_path: Path) -> None:
    """--allow-gaps largest: the SEG references the kept files; fill: refused in one clear line."""
    series = Series(tmp_path / "series", "LPS", shape=(16, 14, 8))
    series.info.files[5].unlink()  # runs 0-4 and 6-7: the largest is files 0-4
    kept = series.info.files[:5]
    files = [p for p in series.info.files if p.exists()]

    image = load_image(files, allow_gaps="largest")
    assert image.metadata["source_files"] == [str(p.resolve()) for p in kept]
    source = box_labels(series)[:, :, :5]
    out = write_dicom_seg(
        series.labels(source, image), NAMES, image, tmp_path / "largest.dcm", expert="e"
    )
    ds, _ = seg_masks(out)
    refs = {
        str(i.ReferencedSOPInstanceUID)
        for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert refs == set(series.uids[:5])

    filled = load_image(files, allow_gaps="fill")
    assert filled.metadata["filled_slices"]
    labels = filled.with_array(np.zeros(filled.spatial_shape, np.uint8) + 5, modality="OT")
    with pytest.raises(InputError, match="no DICOM-SEG for a series loaded with --allow-gaps fill"):
        write_dicom_seg(labels, NAMES, filled, tmp_path / "filled.dcm", expert="e")
    assert not (tmp_path / "filled.dcm").exists()
