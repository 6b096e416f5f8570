"""Tests of the scripted mock backend."""

from __future__ import annotations

import pytest
from PIL import Image

from medm3.errors import MedM3Error
from medm3.vlm import load_backend
from medm3.vlm.base import (
    Generation,
    GenerationConfig,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    collect_stream,
)
from medm3.vlm.mock import MockBackend, ScriptExhaustedError


def _user(text: str) -> list[Message]:
    return [Message.text("user", text)]


def test_script_order_and_recording() -> None:
    vlm = MockBackend(script=["<VISTA3D(liver)>", "The liver is normal."])
    image = Image.new("RGB", (4, 4))
    conv = [Message("user", [ImagePart(image), TextPart("Segment the liver")])]
    cfg = GenerationConfig(max_new_tokens=5)
    assert vlm.generate(conv, cfg).text == "<VISTA3D(liver)>"
    conv.append(Message.text("assistant", "<VISTA3D(liver)>"))
    conv.append(Message.text("user", "The results are ..."))
    assert vlm.generate(conv).text == "The liver is normal."

    assert len(vlm.calls) == 2
    assert [m.role for m in vlm.calls[0]] == ["user"]  # a copy: later appends not seen
    assert vlm.calls[0][0].images == [image]
    assert vlm.calls[1][-1].plain_text == "The results are ..."
    assert vlm.requests[0].config.max_new_tokens == 5
    assert vlm.remaining == 0


def test_exhaustion_is_a_clear_error() -> None:
    vlm = MockBackend(script=["only one"])
    vlm.generate(_user("a"))
    with pytest.raises(ScriptExhaustedError, match=r"1 answer\(s\) scripted, call #2.*'b'"):
        vlm.generate(_user("b"))
    assert isinstance(ScriptExhaustedError("x"), MedM3Error)
    assert len(vlm.calls) == 2  # the failing call is recorded too


def test_no_script_fails_on_first_call() -> None:
    with pytest.raises(ScriptExhaustedError):
        MockBackend().generate(_user("hi"))


def test_callable_script_sees_messages() -> None:
    vlm = MockBackend(script=lambda msgs: f"echo: {msgs[-1].plain_text}")
    assert vlm.generate(_user("x")).text == "echo: x"
    assert vlm.generate(_user("y")).text == "echo: y"
    assert vlm.remaining == 0


def test_flags_default_and_configurable() -> None:
    assert MockBackend().vila_format is True
    assert MockBackend().supports_tools is False
    vlm = MockBackend(vila_format=False, supports_tools=True)
    assert vlm.vila_format is False and vlm.supports_tools is True
    assert MockBackend.vila_format is True  # the class default is untouched


def test_scripted_tool_calls_and_generation_entries() -> None:
    call = ToolCall("VISTA3D", {"target": "liver"}, id="c1")
    tools = [{"type": "function", "function": {"name": "VISTA3D"}}]
    vlm = MockBackend(
        script=[call, [call, ToolCall("BRATS")], Generation("done", finish_reason="length")],
        supports_tools=True,
    )
    first = vlm.generate(_user("a"), tools=tools)
    assert first.finish_reason == "tool_calls" and first.tool_calls == [call]
    assert first.tool_calls[0] is not call  # a copy
    assert [c.name for c in vlm.generate(_user("b")).tool_calls] == ["VISTA3D", "BRATS"]
    assert vlm.generate(_user("c")).finish_reason == "length"
    assert vlm.requests[0].tools == tools


def test_scripted_exception_is_raised() -> None:
    vlm = MockBackend(script=[RuntimeError("boom"), "after"])
    with pytest.raises(RuntimeError, match="boom"):
        vlm.generate(_user("a"))
    assert vlm.generate(_user("b")).text == "after"


def test_stream_and_batch() -> None:
    vlm = MockBackend(script=["the liver is fine", "a", "b"])
    chunks = list(vlm.stream(_user("q")))
    assert len(chunks) > 1 and "".join(chunks) == "the liver is fine"
    assert [g.text for g in vlm.generate_batch([_user("1"), _user("2")])] == ["a", "b"]
    assert [r.method for r in vlm.requests] == ["stream", "generate_batch", "generate_batch"]


def test_stream_returns_the_scripted_generation() -> None:
    scripted = Generation("cut short", finish_reason="length", completion_tokens=2)
    vlm = MockBackend(script=[scripted])
    seen: list[str] = []
    returned = collect_stream(vlm.stream(_user("q")), seen.append)
    assert returned == scripted and returned is not scripted and seen == ["cut", " short"]


def test_push_and_registry() -> None:
    vlm = load_backend("mock", "mock", script=["x"])
    assert isinstance(vlm, MockBackend)
    vlm.push("y")
    assert [vlm.generate(_user("1")).text, vlm.generate(_user("2")).text] == ["x", "y"]
