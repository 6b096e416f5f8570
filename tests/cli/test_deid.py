"""`m3 deid`: summary on success; one-line exit-2 errors that write nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.cli.helpers import assert_one_line_error as assert_input_error
from tests.cli.helpers import run

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
SERIES = CT_SMALL.parent / "dicomdirtests" / "77654033"


def test_deid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "ct.dcm"
    code, stdout, err = run(["deid", str(CT_SMALL), str(out), "--key", "k"], capsys)
    assert code == 0, err
    assert stdout.startswith(f"de-identified 1 file(s) -> {out}")
    assert "0 warning(s)" in stdout and "random key" not in stdout
    ds = pydicom.dcmread(out)
    assert ds.PatientIdentityRemoved == "YES" and "JFK" not in str(ds.get("InstitutionName"))
    assert [p.name for p in out.parent.iterdir()] == ["ct.dcm"]  # no temp file left


def test_deid_folder_reports_skipped_files_and_random_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDM3_DEID_KEY", raising=False)
    src = tmp_path / "in"
    shutil.copytree(SERIES / "CR1", src / "CR1")
    (src / "report.txt").write_text("Doe, John")
    code, stdout, err = run(["deid", str(src), str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "de-identified 1 file(s)" in stdout
    assert "skipped 1 file(s)" in stdout and "report.txt: not DICOM" in stdout
    assert "random key" in stdout
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["6154", "CR1"]


def test_deid_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ct.dcm"
    out.write_bytes(b"keep me")
    code, _, err = run(["deid", str(CT_SMALL), str(out)], capsys)
    assert_input_error(code, err, "already exists")
    assert out.read_bytes() == b"keep me"
    code, _, err = run(["deid", str(CT_SMALL), str(out), "--overwrite"], capsys)
    assert code == 0, err
    assert pydicom.dcmread(out).PatientIdentityRemoved == "YES"


def test_deid_not_dicom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("Patient: John Doe")
    out = tmp_path / "out.dcm"
    code, _, err = run(["deid", str(bad), str(out)], capsys)
    assert_input_error(code, err, "notes.txt")
    assert "not a DICOM file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_deid_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["deid", str(tmp_path / "nope.dcm"), str(tmp_path / "out")], capsys)
    assert_input_error(code, err, "nope.dcm")
    assert list(tmp_path.iterdir()) == []


def test_deid_unreadable_dicom_in_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CT_SMALL, src / "a.dcm")
    (src / "b.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    code, _, err = run(["deid", str(src), str(tmp_path / "out")], capsys)
    assert_input_error(code, err, "b.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_deid_output_is_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "ct.dcm"
    shutil.copy(CT_SMALL, src)
    code, _, err = run(["deid", str(src), str(src), "--overwrite"], capsys)
    assert_input_error(code, err, "differ")
    assert src.read_bytes() == CT_SMALL.read_bytes()
