"""Tests of the OpenAI-compatible backend against the local fake server."""

from __future__ import annotations

import base64
import io
import json
import socket
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from medm3.errors import InputError, MedM3Error
from medm3.imaging.deid.scrub import REDACTION, SensitiveValueScrubber
from medm3.vlm import load_backend
from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart, ToolCall, collect_stream
from medm3.vlm.images import from_data_url, png_chunk_types, to_data_url, to_png_bytes
from medm3.vlm.openai import OpenAIBackend

from .fake_openai_server import FakeOpenAIServer, FakeReply

pytest.importorskip("openai")

KEY = "sk-test-123"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "VISTA3D",
            "description": "Segment an organ or lesion in a CT volume.",
            "parameters": {
                "type": "object",
                "properties": {"target": {"type": "string"}},
                "required": ["target"],
            },
        },
    }
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MEDM3_OPENAI_BASE_URL",
        "OPENAI_BASE_URL",
        "MEDM3_OPENAI_API_KEY",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY, lifetime_s=60) as srv:
        yield srv


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(max_requests=10_000, lifetime_s=120) as srv:
        yield srv


def _backend(srv: FakeOpenAIServer, **kw: Any) -> OpenAIBackend:
    kw.setdefault("api_key", KEY)
    return OpenAIBackend(srv.model, base_url=srv.base_url, **kw)


def _gradient(size: tuple[int, int] = (24, 16)) -> Image.Image:
    img = Image.new("RGB", size)
    img.putdata([(x * 10 % 256, y * 15 % 256, 128) for y in range(size[1]) for x in range(size[0])])
    return img


def _image_with_metadata(secret: str) -> Image.Image:
    """A PNG carrying ``secret`` in a text chunk, an iTXt chunk and EXIF, reopened."""
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", secret)
    info.add_itxt("Comment", secret)
    exif = Image.Exif()
    exif[0x010E] = secret  # ImageDescription
    buf = io.BytesIO()
    _gradient().save(buf, format="PNG", pnginfo=info, exif=exif)
    img = Image.open(io.BytesIO(buf.getvalue()))
    img.load()
    assert secret in str(img.info)  # the metadata is really there
    return img


def _data_urls(body: Any) -> list[str]:
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and v.startswith("data:"):
            found.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(body)
    return found


def _png(url: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :], validate=True)


# --------------------------------------------------------------------------- basics


def test_text_request_and_auth_header(server: FakeOpenAIServer) -> None:
    server.push("The liver is normal.")
    vlm = _backend(server)
    gen = vlm.generate(
        [Message.text("system", "Be brief."), Message.text("user", "Any finding?")],
        GenerationConfig(max_new_tokens=64, stop=("###",), seed=3),
    )
    assert gen.text == "The liver is normal."
    assert gen.finish_reason == "stop" and gen.prompt_tokens == 7 and gen.completion_tokens == 4
    assert gen.raw["redactions"] == 0 and gen.raw["id"].startswith("chatcmpl-fake")
    request = server.requests[-1]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.json
    assert body["model"] == "fake-model"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Any finding?"},
    ]
    assert body["max_tokens"] == 64 and body["temperature"] == 0.0
    assert body["stop"] == ["###"] and body["seed"] == 3
    assert "top_p" not in body and "stream" not in body
    assert vlm.supports_tools is True and vlm.vila_format is False


def test_image_is_clean_png_data_url(server: FakeOpenAIServer) -> None:
    secret = "Doe^Jane 1234567"
    vlm = _backend(server)
    src = _image_with_metadata(secret)
    vlm.generate([Message("user", [TextPart("Describe"), ImagePart(src), TextPart("please")])])
    body = server.requests[-1].json
    content = body["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text"]
    url = content[1]["image_url"]["url"]
    png = _png(url)
    assert set(png_chunk_types(png)) == {"IHDR", "IDAT", "IEND"}
    assert secret.encode() not in png and b"Exif" not in png
    decoded = from_data_url(url)
    assert decoded.size == src.size and decoded.tobytes() == src.convert("RGB").tobytes()
    assert secret not in server.requests[-1].body.decode()


