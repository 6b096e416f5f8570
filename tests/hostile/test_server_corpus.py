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
