"""Bad input against a real Orthanc: one clear line each, nothing partial anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medm3.dicomweb.fetch import cache_dir
from medm3.errors import InputError
from medm3.imaging.io import load_image
from tests.cli.helpers import assert_one_line_error, run
from tests.dicomweb.conftest import PASSWORD, USER, Orthanc, free_port, need, pydicom_series


def cache_is_clean(series_uid: str | None = None) -> bool:
    """No staging folder, and (when given) nothing of ``series_uid`` in the cache."""
    root = cache_dir()
    if not root.exists():
        return True
    if any(p.name.startswith(".partial") for p in root.iterdir()):
        return False
    return series_uid is None or not (root / series_uid).exists()


def test_server_down_or_wrong_port(capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web/studies/1.2.3"
    code, _, err = run(["info", ref], capsys)
    assert_one_line_error(code, err, "cannot reach the DICOMweb server")
    assert "Connection refused" in err and "127.0.0.1" in err
    assert cache_is_clean()


def test_wrong_credentials(
    pacs: Orthanc, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study, series, _ = pydicom_series(pacs, "CT5N")
    monkeypatch.setenv("MEDM3_DICOMWEB_PASSWORD", "wrong")
    code, _, err = run(["info", pacs.ref(study, series)], capsys)
    assert_one_line_error(code, err, "refused the credentials (HTTP 401)")
    assert "wrong" not in err  # the secret is never printed
    monkeypatch.delenv("MEDM3_DICOMWEB_USER")
    monkeypatch.delenv("MEDM3_DICOMWEB_PASSWORD")
    code, _, err = run(["info", pacs.ref(study, series)], capsys)
    assert_one_line_error(code, err, "HTTP 401")
    assert cache_is_clean(series)


def test_credentials_from_a_private_config_file(
    pacs: Orthanc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    study, series, heads = pydicom_series(pacs, "CT5N")
    monkeypatch.delenv("MEDM3_DICOMWEB_USER")
    monkeypatch.delenv("MEDM3_DICOMWEB_PASSWORD")
    config = tmp_path / "dicomweb.json"
    config.write_text(
        json.dumps({"servers": {pacs.root: {"username": USER, "password": PASSWORD}}})
    )
    monkeypatch.setenv("MEDM3_DICOMWEB_CONFIG", str(config))
    os.chmod(config, 0o644)
    with pytest.raises(InputError, match="other users can read it; run: chmod 600"):
        load_image(pacs.ref(study, series))
    os.chmod(config, 0o600)
    assert load_image(pacs.ref(study, series)).spatial_shape[2] == len(heads)


def test_unknown_study_and_series(pacs: Orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["info", pacs.ref("1.2.826.0.1.3680043.8.498.999")], capsys)
    assert_one_line_error(code, err, "no study 1.2.826.0.1.3680043.8.498.999 on the DICOMweb")
    study, _, _ = pydicom_series(pacs, "CT5N")
    code, _, err = run(["info", pacs.ref(study, "1.2.3.4.5")], capsys)
    assert_one_line_error(code, err, "no series 1.2.3.4.5 in study")
    assert "[0]" in err and "[1]" in err  # it lists what the study holds
    code, _, err = run(["info", pacs.root + "/studies/not-a-uid"], capsys)
    assert code != 0  # without the dicomweb+ prefix it is a (missing) file name
    code, _, err = run(["info", "dicomweb+" + pacs.root + "/studies/not-a-uid"], capsys)
    assert_one_line_error(code, err, "'not-a-uid' is not a valid StudyInstanceUID")
    assert cache_is_clean()


@pytest.mark.parametrize("kind", ["sr", "pr"])
def test_non_image_series(pacs: Orthanc, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    ct = need(pacs, "ct")
    obj = ct[kind]
    code, _, err = run(["info", pacs.ref(ct["study"], str(obj.SeriesInstanceUID))], capsys)
    assert_one_line_error(code, err, "series holds no images (SOP classes: ")
    assert obj.SOPClassUID.name in err
    assert cache_is_clean(str(obj.SeriesInstanceUID))


def test_several_series_without_choice(pacs: Orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    study, _, _ = pydicom_series(pacs, "CT5N")
    code, _, err = run(["info", pacs.ref(study)], capsys)
    assert_one_line_error(code, err, "holds 2 DICOM series; choose one")
    assert "--series" in err
    assert cache_is_clean()


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [("MEDM3_MAX_PIXELS", "100000", "MEDM3_MAX_PIXELS"), ("MEDM3_MAX_FILES", "10", "30 instances")],
)
def test_huge_series_refused_before_download(
    pacs: Orthanc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    var: str,
    value: str,
    needle: str,
) -> None:
    ct = need(pacs, "ct")
    from dicomweb_client.api import DICOMwebClient

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded an instance of a series over the limits")

    monkeypatch.setattr(DICOMwebClient, "retrieve_instance", refuse)
    monkeypatch.setenv(var, value)
    code, _, err = run(["info", pacs.ref(ct["study"])], capsys)
    assert_one_line_error(code, err, "refused before download")
    assert needle in err
    assert cache_is_clean(ct["series"])


def test_tls_error(pacs: Orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    study, series, _ = pydicom_series(pacs, "CT5N")
    ref = pacs.ref(study, series).replace("dicomweb+http://", "dicomweb+https://")
    code, _, err = run(["info", ref], capsys)
    assert_one_line_error(code, err, "TLS error while")
    assert "MEDM3_DICOMWEB_CA_BUNDLE" in err
    assert cache_is_clean(series)


def test_failed_retrieval_leaves_nothing_in_the_cache(
    pacs: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient

    study, series, _ = pydicom_series(pacs, "CT5N")
    real = DICOMwebClient.retrieve_instance
    calls = []

    def flaky(self: DICOMwebClient, *args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 3:  # the connection drops in the middle of the series
            raise requests.exceptions.ConnectionError("Connection reset by peer")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DICOMwebClient, "retrieve_instance", flaky)
    with pytest.raises(InputError, match="cannot reach the DICOMweb server while retrieving"):
        load_image(pacs.ref(study, series))
    assert len(calls) == 3
    assert cache_is_clean(series)


def test_references_refused_without_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="credentials do not belong in the reference"):
        load_image("dicomweb+https://user:pw@pacs.example.org/dicom-web/studies/1.2.3")
    with pytest.raises(InputError, match="plain http is only allowed"):
        load_image("dicomweb+http://pacs.example.org/dicom-web/studies/1.2.3")
    with pytest.raises(InputError, match="names no study"):
        load_image("dicomweb+https://pacs.example.org/dicom-web")


def test_store_needs_a_dicomweb_image(ct_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["experts", "run", "measure", str(ct_path), "--store"], capsys)
    assert_one_line_error(code, err, "storing results needs an image read from a DICOMweb server")


@pytest.mark.parametrize(
    ("raised", "kind", "text"),
    [
        ("ConnectTimeout", "PacsUnavailableError", "timed out connecting to the DICOMweb server"),
        ("ReadTimeout", "PacsUnavailableError", "the DICOMweb server did not answer in time"),
        ("ConnectionError", "PacsUnavailableError", "cannot reach the DICOMweb server"),
    ],
)
def test_timeouts_and_unreachable_servers_are_told_apart(raised: str, kind: str, text: str) -> None:
    import requests

    from medm3.dicomweb.client import server_call

    with pytest.raises(InputError) as err, server_call("https://pacs.test/dicom-web", "searching"):
        raise getattr(requests.exceptions, raised)("boom")
    assert type(err.value).__name__ == kind
    assert err.value.message.startswith(text) and "while searching" in err.value.message
