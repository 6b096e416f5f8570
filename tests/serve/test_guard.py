"""The request guard (key, Host, Origin/CSRF, body caps before the body is read), server-made
session ids bound to keys, client disconnects, and `m3 serve` on an unwritable data folder."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.serve.conftest import SCRIPT, LiveServer

from medm3.serve.guard import RequestGuard
from medm3.vlm.mock import MockBackend

KEYS = ("key-one", "key-two")


def _scope(path: str, method: str = "POST", **headers: str) -> dict[str, Any]:
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "path": path, "headers": raw}


def _call(guard: RequestGuard, scope: dict[str, Any], body: bytes = b"") -> tuple[int, Any, int]:
    """Run ``guard`` on one request; returns (status, JSON body, body reads)."""
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    return status, json.loads(sent[1]["body"]) if status != 200 else None, reads


def _guard(**overrides: Any) -> tuple[RequestGuard, list[Any]]:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    settings = {
        "api_keys": KEYS,
        "allowed_hosts": ("localhost", "127.0.0.1"),
        "json_limit": 1000,
        "upload_limit": 10_000,
        **overrides,
    }
    return RequestGuard(app, **settings), seen


def test_refusals_happen_before_the_body_is_read() -> None:
    guard, seen = _guard()
    cases = [
        (_scope("/v1/chat/completions", host="localhost"), 401, "invalid_api_key"),
        (_scope("/v1/files", host="localhost", authorization="Bearer nope"), 401, None),
        (_scope("/v1/models", host="evil.example.com", x_api_key="key-one"), 400, "invalid_host"),
        (
            _scope("/v1/files", host="localhost", origin="http://evil.test", x_api_key="key-one"),
            403,
            "cross_origin",
        ),
        (
            _scope("/v1/chat/completions", host="localhost", x_api_key="key-one", **{
                "content-length": "5000"}),
            413,
            "payload_too_large",
        ),
        (
            _scope("/v1/files", host="localhost", x_api_key="key-one", **{
                "content-length": "20000"}),
            413,
            "payload_too_large",
        ),
    ]  # fmt: skip
    for scope, status, code in cases:
        got, body, reads = _call(guard, scope, b"x" * 20_000)
        assert (got, reads) == (status, 0), scope
        assert code is None or body["error"]["code"] == code
    assert seen == []


def test_bodies_pass_when_allowed_and_the_owner_is_recorded() -> None:
    guard, seen = _guard()
    scope = _scope(
        "/v1/chat/completions", host="127.0.0.1:8000", authorization="Bearer key-two",
        content_type="application/json",
    )  # fmt: skip
    assert _call(guard, scope, b"{}")[0] == 200
    assert seen == [b"{}"]
    owner = scope["medm3.owner"]
    scope1 = _scope("/v1/models", "GET", host="localhost", x_api_key="key-one")
    assert _call(guard, scope1)[0] == 200
    assert scope1["medm3.owner"] != owner and "key" not in owner
    # a body over the cap sent without Content-Length is refused while it arrives
    chunked = _scope("/v1/chat/completions", host="localhost", x_api_key="key-one")
    assert _call(guard, chunked, b"x" * 5000)[0] == 413


def test_csrf_rule_on_an_open_loopback_server() -> None:
    guard, _ = _guard(api_keys=())
    for ctype in ("", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        scope = _scope("/v1/files", host="localhost", content_type=ctype)
        status, body, _ = _call(guard, scope)
        assert status == 403 and body["error"]["code"] == "csrf_check_failed"
    assert _call(guard, _scope("/v1/files/x", "DELETE", host="localhost"))[0] == 403
    assert (
        _call(guard, _scope("/v1/files/x", "DELETE", host="localhost", x_requested_with="m3"))[0]
        == 200
    )
    scope = _scope("/v1/chat/completions", host="localhost", content_type="application/json")
    assert _call(guard, scope, b"{}")[0] == 200
    assert _call(guard, _scope("/v1/models", "GET", host="localhost"))[0] == 200
    # the UI is not under the rule (Gradio posts forms), but Host and Origin still apply
    assert _call(guard, _scope("/ui/login", host="localhost"), b"u=1")[0] == 200
    assert _call(guard, _scope("/ui/login", host="evil.example"))[0] == 400
    assert _call(guard, _scope("/ui/login", host="localhost", origin="null"))[0] == 403


def test_default_host_allow_list(make_app: Any) -> None:
    from medm3.serve import ServeSettings

    assert ServeSettings(host="127.0.0.1").host_allow_list() == ("localhost", "127.0.0.1", "::1")
    assert ServeSettings(host="0.0.0.0", api_keys=("k",)).host_allow_list() == ("*",)
    custom = ServeSettings(allowed_hosts=("Scanner.Local", " *.example.org "))
    assert custom.host_allow_list() == ("scanner.local", "*.example.org")
    from fastapi.testclient import TestClient

    app = make_app(allowed_hosts=("scanner.local",))
    with TestClient(app, base_url="http://scanner.local:8000", headers=SCRIPT) as client:
        assert client.get("/v1/models").status_code == 200
    with TestClient(app, base_url="http://other.local", headers=SCRIPT) as client:
        r = client.get("/health")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"


def test_session_ids_are_made_by_the_server_and_bound_to_keys(client_for: Any) -> None:
    client = client_for(api_keys=KEYS)
    k1, k2 = ({"Authorization": f"Bearer {k}"} for k in KEYS)
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/v1/chat/completions", json=body, headers=k1)
    sid = r.json()["medm3"]["session_id"]
    assert sid.startswith("sess-") and len(sid) == 29
    assert client.get(f"/v1/sessions/{sid}", headers=k1).status_code == 200
    assert client.get(f"/v1/sessions/{sid}", headers=k2).status_code == 404
    assert client.get(f"/v1/outputs/{sid}/archive.zip", headers=k2).status_code == 404
    again = {**body, "session_id": sid}
    assert client.post("/v1/chat/completions", json=again, headers=k2).status_code == 404
    assert client.post("/v1/chat/completions", json=again, headers=k1).status_code == 200
    assert client.delete(f"/v1/sessions/{sid}", headers=k2).status_code == 404
    assert client.delete(f"/v1/sessions/{sid}", headers=k1).status_code == 200
    chosen = {**body, "session_id": "sess-000000000000000000000000"}
    r = client.post("/v1/chat/completions", json=chosen, headers=k1)
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"


def test_lone_surrogates_are_400_not_500(client_for: Any) -> None:
    client = client_for()
    raw = b'{"model":"mock","messages":[{"role":"user","content":"hi \\ud800"}]}'
    r = client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    bad = b'{"model":"mock","messages":[{"role":"user","content":"\xff"}]}'
    r = client.post(
        "/v1/chat/completions", content=bad, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


def test_planning_checks_sizes_before_work(client_for: Any) -> None:
    client = client_for()
    body = {
        "model": "mock",
        "messages": [{"role": "user", "content": "hi"}],
        "medm3": {"experts": ["vista3d"] * 200_000},
    }
    start = time.process_time()
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "medm3.experts"
    assert client.app.state.service.runner.waiting == 0
    print(f"200,000 expert names refused in {time.process_time() - start:.2f} s CPU")


class _Slow:
    """A mock model that signals when it starts and takes ``seconds`` to answer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self.started = threading.Event()

    def __call__(self, messages: list[Any]) -> str:
        self.calls += 1
        self.started.set()
        time.sleep(self.seconds)
        return "late answer"


