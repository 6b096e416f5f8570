"""The official ``openai`` Python client against a real ``m3 serve`` process (mock model)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.serve.conftest import free_port

openai = pytest.importorskip("openai")

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``m3 serve --backend mock`` in a subprocess on a free loopback port."""
    port = free_port()
    data = tmp_path_factory.mktemp("serve-data")
    env = {**os.environ, "MEDM3_API_KEY": KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medm3",
            "serve",
            "--backend",
            "mock",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--no-ui",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"m3 serve exited with {proc.returncode}: {out}")
            try:
                if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("m3 serve did not start within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=30)


def test_models_and_chat(client: Any) -> None:
    assert [m.id for m in client.models.list()] == ["mock"]
    reply = client.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "Is this a CT?"}]
    )
    assert reply.choices[0].message.content == "(mock model) You asked: Is this a CT?"
    assert reply.choices[0].finish_reason == "stop"
    ext = reply.model_extra["medm3"]
    assert ext["session_id"].startswith("sess-") and ext["trace"][0]["step"] == "question"


def test_stream(client: Any) -> None:
    stream = client.chat.completions.create(
        model="mock",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == "(mock model) You asked: stream please"
    assert finish == "stop" and usage is not None


def test_files_upload_and_chat_about_it(client: Any, ct_path: Path) -> None:
    with open(ct_path, "rb") as fh:
        uploaded = client.files.create(file=fh, purpose="user_data")
    assert uploaded.id.startswith("file-") and uploaded.filename == ct_path.name
    assert uploaded.status == "processed" and uploaded.bytes > 0
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content[:2] == b"\x1f\x8b"
    reply = client.chat.completions.create(
        model="mock",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the scan."},
                    {"type": "file", "file": {"file_id": uploaded.id}},
                ],
            }
        ],
        extra_body={"medm3": {"plane": "coronal", "window": "lung"}},
    )
    assert reply.choices[0].message.content.endswith("Describe the scan.")
    session_id = reply.model_extra["medm3"]["session_id"]
    follow = client.chat.completions.create(
        model="mock",
        messages=[{"role": "user", "content": "And the liver?"}],
        extra_body={"session_id": session_id},
    )
    assert follow.model_extra["medm3"]["session_id"] == session_id


def test_errors_map_to_client_exceptions(client: Any, server: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mock", messages=[])
    anonymous = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_session_mask_with_the_openai_client(
    client: Any, ct_path: Path, ct_labels_path: Path
) -> None:
    """docs/server-api.md's example: a mask and its table in ``extra_body``."""
    with open(ct_path, "rb") as fh:
        scan = client.files.create(file=fh, purpose="user_data")
    with open(ct_labels_path, "rb") as fh:
        mask = client.files.create(file=fh, purpose="mask")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"medm3://file/{scan.id}"}},
                {"type": "text", "text": "How big is the right kidney?"},
            ],
        }
    ]
    reply = client.chat.completions.create(
        model="mock",
        messages=messages,
        extra_body={"medm3": {"mask": mask.id, "labels": "totalseg-ct"}},
    )
    info = reply.model_extra["medm3"]["mask"]
    assert info == {
        "file_id": mask.id,
        "labels": "totalseg-ct",
        "note": "label names from the built-in table 'totalseg-ct'",
    }
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="mock", messages=messages, extra_body={"medm3": {"mask": scan.id}}
        )
    assert bad.value.code == "not_a_label_map" and bad.value.param == "medm3.mask"
