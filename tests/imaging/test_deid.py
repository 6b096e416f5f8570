"""DICOM de-identification: no original PHI survives anywhere in the output bytes."""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medm3.errors import InputError
from medm3.imaging.deid import (
    BASIC_PROFILE,
    KEY_ENV_VAR,
    PROFILE_CODE,
    Action,
    deidentify_dataset,
    deidentify_file,
    deidentify_path,
    phi_values,
)

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
SERIES_ROOT = CT_SMALL.parent / "dicomdirtests"
KEY = "test-key"


# --- helpers ---------------------------------------------------------------------------


def encodings(value: str) -> set[bytes]:
    """Every byte form a value may take in a file (UTF-8, Latin-1, UTF-16)."""
    forms = {value.encode("utf-8"), value.encode("utf-16-le")}
    with contextlib.suppress(UnicodeEncodeError):
        forms.add(value.encode("latin-1"))
    return forms


def surviving(phi: set[str], data: bytes) -> list[str]:
    """The PHI values found in a de-identified file's bytes.

    The new UIDs (keyed-hash ``2.25.`` UIDs, and registry UIDs) and the
    pixel data (checked unchanged) are blanked first: a short number such as ``177``
    can turn up inside them by chance, which is not a leak.
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    uids = [*all_uids(ds), *all_uids(ds.file_meta)]
    blanks: list[str | bytes] = [u for u in uids if u.startswith(("2.25.", "1.2.840.10008."))]
    if "PixelData" in ds:
        blanks.append(ds.PixelData)
    for blank in sorted(blanks, key=len, reverse=True):
        data = data.replace(blank if isinstance(blank, bytes) else blank.encode(), b"")
    return sorted(v for v in phi if any(form in data for form in encodings(v)))


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def all_uids(ds: Dataset) -> list[str]:
    found = []
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            found.extend(elem.value if elem.VM > 1 else [elem.value])
    return [str(u) for u in found]


def synthetic(sop_uid: str = "1.2.3.4.5.6.7.8.1", ref_uid: str = "1.2.3.4.5.6.7.8.100") -> Dataset:
    """A CT-like dataset full of PHI, in nested sequences, private tags, overlays, curves."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "HOSPAE_TITLE"
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"PHI-IN-PREAMBLE-Johnathan".ljust(128, b"\x00")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = "1.2.3.4.5.6.7.8.10"
    ds.SeriesInstanceUID = "1.2.3.4.5.6.7.8.11"
    ds.FrameOfReferenceUID = "1.2.3.4.5.6.7.8.12"
    ds.IrradiationEventUID = "1.2.3.4.5.6.7.8.13"
    ds.Modality = "CT"
    ds.Manufacturer = "Acme Scanners"
    ds.PatientName = "Doe^Johnathan^Quincy"
    ds.PatientID = "MRN0042XYZ"
    ds.PatientBirthDate = "19610422"
    ds.PatientSex = "M"
    ds.PatientAge = "061Y"
    ds.PatientAddress = "12 Elm Street, Springfield"
    ds.PatientTelephoneNumbers = "555-0199-321"
    ds.OtherPatientNames = ["Doe^Johnny", "Roe^Jonathan"]
    ds.OtherPatientIDs = "ALT-ID-7781"
    ds.OtherPatientIDsSequence = [Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = "SEQ-ID-99301"
    ds.AccessionNumber = "ACC778899"
    ds.StudyID = "STUDY5566"
    ds.InstitutionName = "Saint Example Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Gotham"
    ds.InstitutionalDepartmentName = "Radiology East Wing"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.PerformingPhysicianName = "Wilson^James"
    ds.NameOfPhysiciansReadingStudy = "Cuddy^Lisa"
    ds.RequestingPhysician = "Foreman^Eric"
    ds.OperatorsName = "Chase^Robert"
    ds.StationName = "STATION-XR7"
    ds.DeviceSerialNumber = "SN-99812-B"
    ds.StudyDate = "20230517"
    ds.SeriesDate = "20230518"
    ds.AcquisitionDate = "20230519"
    ds.ContentDate = "20230520"
    ds.StudyTime = "134501"
    ds.SeriesTime = "134602"
    ds.AcquisitionTime = "134703"
    ds.ContentTime = "134804"
    ds.AcquisitionDateTime = "20230519134703"
    ds.StudyDescription = "Chest CT for Johnathan"
    ds.SeriesDescription = "Series of Johnathan"
    ds.ImageComments = "patient Johnathan is claustrophobic"
    ds.AdditionalPatientHistory = "history of Quincy"
    ds.PatientComments = "call daughter Marjorie"
    ds.StudyComments = "comment Marjorie"
    ds.ProcedureCodeSequence = [Dataset()]
    ds.ProcedureCodeSequence[0].CodeValue = "CTCHEST"
    ds.ProcedureCodeSequence[0].CodingSchemeDesignator = "LOCAL"
    ds.ProcedureCodeSequence[0].CodeMeaning = "CT chest routine"
    request = Dataset()
    request.RequestedProcedureID = "REQ-31337"
    request.ScheduledProcedureStepID = "SPS-4242"
    ds.RequestAttributesSequence = [request]
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = ref_uid
    ds.ReferencedImageSequence = [ref]
    inner = Dataset()
    inner.ReferencedSOPClassUID = CTImageStorage
    inner.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.300"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4.5.6.7.8.200"
    series.ReferencedInstanceSequence = [inner]
    series.PatientName = "Nested^Personname"
    series.InstitutionName = "Nested General Hospital"
    ds.ReferencedSeriesSequence = [series]  # kept sequence: its items are cleaned
    ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", "Private Johnathan")
    hidden = Dataset()
    hidden.PatientName = "Hidden^Privateperson"
    ds.private_block(0x0009, "ACME 1.0").add_new(0x02, "SQ", Sequence([hidden]))
    ds.add_new(0x60000022, "LO", "overlay about Johnathan")
    ds.add_new(0x60003000, "OB", b"\x01" * 8)
    ds.add_new(0x50002500, "LO", "curve label Marjorie")
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(64, dtype="<u2").tobytes()
    return ds


# --- the action table ------------------------------------------------------------------


def test_table_keywords_are_dicom_keywords() -> None:
    unknown = [k for k in BASIC_PROFILE if tag_for_keyword(k) is None]
    assert unknown == []
    assert len(BASIC_PROFILE) > 400


def test_table_actions_are_allowed_by_the_profile_codes() -> None:
    for keyword, action in BASIC_PROFILE.items():
        code = PROFILE_CODE[keyword]
        if code == "-":
            continue
        allowed = {Action(part.rstrip("*")) for part in code.split("/")} | {Action.REMOVE}
        if {"D", "Z"} & set(code.split("/")):
            allowed |= {Action.DUMMY, Action.PSEUDONYM}
        assert action in allowed, (keyword, code, action)


def test_table_actions_fit_the_value_representation() -> None:
    for keyword, action in BASIC_PROFILE.items():
        vr = dictionary_VR(tag_for_keyword(keyword))
        if action is Action.UID:
            assert vr in ("UI", "SQ"), keyword
        if action is Action.PSEUDONYM:
            assert vr in ("PN", "LO", "SH", "UC"), keyword


@pytest.mark.parametrize(
    "keyword",
    [
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientAddress",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientTelephoneNumbers",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "RequestingPhysician",
        "OperatorsName",
        "StationName",
        "DeviceSerialNumber",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "StudyID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        "ReferencedSOPInstanceUID",
        "MediaStorageSOPInstanceUID",
        "IrradiationEventUID",
        "ImageComments",
        "StudyComments",
        "AdditionalPatientHistory",
        "PatientComments",
        "RequestAttributesSequence",
    ],
)
def test_table_covers_identifying_attribute(keyword: str) -> None:
    assert BASIC_PROFILE[keyword] is not Action.KEEP


# --- real files: no PHI survives -------------------------------------------------------


def check_output(src: Path, out: Path) -> pydicom.FileDataset:
    original = pydicom.dcmread(src)
    phi = phi_values(original)
    assert phi, "the original should hold some PHI"
    data = out.read_bytes()
    assert surviving(phi, data) == []
    result = pydicom.dcmread(out)
    assert result.PatientIdentityRemoved == "YES"
    assert result.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert result.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert "Basic Application Level Confidentiality Profile" in result.DeidentificationMethod[0]
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    assert result.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert result.PixelData == original.PixelData
    assert not any(elem.tag.is_private for elem in result.iterall())
    for uid in all_uids(result):
        assert uid.startswith(("2.25.", "1.2.840.10008.")), uid
    assert result.preamble == b"\x00" * 128
    return result


@pytest.mark.parametrize("src", [CT_SMALL, MR_SMALL], ids=["CT_small", "MR_small"])
def test_real_files_keep_no_phi(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    report = deidentify_file(src, out, key=KEY)
    result = check_output(src, out)
    assert report.uids_replaced >= 4 and report.removed > 0
    assert result.PatientName.family_name == "ANONYMOUS"
    assert result.PatientID.startswith("ANON-")
    assert result.Modality == pydicom.dcmread(src).Modality  # non-identifying data kept
    if src == CT_SMALL:
        assert report.private_removed > 100
    assert report.warnings == []


def test_shared_cxr_keeps_no_phi_and_warns_about_burned_in_text(
    cxr_mono1_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cxr.dcm"
    report = deidentify_file(cxr_mono1_path, out, key=KEY)
    check_output(cxr_mono1_path, out)
    assert report.burned_in_risk  # a secondary capture
    assert any("NOT scrubbed" in w for w in report.warnings)


def test_synthetic_phi_in_sequences_private_tags_and_overlays(tmp_path: Path) -> None:
    original = synthetic()
    phi = phi_values(original)
    expected = {
        "Doe^Johnathan^Quincy",
        "Johnathan",
        "MRN0042XYZ",
        "SEQ-ID-99301",
        "REQ-31337",
        "Nested^Personname",
        "Nested General Hospital",
        "Hidden^Privateperson",
        "Private Johnathan",
        "overlay about Johnathan",
        "curve label Marjorie",
        "HOSPAE_TITLE",
        "1.2.3.4.5.6.7.8.300",
        "20230517",
        "134501",
    }
    assert expected <= phi
    assert "CT chest routine" not in phi and "M" not in phi
    ds = copy.deepcopy(original)
    report = deidentify_dataset(ds, key=KEY)
    data = to_bytes(ds)
    assert surviving(phi, data) == []
    assert b"Johnathan" not in data and b"Marjorie" not in data
    result = pydicom.dcmread(io.BytesIO(data))
    assert result.PixelData == original.PixelData
    assert result.ProcedureCodeSequence[0].CodeMeaning == "CT chest routine"
    assert 0x60003000 not in result and 0x50002500 not in result
    assert "RequestAttributesSequence" not in result
    item = result.ReferencedSeriesSequence[0]
    assert "InstitutionName" not in item and str(item.PatientName).startswith("ANONYMOUS^")
    assert item.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")
    assert result.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert result.StudyDate == "" and result.ContentDate == "19000101"
    assert result.AccessionNumber.startswith("ANON-") and len(result.AccessionNumber) <= 16
    assert result.LongitudinalTemporalInformationModified == "REMOVED"
    assert report.private_removed >= 3 and report.emptied > 0 and report.replaced > 0


def test_dataset_without_file_meta_is_deidentified_in_place() -> None:
    ds = synthetic()
    del ds.file_meta
    report = deidentify_dataset(ds, key=KEY)
    assert "PatientAddress" not in ds and ds.SOPInstanceUID.startswith("2.25.")
    assert not hasattr(ds, "file_meta") or ds.file_meta is None
    assert report.uids_replaced > 0


# --- consistent remapping --------------------------------------------------------------


def test_same_uid_same_key_gives_same_new_uid_across_files() -> None:
    first = synthetic(sop_uid="1.2.3.4.5.6.7.8.1")
    second = synthetic(sop_uid="1.2.3.4.5.6.7.8.2", ref_uid="1.2.3.4.5.6.7.8.1")
    deidentify_dataset(first, key=KEY)
    deidentify_dataset(second, key=KEY)
    assert second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.PatientID == second.PatientID and first.PatientName == second.PatientName


def test_different_keys_give_different_uids_and_pseudonyms() -> None:
    first, second = synthetic(), synthetic()
    deidentify_dataset(first, key="key-one")
    deidentify_dataset(second, key="key-two")
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.PatientID != second.PatientID


def test_key_from_environment_and_random_key(monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = synthetic()
    deidentify_dataset(explicit, key="env-key")
    monkeypatch.setenv(KEY_ENV_VAR, "env-key")
    from_env = synthetic()
    assert not deidentify_dataset(from_env).random_key
    assert from_env.StudyInstanceUID == explicit.StudyInstanceUID
    monkeypatch.delenv(KEY_ENV_VAR)
    one, two = synthetic(), synthetic()
    assert deidentify_dataset(one).random_key
    deidentify_dataset(two)
    assert one.StudyInstanceUID != two.StudyInstanceUID


def test_series_folder_keeps_study_and_series_relationships(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for patient in ("77654033", "98892001"):
        shutil.copytree(SERIES_ROOT / patient, src / patient)
    shutil.copy(SERIES_ROOT / "DICOMDIR", src / "DICOMDIR")
    (src / "notes.txt").write_text("Patient John Doe, MRN 123")
    before = {
        p.relative_to(src): pydicom.dcmread(p)
        for p in src.rglob("*")
        if p.is_file() and p.name not in ("DICOMDIR", "notes.txt")
    }
    out = tmp_path / "out"
    summary = deidentify_path(src, out, key=KEY)
    assert len(summary.files) == len(before) == 14
    assert {Path(s).name for s, _ in summary.skipped} == {"DICOMDIR", "notes.txt"}
    assert not (out / "DICOMDIR").exists() and not (out / "notes.txt").exists()
    study_map: dict[str, set[str]] = {}
    series_map: dict[str, set[str]] = {}
    for rel, orig in before.items():
        new = check_output(src / rel, out / rel)
        study_map.setdefault(orig.StudyInstanceUID, set()).add(new.StudyInstanceUID)
        series_map.setdefault(orig.SeriesInstanceUID, set()).add(new.SeriesInstanceUID)
    assert all(len(v) == 1 for v in study_map.values())
    assert all(len(v) == 1 for v in series_map.values())
    assert len(set().union(*study_map.values())) == len(study_map) == 3
    assert len(set().union(*series_map.values())) == len(series_map)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_folder_links_to_files_are_followed_links_to_folders_are_not(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "ct.dcm").symlink_to(CT_SMALL)
    (src / "series").symlink_to(SERIES_ROOT / "77654033" / "CR1", target_is_directory=True)
    summary = deidentify_path(src, tmp_path / "out", key=KEY)
    assert [f.output for f in summary.files] == ["ct.dcm"]
    assert [Path(p).name for p, _ in summary.skipped] == ["series"]
    assert not (tmp_path / "out" / "ct.dcm").is_symlink()
    check_output(CT_SMALL, tmp_path / "out" / "ct.dcm")


def test_folder_to_zip_with_uid_names(tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(SERIES_ROOT / "77654033" / "CT2", src / "CT2")
    summary = deidentify_path(src, tmp_path / "out.zip", key=KEY, rename=True)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        names = archive.namelist()
        ds = pydicom.dcmread(io.BytesIO(archive.read(names[0])))
    assert len(names) == len(summary.files) == 4
    assert names[0] == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"


def test_zip_input_gives_folder_and_rejects_path_traversal(tmp_path: Path) -> None:
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(CT_SMALL, "scans/ct.dcm")
        zf.writestr("scans/readme.txt", "not dicom")
    summary = deidentify_path(archive, tmp_path / "out", key=KEY)
    assert [f.output for f in summary.files] == ["scans/ct.dcm"]
    assert summary.skipped[0][0].endswith("scans/readme.txt")
    check_output(CT_SMALL, tmp_path / "out" / "scans" / "ct.dcm")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.write(MR_SMALL, "ok.dcm")
        zf.write(CT_SMALL, "../escape.dcm")
    with pytest.raises(InputError, match="unsafe path"):
        deidentify_path(evil, tmp_path / "evil_out", key=KEY)
    assert not (tmp_path / "evil_out").exists() and not (tmp_path / "escape.dcm").exists()


def test_unreadable_dicom_in_folder_aborts_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CT_SMALL, src / "good.dcm")
    (src / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    with pytest.raises(InputError, match=r"bad\.dcm"):
        deidentify_path(src, tmp_path / "out", key=KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_output_checks(tmp_path: Path) -> None:
    out = tmp_path / "out.dcm"
    out.write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"):
        deidentify_file(CT_SMALL, out, key=KEY)
    deidentify_file(CT_SMALL, out, key=KEY, overwrite=True)
    assert pydicom.dcmread(out).PatientIdentityRemoved == "YES"
    src = tmp_path / "in"
    shutil.copytree(SERIES_ROOT / "77654033" / "CR1", src)
    with pytest.raises(InputError, match="inside the input"):
        deidentify_path(src, src / "sub", key=KEY)
    with pytest.raises(InputError, match="differ"):
        deidentify_path(src, src, key=KEY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM file"):
        deidentify_path(tmp_path / "empty", tmp_path / "x", key=KEY)
    assert not (tmp_path / "x").exists()


# --- burned-in annotations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("modality", "burned_in", "warns"),
    [
        ("CT", None, False),
        ("CT", "YES", True),
        ("US", None, True),
        ("OT", "NO", True),
    ],
)
def test_burned_in_warning(modality: str, burned_in: str | None, warns: bool) -> None:
    ds = synthetic()
    ds.Modality = modality
    if burned_in:
        ds.BurnedInAnnotation = burned_in
    report = deidentify_dataset(ds, key=KEY)
    assert report.burned_in_risk is warns
    assert any("NOT scrubbed" in w for w in report.warnings) is warns


def test_phi_values_filters() -> None:
    ds = synthetic()
    ds.InstitutionName = "Acme"  # also inside the kept Manufacturer "Acme Scanners"
    values = phi_values(ds)
    assert "Acme" not in values and "M" not in values
    assert "Acme" in phi_values(ds, exclude_retained=False)
    assert "1.2.840.10008.5.1.4.1.1.2" not in values  # registry UIDs are not PHI


# --- property: random PHI never survives -----------------------------------------------

# No digits (UIDs), no A-F (hex pseudonyms) and none of the letters of medm3's own text,
# so a value can only be found in the output if it leaked.
_SAFE = "ghjkqvwxzGHJKQVWXZ" + "éßøжΩ"
_phi_text = st.text(alphabet=_SAFE, min_size=6, max_size=16)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=_phi_text,
    given_name=_phi_text,
    ident=_phi_text,
    free=_phi_text,
    nested=_phi_text,
    private=_phi_text,
)
def test_random_phi_never_survives(
    family: str, given_name: str, ident: str, free: str, nested: str, private: str
) -> None:
    ds = synthetic()
    ds.PatientName = f"{family}^{given_name}"
    ds.PatientID = ident
    ds.AccessionNumber = ident[::-1]
    ds.OtherPatientNames = [given_name + "x", family + "y"]
    ds.PatientAddress = f"{free} {nested}"
    ds.InstitutionName = free
    ds.StationName = nested
    ds.ReferringPhysicianName = f"{nested}^{free}"
    ds.StudyDescription = free
    ds.ImageComments = f"{family} {free}"
    ds.RequestAttributesSequence[0].RequestedProcedureID = nested
    ds.ReferencedSeriesSequence[0].PatientComments = nested
    ds.ReferencedSeriesSequence[0].PatientName = private
    ds.private_block(0x0009, "ACME 1.0")[0x01].value = private
    values = {family, given_name, ident, ident[::-1], free, nested, private}
    deidentify_dataset(ds, key=KEY)
    assert surviving(values, to_bytes(ds)) == []
