"""HTTPS: the real Orthanc behind a TLS proxy with a self-signed certificate (openssl tool).

Without the certificate authority the connection fails with one line saying
why and how to fix it; with ``MEDM3_DICOMWEB_CA_BUNDLE`` it works. A bearer
token travels in the Authorization header (Orthanc itself only knows basic
authentication, so the request is refused with 401: the point is the header).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medm3.errors import InputError
from medm3.imaging.io import load_image
from tests.cli.helpers import assert_one_line_error, run
from tests.dicomweb.conftest import Orthanc, pydicom_series


class TLSProxy:
    """A TLS-terminating TCP proxy on 127.0.0.1 in front of the HTTP Orthanc.

    (Debian's Orthanc 1.10 crashes on its first HTTPS handshake with ``SslEnabled``
    here, so TLS is put in front of it, as a hospital's reverse proxy would.)
    """

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target_port = target_port
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the client refused our certificate
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.close()

        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)

    def close(self) -> None:
        self.stopped = True
        self.listener.close()


@pytest.fixture(scope="module")
def tls_root(
    orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """``(https DICOMweb root, CA file)``: a fresh self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl tool is not installed (needed to make a test certificate)")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = int(orthanc.url.rsplit(":", 1)[1])
    proxy = TLSProxy(port, cert, key)
    try:
        yield f"https://127.0.0.1:{proxy.port}/dicom-web", cert
    finally:
        proxy.close()


def test_untrusted_certificate_then_trusted(
    pacs: Orthanc,
    tls_root: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, cert = tls_root
    study, series, heads = pydicom_series(pacs, "CT5N")
    ref = f"dicomweb+{root}/studies/{study}/series/{series}"
    code, _, err = run(["info", ref], capsys)
    assert_one_line_error(code, err, "TLS error while listing the series")
    assert "certificate verify failed" in err and "MEDM3_DICOMWEB_CA_BUNDLE" in err
    monkeypatch.setenv("MEDM3_DICOMWEB_CA_BUNDLE", str(cert))
    image = load_image(ref)
    assert image.spatial_shape[2] == len(heads)


def test_bearer_token_is_sent(
    pacs: Orthanc, tls_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.dicomweb.client import connect

    root, cert = tls_root
    monkeypatch.setenv("MEDM3_DICOMWEB_CA_BUNDLE", str(cert))
    monkeypatch.setenv("MEDM3_DICOMWEB_TOKEN", "tok-123")
    client = connect(root)
    assert client._session.headers["Authorization"] == "Bearer tok-123"
    assert client._session.auth is None
    with pytest.raises(InputError, match=r"HTTP 401"):  # Orthanc knows basic auth only
        load_image(f"dicomweb+{root}/studies/1.2.3")
