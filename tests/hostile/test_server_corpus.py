"""The hostile-input corpus against a real ``m3 serve`` subprocess (mock backend).

Every case of :mod:`tests.hostile.server_cases` must get its status and a one-line
JSON error, leave no traceback in the server log and no file outside the data
folder, and grow the server's RSS by less than 300 MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("psutil")

from tests.hostile.server_cases import CASES, RSS_LIMIT_MB, ServerCase
from tests.hostile.server_harness import ServerHarness, problems, servers


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerHarness]]:
    with servers(tmp_path_factory.mktemp("hostile-server")) as started:
        yield started


def test_corpus_is_large_and_covers_every_group() -> None:
    assert len(CASES) >= 150
    groups = {c.name.split("/")[0] for c in CASES}
    assert {"host", "origin", "csrf", "auth", "owner", "protocol", "upload", "path"} <= groups
    assert RSS_LIMIT_MB <= 300


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_server_case(case: ServerCase, running: dict[str, ServerHarness]) -> None:
    harness = running[case.server]
    result = harness.run(case)
    assert problems(result, harness.data) == [], (case.name, result.status)


def test_servers_survived(running: dict[str, ServerHarness]) -> None:
    for harness in running.values():
        assert harness.proc.poll() is None, harness.log_path.read_text()[-2000:]
        status, _ = harness.request("GET", "/health")
        assert status == 200


def test_partial_upload_is_removed_on_restart(tmp_path: Path) -> None:
    """A partial upload left in tmp/ by a killed server is gone after the next start."""
    harness = ServerHarness(tmp_path)
    try:
        stale = harness.data / "tmp" / "0123456789abcdef"
        harness.close()
        stale.write_bytes(b"\0" * (1 << 20))
        harness = ServerHarness(tmp_path)
        assert not stale.exists()
    finally:
        harness.close()


def test_an_upload_cut_off_midway_leaves_nothing(running: dict[str, ServerHarness]) -> None:
    """A client that goes away in the middle of a 20 MB upload leaves nothing in tmp/."""
    import socket
    import time

    harness = running["open"]
    boundary = "cut-7d3f"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.nii"\r\n\r\n'
    ).encode()
    sock = socket.create_connection(("127.0.0.1", harness.port))
    request = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{harness.port}\r\n"
        f"X-Requested-With: corpus\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {30 << 20}\r\n\r\n"
    ).encode()
    sock.sendall(request + head)
    for _ in range(20):
        sock.sendall(bytes(1 << 20))
    deadline = time.monotonic() + 30
    while not any((harness.data / "tmp").iterdir()):  # the upload is being written
        assert time.monotonic() < deadline, harness._new_log()[-2000:]
        time.sleep(0.02)
    sock.close()
    deadline = time.monotonic() + 30
    while any((harness.data / "tmp").iterdir()):
        assert time.monotonic() < deadline, list((harness.data / "tmp").iterdir())
        time.sleep(0.05)
    log = harness._new_log()
    assert "Traceback" not in log, log[-3000:]
