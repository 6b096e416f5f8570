"""One VLM builder for chat, serve and eval (medm3.cli.backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medm3.cli.backends import backend_options, build_vlm, model_id_for
from medm3.errors import InputError
from medm3.vlm.base import Message


def test_the_mock_echoes_the_last_line_of_the_question() -> None:
    vlm = build_vlm("mock", None)
    assert vlm.model_id == "mock"
    ask = [Message.text("user", "Here are the expert cards...\nIs there a lesion?")]
    assert vlm.generate(ask).text == "(mock model) You asked: Is there a lesion?"


def test_the_mock_script_is_read_and_refused_elsewhere(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text("<VISTA3D(liver)>\n---\nDone.\n")
    vlm = build_vlm("mock", "m", mock_script=script)
    ask = [Message.text("user", "q")]
    assert [vlm.generate(ask).text for _ in range(3)] == [
        "<VISTA3D(liver)>",
        "Done.",
        "(mock model) You asked: q",
    ]
    with pytest.raises(InputError, match="--mock-script needs --backend mock"):
        build_vlm("hf", "m", mock_script=script)


def test_options_the_backend_does_not_take_or_that_are_unset_are_dropped() -> None:
    class Backend:
        def __init__(self, model: str, device: str | None = None, base_url: str = "") -> None:
            pass

    got = backend_options(Backend, device="cpu", base_url=None, template="llama_3")
    assert got == {"device": "cpu"}


def test_the_model_id() -> None:
    assert model_id_for("mock", None) == "mock"
    assert model_id_for("hf", "org/model") == "org/model"
    with pytest.raises(InputError, match="has no default model"):
        model_id_for("hf", None)