def test_large_images_are_downscaled(server: FakeOpenAIServer) -> None:
    vlm = _backend(server, max_image_side=64)
    vlm.generate([Message("user", [ImagePart(_gradient((300, 150)))])])
    url = _data_urls(server.requests[-1].json)[0]
    assert Image.open(io.BytesIO(_png(url))).size == (64, 32)


def test_tool_call_round_trip(server: FakeOpenAIServer) -> None:
    server.push(FakeReply(text=None, tool_calls=[("VISTA3D", {"target": "liver"})]), "1.6 L")
    vlm = _backend(server)
    conv = [Message.text("user", "How big is the liver?")]
    gen = vlm.generate(conv, tools=TOOLS)
    assert gen.finish_reason == "tool_calls" and gen.text == ""
    (call,) = gen.tool_calls
    assert call.name == "VISTA3D" and call.arguments == {"target": "liver"} and call.id
    overlay = _gradient()
    conv += [
        Message("assistant", [], tool_calls=gen.tool_calls),
        Message("tool", [TextPart("liver: 1.6 L"), ImagePart(overlay)], tool_call_id=call.id),
    ]
    assert vlm.generate(conv, tools=TOOLS).text == "1.6 L"
    body = server.chat_requests()[-1]
    assert body["tools"] == TOOLS
    user, assistant, tool, images = body["messages"]
    assert user == {"role": "user", "content": "How big is the liver?"}
    assert assistant["role"] == "assistant" and not assistant.get("content")
    assert assistant["tool_calls"] == [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": "VISTA3D", "arguments": json.dumps({"target": "liver"})},
        }
    ]
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": "liver: 1.6 L"}
    assert images["role"] == "user" and [p["type"] for p in images["content"]] == [
        "text",
        "image_url",
    ]


def test_tool_turn_without_call_id_becomes_user_text(server: FakeOpenAIServer) -> None:
    vlm = _backend(server)
    conv = [
        Message.text("user", "Segment"),
        Message.text("assistant", "<VISTA3D(liver)>"),
        Message.text("tool", "liver found"),
    ]
    vlm.generate(conv)
    msgs = server.chat_requests()[-1]["messages"]
    assert msgs[-1] == {"role": "user", "content": "Tool result: liver found"}


def test_unparsable_tool_arguments_are_kept(server: FakeOpenAIServer) -> None:
    server.push(FakeReply(tool_calls=[("VISTA3D", "{not json")]))
    gen = _backend(server).generate([Message.text("user", "x")], tools=TOOLS)
    assert gen.tool_calls[0].arguments == {"_raw": "{not json"}


def test_streaming(server: FakeOpenAIServer) -> None:
    server.push("The liver appears normal in size.")
    chunks = list(_backend(server).stream([Message.text("user", "Liver?")]))
    assert len(chunks) > 3
    assert "".join(chunks) == "The liver appears normal in size."
    assert server.requests[-1].json["stream"] is True
    assert server.requests[-1].json["stream_options"] == {"include_usage": True}


def test_stream_returns_finish_reason_and_usage(server: FakeOpenAIServer) -> None:
    server.push(FakeReply(text="The liver is", finish_reason="length"), "Normal liver.")
    vlm = _backend(server)
    seen: list[str] = []
    cut = collect_stream(vlm.stream([Message.text("user", "Liver?")]), seen.append)
    assert "".join(seen) == cut.text == "The liver is"
    assert (cut.finish_reason, cut.prompt_tokens, cut.completion_tokens) == ("length", 7, 3)
    done = collect_stream(vlm.stream([Message.text("user", "Liver?")]))
    assert (done.text, done.finish_reason, done.completion_tokens) == ("Normal liver.", "stop", 2)


def test_batch_keeps_order(server: FakeOpenAIServer) -> None:
    server.push(*[lambda req: "re: " + req["messages"][-1]["content"] for _ in range(6)])
    vlm = _backend(server, max_concurrency=3)
    convs = [[Message.text("user", f"q{i}")] for i in range(6)]
    assert [g.text for g in vlm.generate_batch(convs)] == [f"re: q{i}" for i in range(6)]


def test_models_route(server: FakeOpenAIServer) -> None:
    models = _backend(server).client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]


# --------------------------------------------------------------------------- errors


