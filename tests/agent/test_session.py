"""The agent loop with the scripted mock backend and a test-double expert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medm3 import prompts
from medm3.agent import AgentConfig, ChatSession, Trace
from medm3.errors import InputError
from medm3.vlm.base import ImagePart, ToolCall
from medm3.vlm.mock import MockBackend
from tests.doubles import FakeSegExpert, volume

pytestmark = pytest.mark.usefixtures("fake_experts")


def ct() -> object:
    arr = np.full((16, 12, 6), -100, np.int16)
    arr[4:10, 3:9, 1:5] = 80  # a bright 6x6x4 block (2 mm slices -> 288 mm^3)
    return volume(arr, spacing=(1.0, 1.0, 2.0))


def session(script, **config) -> tuple[ChatSession, MockBackend]:
    backend = MockBackend(script=script)
    config.setdefault("protocol", "medm3")
    cfg = AgentConfig(experts=config.pop("experts", ("fakeseg", "measure")), **config)
    return ChatSession(backend, ct(), cfg), backend


def vlm_view_slice(vlm) -> int:
    """The slice index recorded on the picture the mock VLM received."""
    return vlm.calls[0][0].images[0].info["medm3"]["index"]


def test_trigger_expert_feedback_answer():
    chat, vlm = session(
        ["This looks like a CT image. Let me trigger <FAKESEG(bright)>. ", "It is the red block."]
    )
    reply = chat.ask("Where is the bright region?")
    assert reply.text == "It is the red block." and reply.rounds == 1
    first = vlm.calls[0][0]
    text = first.plain_text
    assert text.startswith(prompts.MODEL_CARDS_HEADER) and "<FAKESEG(args)>" in text
    assert "This is a CT image.\nWhere is the bright region?" in text
    assert [type(p).__name__ for p in first.content] == ["TextPart", "ImagePart", "TextPart"]
    feedback = vlm.calls[1][-1]
    assert feedback.role == "user" and isinstance(feedback.content[1], ImagePart)
    assert Trace.message_summary(feedback)["text"] == (
        "The results are <image>\n. The colors in this image describe red: bright. "
        "Use this result to respond to this prompt:\nWhere is the bright region?."
    )
    kinds = [s["step"] for s in reply.trace]
    assert kinds == ["question", "view", "generate", "expert", "generate", "answer"]
    view = reply.trace[1]  # what the VLM was shown: plane, slice, window
    assert (view["image"], view["plane"]) == ("image", "axial")
    assert view["slice"] == vlm_view_slice(vlm) and view["window"].startswith("soft_tissue")
    assert reply.trace[3]["trigger"] == "<FAKESEG(bright)>"
    json.dumps(reply.trace)  # the trace is JSON-serialisable


def test_invalid_trigger_goes_back_to_the_model_and_is_not_run():
    chat, vlm = session(["<FAKESEG(purple)>", "Sorry, I cannot segment that."])
    reply = chat.ask("Segment purple things")
    assert reply.text == "Sorry, I cannot segment that." and reply.results == []
    assert "'purple' is not a valid argument" in vlm.calls[1][-1].plain_text
    assert [s["step"] for s in reply.trace].count("expert_error") == 1


def test_unknown_expert_error_lists_available():
    chat, vlm = session(["<FOO()>", "ok"])
    chat.ask("q")
    assert "no expert named FOO" in vlm.calls[1][-1].plain_text


def test_chaining_segment_then_measure(tmp_path):
    chat, vlm = session(
        ["<FAKESEG(everything)>", "<MEASURE(bright)>", "The bright block is 0.3 mL."],
        output_dir=tmp_path,
    )
    reply = chat.ask("How large is the bright region?")
    assert reply.rounds == 2 and [r.expert for r in reply.results] == ["fakeseg", "measure"]
    measure = reply.results[1].measurements[0]
    assert measure["name"] == "bright" and measure["volume_ml"] == pytest.approx(0.288)
    assert vlm.calls[2][-1].plain_text.lstrip("\n").startswith(prompts.MEASUREMENT_HEADER)
    assert any(f.endswith("result.json") for f in reply.files)
    assert all(Path(f).is_file() and tmp_path in Path(f).parents for f in reply.files)


def test_round_limit():
    chat, _ = session(
        ["<FAKESEG(bright)>", "<FAKESEG(dark)>", "<FAKESEG(everything)>"], max_rounds=2
    )
    reply = chat.ask("q")
    assert reply.rounds == 2 and reply.round_limit_reached
    assert reply.text == "<FAKESEG(everything)>"
    assert reply.trace[-2]["step"] == "round_limit"


def test_cache_reuse_across_questions():
    chat, _ = session(["<FAKESEG(bright)>", "a", "<FAKESEG(bright)>", "b"])
    first = chat.ask("q1")
    second = chat.ask("q2")
    assert first.results[0].info["cache"] == "miss"
    assert second.results[0].info["cache"] == "hit"
    from medm3.experts.registry import get_expert

    expert = get_expert("fakeseg")
    assert isinstance(expert, FakeSegExpert) and expert.run_calls == 1


def test_follow_up_question_has_no_second_image():
    chat, vlm = session(["a", "b"])
    chat.ask("first")
    chat.ask("second")
    last = vlm.calls[1]
    assert last[-1].plain_text == "second" and last[-1].images == []
    assert sum(len(m.images) for m in last) == 1


def test_no_experts_means_no_cards_and_no_calls():
    chat, vlm = session(["<FAKESEG(bright)>"], use_experts=False)
    reply = chat.ask("q")
    assert reply.rounds == 0 and reply.text == "<FAKESEG(bright)>"
    assert prompts.MODEL_CARDS_HEADER not in vlm.calls[0][0].plain_text


def test_wrong_modality_is_reported_to_the_model():
    backend = MockBackend(script=["<FAKESEG(bright)>", "That tool is for CT."])
    mr = volume(modality="MR")
    reply = ChatSession(backend, mr, AgentConfig(experts=("fakeseg",), protocol="medm3")).ask("q")
    assert reply.results == [] and "works on CT images" in backend.calls[1][-1].plain_text


def test_native_tool_calls():
    backend = MockBackend(
        script=[ToolCall("FAKESEG", {"args": "bright"}, id="call_1"), "done"], supports_tools=True
    )
    chat = ChatSession(backend, ct(), AgentConfig(experts=("fakeseg",), protocol="medm3"))
    reply = chat.ask("segment")
    assert reply.text == "done" and reply.rounds == 1
    request = backend.requests[0]
    assert request.tools and request.tools[0]["function"]["name"] == "FAKESEG"
    msgs = backend.calls[1]
    assert msgs[0].role == "system" and prompts.MODEL_CARDS_HEADER not in msgs[1].plain_text
    tool_turn = msgs[-1]
    assert tool_turn.role == "tool" and tool_turn.tool_call_id == "call_1"


def test_brats_first_turn_has_four_named_images():
    backend = MockBackend(script=["ok"])
    seqs = {
        name: volume(modality="MR", seed=i) for i, name in enumerate(["t1ce", "t1", "t2", "flair"])
    }
    ChatSession(backend, seqs, AgentConfig(experts=("brats",))).ask("Is there a tumour?")
    first = backend.calls[0][0]
    assert len(first.images) == 4
    text = first.plain_text
    assert "T1(contrast enhanced): " in text and "These are different MRI modalities.\n" in text


def test_streaming_callback_and_empty_question():
    chat, _ = session(["<FAKESEG(bright)>", "streamed answer"])
    pieces: list[str] = []
    reply = chat.ask("q", on_text=pieces.append)
    assert "".join(pieces) == "<FAKESEG(bright)>streamed answer" and reply.rounds == 1
    with pytest.raises(InputError):
        chat.ask("   ")


def test_streamed_turns_keep_finish_reason_and_token_counts():
    from medm3.vlm.base import Generation

    call = Generation("<FAKESEG(bright)>", prompt_tokens=30, completion_tokens=6)
    cut = Generation("The bright region", finish_reason="length", completion_tokens=4)
    chat, _ = session([call, cut])
    pieces: list[str] = []
    reply = chat.ask("q", on_text=pieces.append)
    steps = [s for s in reply.trace if s["step"] == "generate"]
    got = [(s["finish_reason"], s["prompt_tokens"], s["completion_tokens"]) for s in steps]
    assert got == [("stop", 30, 6), ("length", 0, 4)]
    assert "".join(pieces) == "<FAKESEG(bright)>The bright region"


def test_unnamed_images_rejected():
    with pytest.raises(InputError, match="need names"):
        ChatSession(MockBackend(script=[]), [volume(), volume()])
