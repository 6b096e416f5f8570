"""The HTTP API with the mock backend: chat, streaming, files, experts, outputs, sessions."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from tests.serve.conftest import SCRIPT, echo, segment_then_answer

from medm3.vlm.mock import MockBackend


def _upload(client: Any, path: Path, name: str | None = None) -> dict[str, Any]:
    with open(path, "rb") as fh:
        r = client.post("/v1/files", files={"file": (name or path.name, fh)})
    assert r.status_code == 200, r.text
    return r.json()


def _ask(client: Any, text: str, file_id: str | None = None, **extra: Any) -> Any:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if file_id:
        content.append({"type": "image_url", "image_url": {"url": f"medm3://file/{file_id}"}})
    body = {"model": "mock", "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body)


def _events(text: str) -> list[Any]:
    out = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_health_models_and_experts(client_for: Any, fake_experts: None) -> None:
    client = client_for()
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "mock"
    assert health["capacity"] == 17 and health["running"] == 0
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "mock"
    experts = client.get("/v1/experts").json()["data"]
    names = [e["name"] for e in experts]
    assert {"vista3d", "measure", "fakeseg"} <= set(names)
    fake = experts[names.index("fakeseg")]
    assert fake["object"] == "expert" and fake["trigger"] == "FAKESEG"
    assert "<FAKESEG(args)>" in fake["model_card"]


def test_chat_with_uploaded_ct_runs_expert_and_serves_overlay(
    client_for: Any, fake_experts: None, ct_path: Path
) -> None:
    vlm = MockBackend("mock", script=segment_then_answer)
    client = client_for(vlm)
    uploaded = _upload(client, ct_path)
    assert uploaded["object"] == "file" and uploaded["medm3"]["modality"] == "CT"
    assert uploaded["medm3"]["shape"] == [122, 101, 30]
    r = _ask(client, "Where is the bright region?", uploaded["id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "The bright region is shown in red.",
        "refusal": None,
    }
    ext = body["medm3"]
    assert ext["rounds"] == 1 and ext["session_id"].startswith("sess-")
    steps = [s["step"] for s in ext["trace"]]
    assert steps == ["question", "view", "generate", "expert", "generate", "answer"]
    # the model saw the rendered CT slice in its first turn, and the overlay after the expert
    assert len(vlm.calls[0][0].images) == 1 and len(vlm.calls[1][-1].images) == 1
    kinds = sorted(f["kind"] for f in ext["files"])
    assert kinds == ["label_map", "overlay", "result"]
    (overlay,) = ext["overlays"]
    assert overlay["expert"] == "fakeseg" and overlay["url"].startswith("/v1/outputs/sess-")
    png = client.get(overlay["url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert all(u.startswith("/v1/outputs/") for u in ext["trace"][3]["files"])  # no server paths
    assert ext["trace"][1]["files"][0].startswith("/v1/outputs/")  # the saved view, as a URL
    assert str(client.app.state.service.root) not in r.text
    archive = client.get(ext["archive_url"])
    assert archive.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert "trace.json" in names
    assert any(n.endswith("fakeseg_labels.nii.gz") for n in names)
    assert any(n.endswith(".png") for n in names)


def test_streaming_chunks_follow_the_openai_format(
    client_for: Any, fake_experts: None, ct_path: Path
) -> None:
    client = client_for(MockBackend("mock", script=segment_then_answer))
    file_id = _upload(client, ct_path)["id"]
    r = _ask(client, "Segment it", file_id, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    expert_events = [c["medm3"]["event"] for c in chunks if c.get("medm3", {}).get("event")]
    assert [e["expert"] for e in expert_events] == ["fakeseg"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "<FAKESEG(bright)>\n\nThe bright region is shown in red."
    final = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert final[0]["choices"][0]["finish_reason"] == "stop"
    assert final[0]["medm3"]["answer"] == "The bright region is shown in red."
    assert final[0]["medm3"]["overlays"][0]["url"].startswith("/v1/outputs/")
    assert chunks[-1]["choices"] == [] and "total_tokens" in chunks[-1]["usage"]


def test_session_memory_survives_restart(make_app: Any, fake_experts: None, ct_path: Path) -> None:
    from fastapi.testclient import TestClient

    first = MockBackend("mock", script=segment_then_answer)
    with TestClient(make_app(first), headers=SCRIPT) as client:
        file_id = _upload(client, ct_path)["id"]
        r = _ask(client, "Find the bright region", file_id)
        session_id = r.json()["medm3"]["session_id"]
    # a new process: new app, new model instance, same data folder
    second = MockBackend("mock", script=["It is the same study as before."])
    with TestClient(make_app(second), headers=SCRIPT) as client:
        r = _ask(client, "And now?", session_id=session_id)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "It is the same study as before."
        seen = second.calls[0]
        assert [m.role for m in seen] == ["user", "assistant", "user", "assistant", "user"]
        assert len(seen[0].images) == 1  # the rendered CT, restored from the state folder
        assert seen[1].plain_text == "<FAKESEG(bright)>"
        assert seen[-1].plain_text == "And now?"
        service = client.app.state.service
        live = service.conversations._sessions[session_id]
        assert [r.expert for r in live.chat.results] == ["fakeseg"]
        assert live.chat.results[0].label_map is not None  # measure could use it
        stored = client.get(f"/v1/sessions/{session_id}").json()
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2
        assert stored["messages"][1]["files"]
        assert stored["images"] == {"image": file_id}


def test_feedback_of_a_segmentation_only_answer_survives_restart(
    make_app: Any, fake_experts: None, ct_path: Path
) -> None:
    """released: "I segmented ..." ends the turn; the next question carries the result,
    also when the server restarted in between (the pending feedback is saved)."""
    from fastapi.testclient import TestClient

    first = MockBackend("mock", script=["I segmented the bright region using <FAKESEG(bright)>."])
    with TestClient(make_app(first, protocol="released"), headers=SCRIPT) as client:
        file_id = _upload(client, ct_path)["id"]
        r = _ask(client, "Segment the bright region", file_id)
        assert r.status_code == 200, r.text
        session_id = r.json()["medm3"]["session_id"]
        live = client.app.state.service.conversations._sessions[session_id]
        pending = [p for p in live.chat.pending_feedback if hasattr(p, "text")]
        assert len(first.calls) == 1 and pending  # the overlay was the answer
    second = MockBackend("mock", script=["Bright."])
    with TestClient(make_app(second, protocol="released"), headers=SCRIPT) as client:
        r = _ask(client, "Which side?", session_id=session_id)
        assert r.status_code == 200, r.text
        asked = second.calls[0][-1]
        assert asked.role == "user" and len(asked.images) == 1  # the overlay, restored
        assert asked.plain_text.startswith(pending[0].text)
        assert asked.plain_text.endswith("Which side?")


def test_stateless_history_is_replayed_without_generation(client_for: Any) -> None:
    vlm = MockBackend("mock", script=["third answer"])
    client = client_for(vlm)
    messages = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "two"},
    ]
    r = client.post("/v1/chat/completions", json={"model": "mock", "messages": messages})
    assert r.status_code == 200, r.text
    seen = vlm.calls[0]
    assert [m.role for m in seen] == ["user", "assistant", "user"]
    assert seen[0].plain_text.endswith("\none")  # built as a first turn (model cards first)
    assert [m.plain_text for m in seen[1:]] == ["first answer", "two"]


def test_data_url_images_are_stored_once(client_for: Any, png_bytes: bytes) -> None:
    vlm = MockBackend("mock", script=echo)
    client = client_for(vlm)
    url = "data:image/png;base64," + base64.b64encode(png_bytes).decode()
    content = [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    for _ in range(2):
        r = client.post(
            "/v1/chat/completions",
            json={"model": "mock", "messages": [{"role": "user", "content": content}]},
        )
        assert r.status_code == 200, r.text
    assert len(client.get("/v1/files").json()["data"]) == 1
    assert vlm.calls[0][0].images[0].size[0] >= 32


def test_files_crud(client_for: Any, png_bytes: bytes) -> None:
    client = client_for()
    r = client.post(
        "/v1/files", files={"file": ("../../x ray.png", png_bytes)}, data={"purpose": "vision"}
    )
    assert r.status_code == 200, r.text
    obj = r.json()
    assert obj["filename"] == "x ray.png" and obj["purpose"] == "vision"
    assert obj["bytes"] == len(png_bytes) and obj["medm3"]["kind"] == "2d"
    assert client.get(f"/v1/files/{obj['id']}").json() == obj
    assert client.get(f"/v1/files/{obj['id']}/content").content == png_bytes
    assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [obj["id"]]
    assert client.delete(f"/v1/files/{obj['id']}").json()["deleted"] is True
    r = client.get(f"/v1/files/{obj['id']}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"


def test_expert_run_route(client_for: Any, fake_experts: None, ct_path: Path) -> None:
    client = client_for()
    file_id = _upload(client, ct_path)["id"]
    r = client.post("/v1/experts/fakeseg/run", json={"file_id": file_id, "args": "bright"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "expert.run" and body["expert"] == "fakeseg"
    assert body["result"]["label_names"] == {"1": "bright"}
    assert client.get(body["overlays"][0]["url"]).status_code == 200
    r = client.post(
        "/v1/experts/measure/run",
        json={"inputs": {"image": file_id, "mask": file_id}, "args": "all"},
    )
    assert r.status_code == 400  # the CT is no label map: the expert's message comes back
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/v1/experts/nosuch/run", json={"file_id": file_id})
    assert r.status_code == 404 and r.json()["error"]["code"] == "expert_not_found"
    r = client.post("/v1/experts/fakeseg/run", json={"file_id": file_id, "args": "purple"})
    assert r.status_code == 400 and "valid args" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "mock"}, 400, "messages"),
        ({"model": "mock", "messages": []}, 400, "messages"),
        ({"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
        ({"model": "mock", "n": 2, "messages": [{"role": "user", "content": "hi"}]}, 400, "n"),
        (
            {"model": "mock", "temperature": 5, "messages": [{"role": "user", "content": "hi"}]},
            400,
            "temperature",
        ),
        ({"model": "mock", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
        (
            {
                "model": "mock",
                "messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}],
            },
            400,
            "messages[0].role",
        ),
        (
            {
                "model": "mock",
                "medm3": {"experts": ["nope"]},
                "messages": [{"role": "user", "content": "hi"}],
            },
            400,
            "medm3.experts",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    client_for: Any, body: dict[str, Any], status: int, param: str
) -> None:
    r = client_for().post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_model_errors_are_500_without_internals(client_for: Any) -> None:
    client = client_for(MockBackend("mock", script=[RuntimeError("CUDA out of memory at 0x7f")]))
    r = _ask(client, "hi")
    assert r.status_code == 500
    assert r.json()["error"] == {
        "message": "internal server error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
    client = client_for(MockBackend("mock", script=[]))  # script exhausted: a MedM3Error
    r = _ask(client, "hi", stream=True)
    events = _events(r.text)
    assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "server_error"


def test_unknown_route_is_an_openai_error(client_for: Any) -> None:
    r = client_for().get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_backend_loaded_at_startup_or_reported(tmp_path: Path) -> None:
    import time

    from fastapi.testclient import TestClient

    from medm3.serve import ServeSettings, create_app

    def wait_for(client: Any, status: str) -> None:
        deadline = time.monotonic() + 10
        while client.get("/health").json()["status"] != status:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    ok = create_app(ServeSettings(backend="mock", model="m", data_dir=tmp_path / "a", ui=False))
    with TestClient(ok, base_url="http://127.0.0.1", headers=SCRIPT) as client:
        wait_for(client, "ok")
        assert client.get("/v1/models").json()["data"][0]["id"] == "m"
    bad = create_app(ServeSettings(backend="nosuch", model="m", data_dir=tmp_path / "b", ui=False))
    with TestClient(bad, base_url="http://127.0.0.1", headers=SCRIPT) as client:
        wait_for(client, "error")
        r = _ask(client, "hi")
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"


def test_reply_cut_by_max_tokens_says_length_with_real_usage(client_for: Any) -> None:
    from medm3.vlm.base import Generation

    cut = Generation("The liver is", finish_reason="length", prompt_tokens=11, completion_tokens=4)
    client = client_for(MockBackend("mock", script=[cut]))
    r = _ask(client, "Describe the liver", max_tokens=4, medm3={"use_experts": False})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


def test_stream_cut_by_max_tokens_says_length_with_real_usage(client_for: Any) -> None:
    from medm3.vlm.base import Generation

    cut = Generation("The liver is", finish_reason="length", prompt_tokens=11, completion_tokens=4)
    client = client_for(MockBackend("mock", script=[cut]))
    r = _ask(
        client,
        "Describe the liver",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        medm3={"use_experts": False},
    )
    assert r.status_code == 200, r.text
    chunks = _events(r.text)[:-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finish = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
    assert text == "The liver is" and [f for f in finish if f] == ["length"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
