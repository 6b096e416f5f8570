"""``m3 dicomweb ls`` against a real Orthanc, checked against Orthanc's own REST API."""

from __future__ import annotations

import json

import pytest

from tests.cli.helpers import assert_one_line_error, run
from tests.dicomweb.conftest import Orthanc, need, pydicom_series


def orthanc_studies(pacs: Orthanc, query: dict[str, str]) -> set[str]:
    """StudyInstanceUIDs Orthanc itself finds for ``query``."""
    found = pacs.rest(
        "POST", "/tools/find", json={"Level": "Study", "Query": query, "Expand": True}
    )
    return {s["MainDicomTags"]["StudyInstanceUID"] for s in found}


def test_ls_all_and_by_patient(pacs: Orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["dicomweb", "ls", "dicomweb+" + pacs.root, "--json"], capsys)
    assert code == 0, err
    listed = json.loads(out)
    assert {s["study_uid"] for s in listed} == orthanc_studies(pacs, {})
    study, series, heads = pydicom_series(pacs, "CT5N")
    entry = next(s for s in listed if s["study_uid"] == study)
    row = next(r for r in entry["series"] if r["series_uid"] == series)
    assert row["instances"] == len(heads) and row["modality"] == "CT"

    ct = need(pacs, "ct")
    code, out, err = run(
        ["dicomweb", "ls", "dicomweb+" + pacs.root, "--patient", "PACS-CT-0001"], capsys
    )
    assert code == 0, err
    assert f"study {ct['study']}  patient PACS-CT-0001  date 20240102" in out
    assert f"[0] {ct['series']} CT #3 'abdomen 3 mm' (30 instances)" in out
    assert f"[-] {ct['sr'].SeriesInstanceUID} SR" in out  # listed, but never read as an image
    assert out.count("\nstudy ") + out.startswith("study ") == 1


def test_ls_by_modality_and_one_study(pacs: Orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["dicomweb", "ls", "dicomweb+" + pacs.root, "--modality", "CT", "--json"], capsys
    )
    assert code == 0, err
    assert {s["study_uid"] for s in json.loads(out)} == orthanc_studies(
        pacs, {"ModalitiesInStudy": "CT"}
    )
    study, _, _ = pydicom_series(pacs, "CT5N")
    code, out, err = run(["dicomweb", "ls", pacs.ref(study)], capsys)
    assert code == 0, err
    assert "[0]" in out and "[1]" in out and "[2]" not in out


def test_ls_errors(pacs: Orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["dicomweb", "ls", pacs.root], capsys)
    assert_one_line_error(code, err, "not a DICOMweb reference")