def _raw_post(port: int, body: dict[str, Any]) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def test_a_client_that_disconnects_cancels_its_job(make_app: Any) -> None:
    slow = _Slow(1.5)
    app = make_app(MockBackend("mock", script=slow), allowed_hosts=None, workers=1)
    svc = app.state.service
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    with LiveServer(app) as server:
        running = _raw_post(server.port, body)
        assert slow.started.wait(10)
        waiting = _raw_post(server.port, body)
        deadline = time.monotonic() + 10
        while svc.runner.waiting < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        waiting.close()  # gone while queued: its job is dropped
        running.close()  # gone while running: the answer is not saved
        while svc.runner.waiting or svc.runner.running:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        assert slow.calls == 1
        assert svc.store.list_sessions() == []
        r = httpx.get(f"{server.url}/health")
        assert r.json()["status"] == "ok"


def test_serve_on_an_unwritable_data_folder_is_one_line(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    import tempfile

    from medm3.cli.main import main

    with pytest.raises(SystemExit) as exc:  # a real pseudo file system that takes no folders
        main(["serve", "--backend", "mock", "--no-ui", "--data-dir", "/proc/medm3-data"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("m3: error: /proc/medm3-data: the data folder cannot be written")
    assert len(err.strip().splitlines()) == 1

    def read_only(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--backend", "mock", "--no-ui", "--data-dir", str(tmp_path / "d")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "(Read-only file system)" in err and len(err.strip().splitlines()) == 1


def test_partial_uploads_are_removed_at_start(make_app: Any, tmp_path: Path) -> None:
    stale = tmp_path / "data" / "tmp" / "deadbeef"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 1000)
    make_app()
    assert not stale.exists()


def test_bombs_are_413_and_nothing_is_kept(client_for: Any) -> None:
    from tests.hostile import generators_server as g

    client = client_for(max_image_mb=8)
    svc = client.app.state.service
    bombs = {
        "bomb.zip": g.zip_bomb(16),
        "bomb.nii.gz": g.gzip_bomb_nifti((256, 256, 128)),
        "huge.nii.gz": g.nifti_declaring((1024, 1024, 1000)),
        "huge.png": g.png_declaring(60000, 60000),
    }
    for name, data in bombs.items():
        r = client.post("/v1/files", files={"file": (name, data)})
        assert r.status_code == 413, (name, r.text)
        assert "\n" not in r.text and str(svc.root) not in r.text
    assert svc.files._cache == {}
    assert list((svc.root / "files").iterdir()) == []
    assert list((svc.root / "tmp").iterdir()) == []
    assert svc.store.list_files() == []
