"""``POST /v1/files`` by DICOMweb reference (``m3 serve --dicomweb``) against a real Orthanc.

* A reference upload of the CT series must equal a multipart upload of the
  same series' files (decoded array, de-identified headers, the file object's
  facts), and a chat completion on the returned file id must work.
* References outside the configured root (another host or port, a port that
  is not one, a ``..`` segment, userinfo, percent-encodings) are refused
  before any request: a recording listener on its own loopback port stands in
  for the target and must see no connection (and does see one for an allowed
  reference, so the check can fail).
* PACS failures (down, wrong credentials, unknown UID, non-image series,
  several series without ``series``, over the limits) are one-line JSON
  errors without URLs, paths or credentials.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from medm3.errors import InputError
from tests.dicomweb.conftest import PASSWORD, Orthanc, free_port, need, pydicom_series
from tests.serve import conftest as _serve

make_app = _serve.make_app
client_for = _serve.client_for
segment_then_answer = _serve.segment_then_answer

pytestmark = pytest.mark.usefixtures("fake_experts")


class Recorder:
    """A loopback TCP listener that counts connections and answers HTTP 500."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


def _by_reference(client: Any, reference: Any, **extra: Any) -> Any:
    return client.post("/v1/files", json={"dicomweb": reference, **extra})


def _error(response: Any, status: int, code: str | None = None) -> str:
    """The error message of a one-line JSON error with ``status`` (and ``code``)."""
    assert response.status_code == status, response.text
    assert "\n" not in response.text
    body = json.loads(response.text)["error"]
    if code is not None:
        assert body["code"] == code, body
    for secret in (PASSWORD, "/tmp/", "Traceback"):
        assert secret not in body["message"], body
    return str(body["message"])


def _members(data: bytes) -> list[Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in sorted(zf.namelist())]


def test_reference_upload_equals_a_local_upload_then_chat(
    pacs: Orthanc, client_for: Any, tmp_path: Path
) -> None:
    ct = need(pacs, "ct")
    client = client_for(segment_then_answer, dicomweb="dicomweb+" + pacs.root, deid_key="k-42")
    svc = client.app.state.service

    got = _by_reference(client, pacs.ref(ct["study"]))  # the study: its one image series
    assert got.status_code == 200, got.text
    remote = got.json()
    archive = tmp_path / "local.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, path in enumerate(sorted(ct["folder"].iterdir())):
            zf.write(path, f"{i:05d}.dcm")
    local = client.post(
        "/v1/files", files={"file": ("local.zip", archive.read_bytes(), "application/zip")}
    ).json()

    assert remote["id"] != local["id"] and remote["filename"] == "pacs-series.zip"
    facts = {k: v for k, v in remote["medm3"].items() if k != "sha256"}
    assert facts == {k: v for k, v in local["medm3"].items() if k != "sha256"}
    assert facts["deidentified"] and facts["modality"] == "CT" and facts["shape"] == [122, 101, 30]
    np.testing.assert_array_equal(
        svc.files.image(remote["id"]).array, svc.files.image(local["id"]).array
    )
    mine = _members(client.get(f"/v1/files/{remote['id']}/content").content)
    theirs = _members(client.get(f"/v1/files/{local['id']}/content").content)
    by_position = {tuple(ds.ImagePositionPatient): ds for ds in theirs}
    assert len(mine) == len(theirs) == 30
    for ds in mine:
        other = by_position[tuple(ds.ImagePositionPatient)]
        assert "Pacs" not in str(ds.PatientName) and ds.PatientID != "PACS-CT-0001"
        for keyword in (
            "PatientName",
            "PatientID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "StudyDate",
            "InstitutionName",
            "AccessionNumber",
        ):
            assert ds.get(keyword) == other.get(keyword), keyword

    answer = client.post(
        "/v1/chat/completions",
        json={
            "model": "mock",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Where is it bright?"},
                        {"type": "image_url", "image_url": {"url": f"medm3://file/{remote['id']}"}},
                    ],
                }
            ],
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "The bright region is shown in red."


