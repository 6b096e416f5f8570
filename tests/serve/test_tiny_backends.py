"""Real backends behind the API: tiny random-weight LLaVA (``hf``) and VILA-M3 (``vila``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from medm3.testing.tiny_hf import build_tiny_llava
    from medm3.vlm.hf import HFBackend

    return HFBackend(str(build_tiny_llava(tmp_path_factory.mktemp("llava"))), device="cpu")


@pytest.fixture(scope="module")
def tiny_vila(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from medm3.testing import build_tiny_vila
    from medm3.vlm.registry import load_backend

    folder = build_tiny_vila(tmp_path_factory.mktemp("vila") / "tiny-vila")
    return load_backend("vila", str(folder), device="cpu")


@pytest.mark.parametrize("backend", ["tiny_llava", "tiny_vila"])
def test_chat_and_stream_with_a_real_model(
    backend: str, request: pytest.FixtureRequest, client_for: Any, ct_path: Path
) -> None:
    vlm = request.getfixturevalue(backend)
    client = client_for(vlm, max_new_tokens=6)
    with open(ct_path, "rb") as fh:
        file_id = client.post("/v1/files", files={"file": ("ct.nii.gz", fh)}).json()["id"]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is shown?"},
                {"type": "image_url", "image_url": {"url": f"medm3://file/{file_id}"}},
            ],
        }
    ]
    body = {
        "model": vlm.model_id,
        "messages": messages,
        "max_tokens": 50,
        "medm3": {"use_experts": False},
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    generate = [s for s in out["medm3"]["trace"] if s["step"] == "generate"]
    assert len(generate) == 1 and generate[0]["input"][0]["images"] == 1
    assert out["choices"][0]["message"]["content"] == out["medm3"]["answer"]
    assert 0 < out["usage"]["completion_tokens"] <= 6  # capped by the server's limit
    follow = {
        "model": "medm3",
        "session_id": out["medm3"]["session_id"],
        "stream": True,
        "messages": [{"role": "user", "content": "Anything else?"}],
    }
    follow["stream_options"] = {"include_usage": True}
    r = client.post("/v1/chat/completions", json=follow)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    chunks = [json.loads(b[6:]) for b in r.text.strip().split("\n\n")[:-1]]
    final = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    usage = chunks[-1]["usage"]
    steps = [s for s in final[0]["medm3"]["trace"] if s["step"] == "generate"]
    # Real counts from the streamed generation; cut at the server's 6 tokens -> "length".
    assert usage["completion_tokens"] == steps[-1]["completion_tokens"] > 0
    assert usage["prompt_tokens"] == steps[-1]["prompt_tokens"] > 0
    expected = "length" if usage["completion_tokens"] == 6 else "stop"
    assert final[0]["choices"][0]["finish_reason"] == steps[-1]["finish_reason"] == expected
