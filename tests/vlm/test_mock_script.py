"""The mock backend driven by a script file (``--mock-script``): formats, errors, the agent loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medm3.errors import InputError, MedM3Error
from medm3.vlm.base import Message
from medm3.vlm.mock import MockBackend, ScriptExhaustedError, ScriptFile, load_script


def _user(text: str) -> list[Message]:
    return [Message.text("user", text)]


def test_text_script_splits_on_separator_lines(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("<VISTA3D(liver)>\n---\nThe liver is\nnormal.\n  ---  \n\n---\n")
    assert load_script(f) == ["<VISTA3D(liver)>", "The liver is\nnormal."]


def test_json_script_entries(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(
        json.dumps(
            [
                "plain",
                {"text": "wrapped"},
                {"tool_calls": [{"name": "VISTA3D", "arguments": {"args": "liver"}}]},
                {"error": "boom"},
            ]
        )
    )
    entries = load_script(f)
    assert entries[:2] == ["plain", "wrapped"]
    assert entries[2][0].name == "VISTA3D" and entries[2][0].arguments == {"args": "liver"}
    vlm = MockBackend(script=entries, supports_tools=True)
    assert vlm.generate(_user("a")).text == "plain"
    assert vlm.generate(_user("b")).text == "wrapped"
    assert vlm.generate(_user("c")).finish_reason == "tool_calls"
    with pytest.raises(MedM3Error, match="boom"):
        vlm.generate(_user("d"))


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.txt", None, "mock script not found"),
        ("bad.json", "{not json", "not valid JSON"),
        ("obj.json", '{"a": 1}', "must be a list"),
        ("num.json", "[1]", "reply 1: expected a string"),
        ("empty.txt", "\n---\n  \n", "no replies"),
    ],
)
def test_bad_scripts_are_input_errors(tmp_path: Path, name: str, content: str | None, needle):
    f = tmp_path / name
    if content is not None:
        f.write_text(content)
    with pytest.raises(InputError, match=needle) as info:
        load_script(f)
    assert str(f) in str(info.value)


def test_script_file_then_echo_or_error(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("first\n---\nsecond\n")
    vlm = MockBackend(script_file=f)
    assert [vlm.generate(_user(q)).text for q in ("a", "b", "c")] == [
        "first",
        "second",
        "(mock model) You asked: c",
    ]
    strict = MockBackend(script=ScriptFile(f, then="error"))
    strict.generate(_user("a"))
    strict.generate(_user("b"))
    with pytest.raises(ScriptExhaustedError, match=r"all 2 replies .*\(call #3\)") as info:
        strict.generate(_user("c"))
    assert str(f) in str(info.value)
    with pytest.raises(ValueError, match="not both"):
        MockBackend(script=["x"], script_file=f)


def test_script_file_drives_the_whole_agent_loop(tmp_path: Path, fake_experts: None) -> None:
    """Trigger from the file -> the expert runs -> its result goes back -> the scripted answer."""
    from medm3.agent import AgentConfig, ChatSession
    from medm3.imaging.image import MedicalImage

    f = tmp_path / "s.txt"
    f.write_text("<FAKESEG(bright)>\n---\nThe bright region is segmented.\n")
    array = np.zeros((8, 8, 4), dtype=np.int16)
    array[2:5, 2:5, 1:3] = 100
    image = MedicalImage(array, (1.0, 1.0, 1.0), np.eye(4), "CT", "caller", source="synthetic")
    vlm = MockBackend(script_file=f)
    session = ChatSession(
        vlm, image, AgentConfig(experts=("fakeseg",), output_dir=tmp_path / "out")
    )
    reply = session.ask("Segment the bright part")
    assert reply.text == "The bright region is segmented."
    assert reply.rounds == 1
    expert = [s for s in reply.trace if s["step"] == "expert"]
    assert expert and expert[0]["args"] == "bright"
    assert any(p.endswith(".png") for p in reply.files)
    assert "The results are" in vlm.calls[1][-1].plain_text  # the expert's feedback turn