def test_http_500_is_one_clear_error_after_retries(server: FakeOpenAIServer) -> None:
    fail = FakeReply(status=500, error="CUDA out of memory", headers={"retry-after-ms": "1"})
    server.push(fail, fail, fail)
    vlm = _backend(server, max_retries=2)
    with pytest.raises(MedM3Error) as info:
        vlm.generate([Message.text("user", "x")])
    message = str(info.value)
    assert "HTTP 500" in message and "CUDA out of memory" in message and server.base_url in message
    assert len(server.chat_requests()) == 3  # 1 + 2 retries


def test_retry_then_success(server: FakeOpenAIServer) -> None:
    server.push(FakeReply(status=503, error="busy", headers={"retry-after-ms": "1"}), "ok")
    assert _backend(server).generate([Message.text("user", "x")]).text == "ok"


def test_plain_text_error_body_and_stream_error(server: FakeOpenAIServer) -> None:
    server.push(FakeReply(status=400, error="bad image", raw_error=True))
    with pytest.raises(MedM3Error, match=r"HTTP 400: .*bad image"):
        _backend(server).generate([Message.text("user", "x")])
    server.push(FakeReply(status=422, error="context too long"))
    with pytest.raises(MedM3Error, match=r"HTTP 422: context too long"):
        list(_backend(server).stream([Message.text("user", "x")]))


def test_wrong_key_and_wrong_model(server: FakeOpenAIServer) -> None:
    with pytest.raises(MedM3Error, match=r"HTTP 401.*MEDM3_OPENAI_API_KEY"):
        _backend(server, api_key="wrong").generate([Message.text("user", "x")])
    vlm = OpenAIBackend("nope", base_url=server.base_url, api_key=KEY)
    with pytest.raises(MedM3Error, match=r"HTTP 404.*'nope'"):
        vlm.generate([Message.text("user", "x")])


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    vlm = OpenAIBackend("m", base_url=url, api_key="k", max_retries=0, timeout=5)
    with pytest.raises(MedM3Error, match="connection refused") as info:
        vlm.generate([Message.text("user", "x")])
    assert url in str(info.value) and "MEDM3_OPENAI_BASE_URL" in str(info.value)


def test_env_configuration(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MEDM3_OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "other")
    monkeypatch.setenv("MEDM3_OPENAI_API_KEY", KEY)
    vlm = load_backend("openai", "fake-model")
    assert isinstance(vlm, OpenAIBackend) and vlm.base_url == server.base_url
    assert vlm.generate([Message.text("user", "x")]).text == "fake reply"
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_missing_key_for_hosted_api_and_keyless_local(server: FakeOpenAIServer) -> None:
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o")
    server.api_key = None
    OpenAIBackend(server.model, base_url=server.base_url).generate([Message.text("user", "x")])
    assert server.requests[-1].headers["authorization"] == "Bearer EMPTY"


# --------------------------------------------------------------------------- PHI guard


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _assert_no_leak(phi: str, bodies: list[bytes]) -> None:
    """No JSON string of any body contains ``phi`` (any case); images carry no metadata."""
    needle = _fold(phi)
    for body in bodies:
        for s in _strings(json.loads(body)):
            if s.startswith("data:"):
                png = _png(s)
                assert set(png_chunk_types(png)) == {"IHDR", "IDAT", "IEND"}
                assert phi.encode() not in png
            else:
                assert needle not in _fold(s), f"{phi!r} leaked in {s!r}"
        assert phi.encode() not in body  # raw bytes too (outside base64)


def _phi_conversation(phi: str, image: Image.Image) -> list[Message]:
    call = ToolCall("VISTA3D", {"target": "liver", "note": f"patient {phi}"}, id="call_1")
    return [
        Message.text("system", f"Patient: {phi}. Do not repeat names."),
        Message("user", [TextPart(f"Scan of {phi.upper()}:"), ImagePart(image), TextPart("?")]),
        Message("assistant", [TextPart(f"Looking at {phi.lower()}")], tool_calls=[call]),
        Message("tool", [TextPart(f"Result for {phi}: liver ok"), ImagePart(image)], "call_1"),
        Message.text("tool", f"untracked result {phi.title()}"),
        Message.text("user", f"Summarise for {phi} ({phi})"),
    ]


