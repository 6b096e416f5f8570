"""``m3 experts run --store`` against a real Orthanc: SEG + SR written back and read again.

The expected values come from the same measurement run locally on the NIfTI
the CT series was written from (with the same mask); the objects are read
back through Orthanc's own REST API and parsed with highdicom.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pydicom
import pytest

from medm3.errors import InputError
from tests.cli.helpers import run
from tests.dicomweb.conftest import PASSWORD, REFUSED_DESCRIPTION, Orthanc, need

hd = pytest.importorskip("highdicom")
pytest.importorskip("scipy")

STRUCTURES = "liver, spleen, kidney"


def new_series(pacs: Orthanc, study: str, before: set[str]) -> dict[str, dict[str, Any]]:
    """Series added to ``study`` since ``before``: Modality -> Orthanc record."""
    return {
        s["MainDicomTags"]["Modality"]: s
        for s in pacs.series_of_study(study)
        if s["MainDicomTags"]["SeriesInstanceUID"] not in before
    }


def series_uids(pacs: Orthanc, study: str) -> set[str]:
    """SeriesInstanceUIDs of a study, as Orthanc sees them."""
    return {s["MainDicomTags"]["SeriesInstanceUID"] for s in pacs.series_of_study(study)}


def _measure_args(image: str, mask: Path, labels: Path) -> list[str]:
    return ["experts", "run", "measure", image, "--mask", str(mask), "--labels", str(labels),
            "--arg", STRUCTURES, "--json", "--no-cache"]  # fmt: skip


def test_store_seg_and_sr_round_trip(
    pacs: Orthanc,
    ct_labels_path: Path,
    ct_label_names_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ct = need(pacs, "ct")
    before = series_uids(pacs, ct["study"])
    code, out, err = run(
        _measure_args(str(ct["nifti"]), ct_labels_path, ct_label_names_path), capsys
    )
    assert code == 0, err
    rows = json.loads(out)["measurements"]
    local = {r["name"]: r for r in rows if r["voxels"]}  # absent structures get no segment
    code, out, err = run(
        [*_measure_args(pacs.ref(ct["study"]), ct_labels_path, ct_label_names_path), "--store"],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    remote = {r["name"]: r for r in doc["measurements"] if r["voxels"]}
    assert set(remote) == set(local) and len(local) >= 3
    assert set(doc["files"]) >= {"stored:seg", "stored:sr"}

    added = new_series(pacs, ct["study"], before)
    assert set(added) == {"SEG", "SR"}
    seg_ds = pydicom.dcmread(io.BytesIO(pacs.instance_files(added["SEG"]["ID"])[0]))
    sr_ds = pydicom.dcmread(io.BytesIO(pacs.instance_files(added["SR"]["ID"])[0]))
    assert doc["files"]["stored:seg"].endswith(seg_ds.SOPInstanceUID)
    assert doc["files"]["stored:sr"].endswith(sr_ds.SOPInstanceUID)

    # SEG: references the CT series, one segment per measured structure, voxel counts equal.
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.StudyInstanceUID == ct["study"]
    assert {str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence} == {ct["series"]}
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    for segment in seg.SegmentSequence:  # algorithm identification of the expert
        assert segment.SegmentAlgorithmName == "medm3 measure"
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert sorted(labels.values()) == sorted(local)
    frames = seg_ds.pixel_array.reshape(-1, seg_ds.Rows, seg_ds.Columns)
    counts: dict[int, int] = {}
    for frame, item in zip(frames, seg_ds.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        counts[number] = counts.get(number, 0) + int(frame.sum())
    assert {labels[n]: c for n, c in counts.items()} == {n: r["voxels"] for n, r in local.items()}

    # SR: TID 1500, one volumetric group per segment, values equal to the local run.
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    assert sr.StudyInstanceUID == ct["study"] and sr.PatientID == "PACS-CT-0001"
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(local)
    codes = pydicom.sr.codedict.codes
    for group in groups:
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg_ds.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == seg_ds.SOPClassUID
        source = [i for i in group.referenced_segment if getattr(i, "ValueType", "") == "UIDREF"]
        assert [str(i.UID) for i in source] == [ct["series"]]  # Source series for segmentation
        name = labels[int(ref.ReferencedSegmentNumber)]
        row = local[name]

        def value(code: Any, g: Any = group) -> float:
            (m,) = g.get_measurements(name=code)
            return float(m.value)

        assert value(codes.SCT.Volume) == pytest.approx(row["volume_ml"], rel=1e-6)
        assert value(codes.SCT.Diameter) == pytest.approx(row["max_axial_diameter_mm"], rel=1e-6)
        assert value(codes.SCT.Mean) == pytest.approx(row["mean_intensity"], rel=1e-6)
        assert value(codes.SCT.StandardDeviation) == pytest.approx(row["std_intensity"], rel=1e-6)
        (m,) = group.get_measurements(name=codes.SCT.Mean)
        assert m.unit.value == "[hnsf'U]"
    evidence = {
        str(s.SeriesInstanceUID) for s in sr_ds.CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence
    }  # fmt: skip
    assert evidence == {ct["series"], str(seg_ds.SeriesInstanceUID)}
    device = sr_ds.ContentSequence  # observer context: a device named after the expert
    names = [
        str(getattr(i, "TextValue", "")) for i in device if getattr(i, "ValueType", "") == "TEXT"
    ]
    assert "medm3 measure" in names


def _liver_result(pacs: Orthanc, ct_labels_path: Path) -> tuple[Any, Any, Any]:
    from medm3.experts.base import RunContext
    from medm3.experts.registry import get_expert
    from medm3.imaging.io import load_image

    ct = need(pacs, "ct")
    image = load_image(pacs.ref(ct["study"]))
    mask = load_image(ct_labels_path)
    context = RunContext(options={"label_names": {5: "liver"}})
    result = get_expert("measure").run({"image": image, "mask": mask}, "liver", context=context)
    return image, mask, result


def test_failed_stow_leaves_nothing_on_the_server(
    pacs: Orthanc, ct_labels_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.dicomweb.store import store_result

    ct = need(pacs, "ct")
    image, mask, result = _liver_result(pacs, ct_labels_path)
    before = series_uids(pacs, ct["study"])

    monkeypatch.setenv("MEDM3_DICOMWEB_PASSWORD", "wrong")
    with pytest.raises(InputError, match=r"refused the credentials \(HTTP 401\) while storing"):
        store_result(result, image, mask=mask)
    assert series_uids(pacs, ct["study"]) == before
    monkeypatch.setenv("MEDM3_DICOMWEB_PASSWORD", PASSWORD)

    # The server drops the SR (a Lua filter) while the SEG of the same request is stored:
    # the SEG must be deleted again and the error must say so.
    import medm3.experts.dicom_sr as dicom_sr

    real = dicom_sr.build_measurement_report

    def refused_sr(*args: Any, **kwargs: Any) -> Any:
        sr = real(*args, **kwargs)
        sr.SeriesDescription = REFUSED_DESCRIPTION
        return sr

    monkeypatch.setattr(dicom_sr, "build_measurement_report", refused_sr)
    with pytest.raises(InputError, match=r"refused 1 of 2 result objects.*nothing was left"):
        store_result(result, image, mask=mask)
    assert series_uids(pacs, ct["study"]) == before

    monkeypatch.setattr(dicom_sr, "build_measurement_report", real)
    stored = store_result(result, image, mask=mask, question="How big is the liver?", answer="Big.")
    after = series_uids(pacs, ct["study"])
    assert after - before == {o.series_instance_uid for o in stored}
    sr_ds = pydicom.dcmread(
        io.BytesIO(pacs.instance_files(new_series(pacs, ct["study"], before)["SR"]["ID"])[0])
    )
    texts = _texts(sr_ds)
    assert "How big is the liver?" in texts and "Big." in texts


def _texts(ds: Any) -> list[str]:
    out = []
    for item in getattr(ds, "ContentSequence", []):
        if getattr(item, "ValueType", "") == "TEXT":
            out.append(str(item.TextValue))
        out.extend(_texts(item))
    return out
