"""References and credentials, without a server (these run where Orthanc is not installed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medm3.dicomweb.config import settings_for
from medm3.dicomweb.url import is_dicomweb_reference, parse_reference
from medm3.errors import InputError

ROOT = "https://pacs.example.org/dicom-web"


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start without the Orthanc test user of the folder's conftest (env wins over files)."""
    for var in ("MEDM3_DICOMWEB_USER", "MEDM3_DICOMWEB_PASSWORD", "MEDM3_DICOMWEB_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def test_parse_study_series_and_root() -> None:
    ref = parse_reference(f"dicomweb+{ROOT}/studies/1.2.3/series/4.5.6")
    assert (ref.root, ref.study_uid, ref.series_uid) == (ROOT, "1.2.3", "4.5.6")
    assert ref.reference == f"dicomweb+{ROOT}/studies/1.2.3/series/4.5.6"
    assert ref.host == "pacs.example.org"
    root = parse_reference(f"dicomweb+{ROOT}/", need_study=False)
    assert (root.root, root.study_uid) == (ROOT, None)
    # pathlib collapses "//": the reference still parses to the same thing
    mangled = Path(f"dicomweb+{ROOT}/studies/1.2.3")
    assert is_dicomweb_reference(mangled)
    assert parse_reference(mangled) == parse_reference(f"dicomweb+{ROOT}/studies/1.2.3")
    assert not is_dicomweb_reference("scan.nii.gz") and not is_dicomweb_reference(42)
    local = parse_reference("dicomweb+http://127.0.0.1:8042/dicom-web/studies/1.2")
    assert local.root == "http://127.0.0.1:8042/dicom-web"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"dicomweb+{ROOT}/studies/1.2.x", "'1.2.x' is not a valid StudyInstanceUID"),
        (f"dicomweb+{ROOT}/studies/", "without a StudyInstanceUID"),
        (f"dicomweb+{ROOT}/studies/1.2/instances/3", "expected .../studies/STUDY_UID"),
        (f"dicomweb+{ROOT}/studies/1.2?x=1", "must not have a query"),
        ("dicomweb+https://u:p@pacs.example.org/dicom-web/studies/1.2", "credentials do not"),
        ("dicomweb+http://pacs.example.org/dicom-web/studies/1.2", "plain http is only allowed"),
        (f"{ROOT}/studies/1.2", "not a DICOMweb reference"),
    ],
)
def test_bad_references(text: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle.replace("?", r"\?").replace(".", r"\.")):
        parse_reference(text)
    if "u:p@" in text:
        with pytest.raises(InputError) as info:
            parse_reference(text)
        assert "u:p" not in str(info.value)  # the secret is not echoed


def test_http_allowed_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDM3_DICOMWEB_ALLOW_HTTP", "1")
    assert parse_reference("dicomweb+http://pacs.lan/dicom-web/studies/1.2").study_uid == "1.2"


def test_settings_environment_then_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "dicomweb.json"
    servers = {
        "https://pacs.example.org": {"username": "outer", "password": "a"},
        ROOT: {"token": "s3cr3t-tok-9", "ca_bundle": str(config)},
    }
    config.write_text(json.dumps({"servers": servers}))
    os.chmod(config, 0o600)
    monkeypatch.setenv("MEDM3_DICOMWEB_CONFIG", str(config))
    found = settings_for(ROOT)  # the longest matching root wins
    assert found.token == "s3cr3t-tok-9"
    assert found.ca_bundle == found.origin == str(config)
    assert "s3cr3t" not in repr(found)
    assert settings_for("https://pacs.example.org/other").username == "outer"
    assert settings_for("https://elsewhere.org/dicom-web").username is None
    monkeypatch.setenv("MEDM3_DICOMWEB_USER", "envuser")
    monkeypatch.setenv("MEDM3_DICOMWEB_PASSWORD", "envpw")
    found = settings_for(ROOT)
    assert (found.username, found.token, found.origin) == ("envuser", None, "environment")
    monkeypatch.delenv("MEDM3_DICOMWEB_PASSWORD")
    with pytest.raises(InputError, match="MEDM3_DICOMWEB_PASSWORD is not"):
        settings_for(ROOT)


def test_bad_config_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "dicomweb.json"
    monkeypatch.setenv("MEDM3_DICOMWEB_CONFIG", str(config))
    with pytest.raises(InputError, match="config file not found"):
        settings_for(ROOT)
    config.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        settings_for(ROOT)
    config.write_text(json.dumps({"servers": [ROOT]}))
    with pytest.raises(InputError, match=r'must be \{"servers"'):
        settings_for(ROOT)
    config.write_text(json.dumps({"servers": {ROOT: {"ca_bundle": "/no/such/ca.pem"}}}))
    with pytest.raises(InputError, match="CA bundle for the DICOMweb server not found"):
        settings_for(ROOT)