def _send_both(vlm: OpenAIBackend, conv: list[Message], srv: FakeOpenAIServer) -> list[bytes]:
    start = len(srv.requests)
    gen = vlm.generate(conv, GenerationConfig(stop=("END",)), tools=TOOLS)
    list(vlm.stream(conv, tools=TOOLS))
    bodies = [r.body for r in srv.requests[start:]]
    assert len(bodies) == 2
    return [gen.raw["redactions"], *bodies]  # type: ignore[list-item]


_SKELETON: list[str] = []

_PHI = st.text(
    alphabet=st.characters(
        categories=("Lu", "Ll", "Nd"), max_codepoint=0x24F, exclude_characters="ǅǈǋǲ"
    )
    | st.sampled_from(" -.'/,"),
    min_size=3,
    max_size=24,
).filter(lambda s: len(s.strip()) >= 3 and sum(c.isalnum() for c in s) >= 2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(phi=_PHI)
def test_phi_never_leaves_the_machine(shared_server: FakeOpenAIServer, phi: str) -> None:
    if not _SKELETON:  # the protocol text every request contains, PHI-free
        neutral = OpenAIBackend(shared_server.model, base_url=shared_server.base_url, api_key="k")
        _, *bodies = _send_both(neutral, _phi_conversation("", _gradient()), shared_server)
        _SKELETON.append(" ".join(_fold(s) for b in bodies for s in _strings(json.loads(b))))
    assume(_fold(phi.strip()) not in _SKELETON[0])
    vlm = OpenAIBackend(
        shared_server.model,
        base_url=shared_server.base_url,
        api_key="k",
        sensitive_values=[phi],
    )
    redactions, *bodies = _send_both(
        vlm, _phi_conversation(phi, _image_with_metadata(phi)), shared_server
    )
    assert redactions >= 8
    _assert_no_leak(phi.strip(), bodies)


def test_dicom_name_and_date_formats(server: FakeOpenAIServer) -> None:
    vlm = _backend(server, sensitive_values={"Doe^John^Quincy", "20240131", "1.2.840.99.1"})
    vlm.add_sensitive_values(["MRN-0042"])
    text = (
        "John Doe, DOE^JOHN, doe, john, John Quincy Doe, Mr. JOHN  DOE, seen 2024-01-31 "
        "(01/31/2024, 31.01.2024), uid 1.2.840.99.1, mrn mrn-0042; johnson stays partly."
    )
    gen = vlm.generate([Message.text("user", text)])
    sent = server.requests[-1].json["messages"][0]["content"]
    for needle in ("john", "doe", "quincy", "2024", "1.2.840", "0042"):
        assert needle not in sent.lower(), sent
    assert sent.startswith(f"{REDACTION}, {REDACTION}, ")
    assert "son stays partly" in sent  # substring redaction: "john" inside "johnson"
    assert gen.raw["redactions"] == 11 and vlm.redactions_total == gen.raw["redactions"]


def test_scrubber_rules() -> None:
    s = SensitiveValueScrubber(["Straße", "  ", "x", "---", "Ann  Lee"])
    assert len(s) > 0
    assert s.scrub("STRASSE and straße and Ann\nLee, x ---") == (
        f"{REDACTION} and {REDACTION} and {REDACTION}, x ---",
        3,
    )
    # overlapping values cannot rebuild each other
    s = SensitiveValueScrubber(["abc", "xaby"])
    out, _ = s.scrub("xababcyc")
    assert "abc" not in out.lower() and "xaby" not in out.lower()
    assert SensitiveValueScrubber().scrub("text") == ("text", 0)


def test_images_module() -> None:
    img = _image_with_metadata("Secret^Name")
    png = to_png_bytes(img)
    assert png_chunk_types(png) == ["IHDR", "IDAT", "IEND"]
    for mode in ("P", "I;16", "F", "CMYK", "LA", "1"):
        converted = img.convert("L").convert(mode) if mode != "LA" else img.convert("LA")
        assert set(png_chunk_types(to_png_bytes(converted))) == {"IHDR", "IDAT", "IEND"}
    url = to_data_url(img, max_side=8)
    assert from_data_url(url).size == (8, 5)
    with pytest.raises(InputError):
        from_data_url("data:text/plain;base64,aGk=")
    with pytest.raises(InputError):
        from_data_url("data:image/png;base64,bm90IGFuIGltYWdl")
    with pytest.raises(InputError):
        png_chunk_types(b"GIF89a")
