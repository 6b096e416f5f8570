"""VILA prompt templates: exact strings, image placement, system handling (no torch needed)."""

from __future__ import annotations

import pytest

from medm3.errors import InputError
from medm3.vlm.base import ImagePart, Message, TextPart
from medm3.vlm.vila.templates import render_prompt

LLAMA3_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language.<|eot_id|>"
)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)


@pytest.fixture
def image():
    from PIL import Image

    return Image.new("RGB", (8, 8), (10, 20, 30))


@pytest.fixture
def conversation(image) -> list[Message]:
    return [
        Message("user", [ImagePart(image), TextPart("What is this?")]),
        Message.text("assistant", "A chest X-ray."),
        Message.text("user", "Any effusion?"),
    ]


def test_llama_3_full_prompt(conversation, image) -> None:
    text, images = render_prompt(conversation, "llama_3")
    expected = (
        LLAMA3_SYSTEM
        + "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is this?<|eot_id|>"
        + "<|start_header_id|>assistant<|end_header_id|>\n\nA chest X-ray.<|eot_id|>"
        + "<|start_header_id|>user<|end_header_id|>\n\nAny effusion?<|eot_id|>"
        + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert text == expected
    assert images == [image]


def test_vicuna_v1_full_prompt(conversation) -> None:
    text, images = render_prompt(conversation, "vicuna_v1")
    expected = (
        VICUNA_SYSTEM
        + " USER: <image>\nWhat is this? ASSISTANT: A chest X-ray.</s>"
        + "USER: Any effusion? ASSISTANT:"
    )
    assert text == expected
    assert len(images) == 1


def test_system_message_replaces_default_only_when_given() -> None:
    messages = [Message.text("system", "Be brief."), Message.text("user", "Hi")]
    assert render_prompt(messages, "vicuna_v1")[0] == "Be brief. USER: Hi ASSISTANT:"
    assert render_prompt(messages, "llama_3")[0] == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (["IMG", "What?"], "<image>\nWhat?"),
        (["IMG", "\nWhat?"], "<image>\nWhat?"),
        (["IMG", "\n\nWhat?"], "<image>\nWhat?"),
        (["IMG", " What?"], "<image>\n What?"),
        (["Compare ", "IMG", "with", "IMG"], "Compare <image>\nwith<image>\n"),
        (["IMG", "IMG", "Both?"], "<image>\n<image>\nBoth?"),
    ],
)
def test_exactly_one_newline_after_each_image(image, parts, expected) -> None:
    content = [ImagePart(image) if p == "IMG" else TextPart(p) for p in parts]
    text, images = render_prompt([Message("user", content)], "vicuna_v1")
    assert text == f"{VICUNA_SYSTEM} USER: {expected} ASSISTANT:"
    assert len(images) == parts.count("IMG")


def test_tool_turns_are_user_turns_and_training_form() -> None:
    messages = [
        Message.text("user", "Segment the liver."),
        Message.text("assistant", "<VISTA3D(liver)>"),
        Message.text("tool", "The liver is 1.5 L."),
    ]
    text, _ = render_prompt(messages, "vicuna_v1")
    assert text.endswith(
        "USER: Segment the liver. ASSISTANT: <VISTA3D(liver)></s>"
        "USER: The liver is 1.5 L. ASSISTANT:"
    )
    done = [*messages[:2]]
    assert render_prompt(done, "llama_3", add_generation_prompt=False)[0].endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\n<VISTA3D(liver)><|end_of_text|>"
    )
    assert render_prompt(done, "vicuna_v1", add_generation_prompt=False)[0].endswith(
        "ASSISTANT: <VISTA3D(liver)></s>"
    )


def test_errors(image) -> None:
    with pytest.raises(InputError, match="system message"):
        render_prompt([Message("system", [ImagePart(image)]), Message.text("user", "x")], "llama_3")
    with pytest.raises(InputError, match="no user message"):
        render_prompt([Message.text("system", "x")], "llama_3")
    with pytest.raises(InputError, match="unknown VILA conversation template 'chatml'"):
        render_prompt([Message.text("user", "x")], "chatml")