def test_series_choice_and_panel_share_the_path(pacs: Orthanc, client_for: Any) -> None:
    from medm3.serve.ui_pacs import PacsHandlers

    study, ct5n, heads = pydicom_series(pacs, "CT5N")  # the study holds CT2N and CT5N
    client = client_for(dicomweb="dicomweb+" + pacs.root)
    message = _error(_by_reference(client, pacs.ref(study)), 400, "invalid_input")
    assert "holds 2 DICOM series" in message and pacs.url not in message
    chosen = _by_reference(client, pacs.ref(study), series=ct5n)
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["medm3"]["shape"][2] == len(heads)
    panel = PacsHandlers(client.app.state.service, "dicomweb+" + pacs.root)
    opened = client.get(f"/v1/files/{panel.open_series(pacs.ref(study, ct5n))}").json()
    facts = {k: v for k, v in chosen.json()["medm3"].items() if k != "sha256"}
    assert {k: v for k, v in opened["medm3"].items() if k != "sha256"} == facts


def test_foreign_references_are_refused_before_any_request(
    client_for: Any, recorder: Recorder
) -> None:
    # Needs no Orthanc: the allowed root is a free port (a wrongly accepted reference to
    # it would be a 503, not the expected 403/400), the recorder stands for the target.
    pytest.importorskip("dicomweb_client", reason="the dicomweb extra is not installed")
    study = "1.2.3.4"
    port, orthanc_port = recorder.port, free_port()
    client = client_for(dicomweb=f"dicomweb+http://127.0.0.1:{orthanc_port}/dicom-web")
    refused = {
        f"dicomweb+http://127.0.0.1:{port}/dicom-web/studies/{study}": 403,  # another port
        f"dicomweb+http://localhost:{port}/dicom-web/studies/{study}": 403,  # another host
        f"dicomweb+http://127.0.0.1:{port}/other/studies/{study}": 403,
        f"dicomweb+http://127.0.0.1:{orthanc_port}/other/studies/{study}": 403,  # another path
        f"dicomweb+http://127.0.0.1:{orthanc_port}/dicom-webx/studies/{study}": 403,
        f"dicomweb+http://127.0.0.1:{orthanc_port}/studies/{study}": 403,
        f"dicomweb+https://127.0.0.1:{orthanc_port}/dicom-web/studies/{study}": 403,  # scheme
        f"dicomweb+http://127.0.0.1:{port}.evil.example/dicom-web/studies/{study}": 400,
        f"dicomweb+http://127.0.0.1:{orthanc_port}@127.0.0.1:{port}/dicom-web/studies/{study}": 400,
        f"dicomweb+http://u:p@127.0.0.1:{port}/dicom-web/studies/{study}": 400,
        f"dicomweb+http://127.0.0.1:{port}/dicom-web/studies/{study}#x": 400,
        f"dicomweb+http://127.0.0.1:{port}/dicom-web/studies/{study}?a=1": 400,
        f"dicomweb+http://127.0.0.1:{port}%2F/dicom-web/studies/{study}": 400,
        f"dicomweb+http://127.0.0.1:{port}\\@127.0.0.1:{orthanc_port}/dicom-web/studies/1": 400,
        "http://127.0.0.1:1/dicom-web/studies/1.2": 400,  # not a dicomweb+ reference
        "file:///etc/passwd": 400,
        "": 400,
        17: 400,
    }
    for reference, status in refused.items():
        code = "dicomweb_forbidden" if status == 403 else None
        _error(_by_reference(client, reference), status, code)
    # The configured root is the recorder: tricks on its own host and port are refused too ...
    rooted = client_for(dicomweb=f"dicomweb+http://127.0.0.1:{port}/dicom-web")
    for reference in (
        f"dicomweb+http://127.0.0.1:{port}/dicom-web/../other/studies/{study}",
        f"dicomweb+http://127.0.0.1:{port}/dicom-web/./studies/{study}",
        f"dicomweb+http://127.0.0.1:{port}//dicom-web/studies/{study}",
        f"dicomweb+http://127.0.0.1:{port}/dicom-web/%2e%2e/studies/{study}",
        f"dicomweb+http://medm3-test:{PASSWORD}@127.0.0.1:{port}/dicom-web/studies/{study}",
        f"dicomweb+http://127.0.0.1:{port}/dicom-web/studies/{study}/series/x/../../1",
    ):
        _error(_by_reference(rooted, reference), 400)
    assert recorder.connections == 0
    # ... and an allowed one reaches it (so the count above can fail); its 500 is a 502 here.
    same = f"dicomweb+HTTP://127.0.0.1:{port}/dicom-web/studies/{study}"
    message = _error(_by_reference(rooted, same), 502, "pacs_error")
    assert message.startswith("PACS: the DICOMweb server answered HTTP 500")
    assert str(port) not in message and recorder.connections >= 1


