"""API keys, the open-bind guard, path traversal, upload caps, type sniffing, DICOM de-id."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from medm3.errors import InputError
from medm3.serve.auth import is_loopback, key_from_headers, key_is_valid


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_key_helpers() -> None:
    assert key_from_headers("Bearer abc", None) == "abc"
    assert key_from_headers("Basic abc", "k") == "k"
    assert key_from_headers(None, None) is None
    assert key_is_valid(None, ())
    assert key_is_valid("b", ("a", "b")) and not key_is_valid("c", ("a", "b"))
    assert not key_is_valid(None, ("a",))


def test_open_bind_without_key_refuses_to_start(make_app: Any) -> None:
    with pytest.raises(InputError, match=r"refusing to listen on 0\.0\.0\.0 without an API key"):
        make_app(host="0.0.0.0")


def test_cli_refuses_open_bind_before_loading(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    from medm3.cli.main import main

    monkeypatch.delenv("MEDM3_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), "--no-ui"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("m3: error: refusing to listen on 0.0.0.0 without an API key")
    assert not (tmp_path / "d").exists()


def test_api_keys(client_for: Any) -> None:
    client = client_for(host="0.0.0.0", api_keys=("s3cret", "other"))
    assert client.get("/health").status_code == 200  # liveness needs no key
    r = client.get("/v1/models")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.post(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer wrong"},
        json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": "other"}).status_code == 200
    assert client.get("/v1/outputs/sess-1/archive.zip").status_code == 401


def _upload(client: Any, name: str, data: bytes) -> Any:
    return client.post("/v1/files", files={"file": (name, data)})


def test_traversal_attempts_never_read_outside(
    client_for: Any, tmp_path: Path, png_bytes: bytes
) -> None:
    client = client_for()
    service = client.app.state.service
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    file_id = _upload(client, "a.png", png_bytes).json()["id"]
    # a link planted inside the outputs folder that leads outside
    (service.root / "outputs" / "sess-x").mkdir(parents=True)
    os.symlink(secret, service.root / "outputs" / "sess-x" / "link.png")
    os.symlink(tmp_path, service.root / "library" / "escape")
    paths = [
        "/v1/files/..%2F..%2Fsecret.txt",
        "/v1/files/..%2F..%2Fsecret.txt/content",
        "/v1/files/%2e%2e/content",
        "/v1/outputs/sess-x/link.png",
        "/v1/outputs/sess-x/..%2F..%2F..%2Fsecret.txt",
        "/v1/outputs/sess-x/%2e%2e/%2e%2e/medm3.sqlite3",
        "/v1/outputs/..%2F..%2F/secret.txt",
        "/v1/outputs/%2e%2e/medm3.sqlite3",
        "/v1/outputs/sess-x/%2Fetc%2Fpasswd",
        f"/v1/outputs/{file_id}/..%2F..%2Ffiles%2F{file_id}%2Fimage.png",
        "/v1/outputs/..%2F..%2F/archive.zip",
        "/v1/sessions/..%2F..%2Fsecret",
    ]
    for path in paths:
        r = client.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert b"TOP SECRET" not in r.content and b"SQLite" not in r.content, path
    refs = [
        {"type": "image_url", "image_url": {"url": "medm3://file/../../secret.txt"}},
        {"type": "image_url", "image_url": {"url": f"file://{secret}"}},
        {"type": "image_url", "image_url": {"url": str(secret)}},
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}},
        {"type": "file", "file": {"file_id": "../../secret.txt"}},
        {"type": "file", "file": {"file_id": "file-0123456789abcdef01234567"}},
    ]
    for ref in refs:
        body = {
            "model": "mock",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "read it"}, ref]}],
        }
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code in (400, 404), (ref, r.text)
    for sid in ("../../x", "a/b", "..", ""):
        body = {"model": "mock", "session_id": sid, "messages": [{"role": "user", "content": "x"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 400
    r = client.post("/v1/experts/measure/run", json={"file_id": "../../secret.txt"})
    assert r.status_code == 400
    # a tampered database row cannot point outside either
    rec = service.store.get_file(file_id)
    rec.id, rec.path = "file-" + "f" * 24, "../secret.txt"
    service.store.add_file(rec)
    assert client.get(f"/v1/files/{rec.id}/content").status_code == 404
    assert "escape/secret.txt" not in service.files.library()
    with pytest.raises(Exception, match="no such"):
        service.files.register_library("escape/secret.txt")
    with pytest.raises(Exception, match="no such"):
        service.files.register_library("../medm3.sqlite3")


def test_oversize_uploads_and_bodies_are_refused(client_for: Any, png_bytes: bytes) -> None:
    client = client_for(max_upload_mb=0.02, max_json_mb=1)  # 20 KiB uploads, 1 MiB bodies
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(40_000)
    r = _upload(client, "big.png", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Any:  # no Content-Length: refused while streaming
        boundary = b"XyZ"
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="b.png"\r\n\r\n'
        for _ in range(50):
            yield os.urandom(1000)
        yield b"\r\n--" + boundary + b"--\r\n"

    r = client.post(
        "/v1/files", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=XyZ"}
    )
    assert r.status_code == 413
    tmp = client.app.state.service.root / "tmp"
    assert list(tmp.iterdir()) == []
    body = {"model": "mock", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 413
    assert _upload(client, "ok.png", png_bytes).status_code == 200


def test_type_sniffing(client_for: Any, ct_path: Path) -> None:
    client = client_for()
    r = _upload(client, "notes.nii.gz", b"patient name: Jane Doe\n" * 10)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_file_type"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "no dicom here")
    assert _upload(client, "series.zip", buf.getvalue()).status_code == 415
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.dcm", b"\0" * 128 + b"DICM")
    assert _upload(client, "series.zip", buf.getvalue()).status_code == 400
    header = gzip.decompress(ct_path.read_bytes())[:400]  # NIfTI magic, no voxels
    r = _upload(client, "cut.nii", header)
    assert r.status_code == 400, r.text
    assert str(client.app.state.service.root) not in r.text
    # the stored name comes from the content, not from the client
    r = _upload(client, "scan.png", ct_path.read_bytes())
    assert r.status_code == 200 and r.json()["medm3"]["kind"] == "volume"
    stored = client.app.state.service.files.resolve(r.json()["id"])
    assert stored.name == "image.nii.gz"
    assert not list((client.app.state.service.root / "files").glob("*/*.png"))


def test_dicom_is_deidentified_on_arrival(client_for: Any, cxr_mono1_path: Path) -> None:
    import pydicom

    from medm3.imaging.deid import phi_values

    original = phi_values(pydicom.dcmread(cxr_mono1_path))
    assert original, "the sample DICOM should carry identifying values"
    client = client_for()
    r = _upload(client, "patient.dcm", cxr_mono1_path.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["medm3"]["deidentified"] is True
    data = client.get(f"/v1/files/{r.json()['id']}/content").content
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.get("PatientIdentityRemoved") == "YES"
    assert not phi_values(ds, exclude_retained=True) & original
    tmp = client.app.state.service.root / "tmp"
    assert list(tmp.iterdir()) == []  # the original bytes are not kept


def test_no_deid_keeps_dicom(client_for: Any, cxr_mono1_path: Path) -> None:
    client = client_for(deid=False)
    r = _upload(client, "patient.dcm", cxr_mono1_path.read_bytes())
    assert r.status_code == 200 and r.json()["medm3"]["deidentified"] is False
    data = client.get(f"/v1/files/{r.json()['id']}/content").content
    assert data == cxr_mono1_path.read_bytes()


def test_dicom_zip_is_deidentified_and_renamed(client_for: Any, cxr_mono1_path: Path) -> None:
    import pydicom

    from medm3.imaging.deid import phi_values

    original = phi_values(pydicom.dcmread(cxr_mono1_path))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Doe^Jane/series1/IM0001.dcm", cxr_mono1_path.read_bytes())
    client = client_for()
    r = client.post("/v1/files", files={"file": ("study.zip", buf.getvalue())})
    assert r.status_code == 200, r.text
    meta = r.json()["medm3"]
    assert meta["format"] == "dicom_zip" and meta["deidentified"] is True
    assert meta["deid"]["files"] == 1
    data = client.get(f"/v1/files/{r.json()['id']}/content").content
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (name,) = zf.namelist()
        assert "Doe" not in name and name.startswith("2.25.")
        ds = pydicom.dcmread(io.BytesIO(zf.read(name)))
    assert not phi_values(ds) & original