def test_pacs_errors(
    pacs: Orthanc, client_for: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ct = need(pacs, "ct")
    study, ct5n, _ = pydicom_series(pacs, "CT5N")

    message = _error(_by_reference(client_for(), pacs.ref(study)), 400, "dicomweb_not_configured")
    assert "--dicomweb" in message

    down_root = f"http://127.0.0.1:{free_port()}/dicom-web"
    down = client_for(dicomweb="dicomweb+" + down_root)
    message = _error(_by_reference(down, f"dicomweb+{down_root}/studies/{study}"), 503)
    assert "cannot reach the DICOMweb server" in message

    client = client_for(
        dicomweb="dicomweb+" + pacs.root, max_image_mb=1
    )  # < the CT: 122*101*30 samples * 4 bytes
    _error(_by_reference(client, pacs.ref("1.2.3.4.5")), 404, "dicomweb_not_found")
    _error(_by_reference(client, pacs.ref(study, "1.2.3.4.5")), 404, "dicomweb_not_found")
    for kind in ("sr", "pr"):
        non_image = str(ct[kind].SeriesInstanceUID)
        message = _error(_by_reference(client, pacs.ref(ct["study"], non_image)), 400)
        assert "holds no images" in message
    message = _error(_by_reference(client, pacs.ref(ct["study"])), 413, "image_too_large")
    assert "refused before download" in message
    bad = _by_reference(client, pacs.ref(study, ct5n), series=ct5n + ".9")
    _error(bad, 400)
    assert not [p for p in (tmp_path / "data" / "tmp").iterdir()]

    monkeypatch.setenv("MEDM3_DICOMWEB_PASSWORD", "wrong-password")
    message = _error(_by_reference(client, pacs.ref(study, ct5n)), 502, "pacs_error")
    assert "HTTP 401" in message and "wrong-password" not in message
    for body in ({"dicomweb": pacs.ref(study), "extra": 1}, ["x"], {"series": "1"}):
        _error(client.post("/v1/files", json=body), 400)
    _error(client.post("/v1/files", json={"dicomweb": pacs.ref(study), "series": True}), 400)
    many = client.post(
        "/v1/files",
        content=b'{"dicomweb": "' + b"1" * 20000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    _error(many, 413)


def test_reference_normalisation_against_the_root() -> None:
    from medm3.dicomweb.url import ForeignReferenceError, reference_under_root

    root = "dicomweb+https://pacs.example.org/dicom-web/"
    for same in (
        "dicomweb+https://PACS.example.org:443/dicom-web/studies/1.2/series/1.2.3",
        "DICOMWEB+HTTPS://pacs.example.org/dicom-web/studies/1.2/series/1.2.3",
    ):
        ref = reference_under_root(same, root)
        assert (ref.root, ref.study_uid, ref.series_uid) == (
            "https://pacs.example.org/dicom-web",
            "1.2",
            "1.2.3",
        )
    for foreign in (
        "dicomweb+https://pacs.example.org:8443/dicom-web/studies/1.2",
        "dicomweb+https://pacs.example.org.evil.example/dicom-web/studies/1.2",
        "dicomweb+https://pacs.example.org/dicom-web-x/studies/1.2",
        "dicomweb+https://pacs.example.org/dicom-web/series/1.2",
    ):
        with pytest.raises(ForeignReferenceError):
            reference_under_root(foreign, root)
    for malformed in (
        "dicomweb+https://pacs.example.org/dicom-web/studies/1.2/series",
        "dicomweb+https://pacs.example.org/dicom-web/studies/x y",
        "dicomweb+https://pacs.example.org/dicom-web/studies/1.2\u00e9",
        "dicomweb+https:pacs.example.org/dicom-web/studies/1.2",
    ):
        with pytest.raises(InputError) as info:
            reference_under_root(malformed, root)
        assert not isinstance(info.value, ForeignReferenceError)
