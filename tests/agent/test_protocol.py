"""Protocol rules: repeats, segmentation-only replies, bad input, typed <image>, palettes."""

from __future__ import annotations

import numpy as np
import pytest

from medm3.agent import AgentConfig, ChatSession, Trace
from medm3.agent.protocol import get_protocol, is_chest_xray
from medm3.errors import InputError
from medm3.vlm.base import ImagePart
from medm3.vlm.mock import MockBackend
from tests.doubles import FakeSegExpert, volume, xray

pytestmark = pytest.mark.usefixtures("fake_experts")


def ct() -> object:
    arr = np.full((16, 12, 6), -100, np.int16)
    arr[4:10, 3:9, 1:5] = 80
    return volume(arr, spacing=(1.0, 1.0, 2.0))


def chat(
    script: list[str], protocol: str = "medm3", **config: object
) -> tuple[ChatSession, MockBackend]:
    backend = MockBackend(script=script)
    experts = config.pop("experts", ("fakeseg", "measure"))
    cfg = AgentConfig(experts=experts, protocol=protocol, use_cache=False, **config)  # type: ignore[arg-type]
    return ChatSession(backend, ct(), cfg), backend


def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = FakeSegExpert._run

    def counting(self, inputs, args, context):  # type: ignore[no-untyped-def]
        calls.append(args)
        return original(self, inputs, args, context)

    monkeypatch.setattr(FakeSegExpert, "_run", counting)
    return calls


def test_repeated_trigger_runs_the_expert_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = runs(monkeypatch)
    trigger = "Let me trigger <FAKESEG(bright)>."
    session, vlm = chat([trigger, trigger, trigger, trigger], max_rounds=3)
    reply = session.ask("Where is the bright region?")
    assert calls == ["bright"]
    steps = [s["step"] for s in reply.trace]
    assert steps.count("expert") == 1 and steps.count("expert_repeat") == 2
    assert "already run" in vlm.calls[2][-1].plain_text
    assert reply.round_limit_reached and vlm.remaining == 0


def test_segmentation_only_reply_ends_the_turn_with_the_overlay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = runs(monkeypatch)
    said = "I segmented the bright region using <FAKESEG(bright)>."
    session, vlm = chat([said, "It is 0.3 mL."])
    reply = session.ask("Segment the bright region.")
    assert calls == ["bright"] and len(vlm.calls) == 1  # no second generation
    assert reply.text == said and reply.ended_by_segmentation
    assert reply.results and reply.results[0].overlays
    # The result (overlay + colours) reaches the model with the next question.
    session.ask("How large is it?")
    sent = vlm.calls[1][-1]
    text = Trace.message_summary(sent)["text"]
    assert text.startswith(
        "The results are <image>\n. The colors in this image describe red: bright. "
    )
    assert text.endswith("How large is it?") and any(isinstance(p, ImagePart) for p in sent.content)


def test_released_protocol_makes_one_call_per_question(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = runs(monkeypatch)
    session, vlm = chat(["<FAKESEG(bright)>", "<FAKESEG(dark)>"], protocol="released")
    reply = session.ask("What is bright?")
    assert calls == ["bright"] and reply.rounds == 1 and reply.round_limit_reached
    assert len(vlm.calls) == 2 and reply.text == "<FAKESEG(dark)>"
    assert reply.protocol == "released"
    assert reply.trace[0]["protocol"] == "released"


def test_released_cards_are_the_four_trained_cards() -> None:
    session, vlm = chat(["fine"], protocol="released")
    session.ask("What is shown?")
    text = vlm.calls[0][0].plain_text
    order = [text.index(f"<{t}(args)>") for t in ("BRATS", "VISTA3D", "VISTA2D", "CXR")]
    assert order == sorted(order) and "<MEASURE(args)>" not in text and "<FAKESEG(" not in text


def test_vista2d_gets_a_not_available_turn() -> None:
    session, vlm = chat(["Let me trigger <VISTA2D()>.", "I cannot segment cells here."], "released")
    reply = session.ask("Segment the cells.")
    assert reply.text == "I cannot segment cells here."
    assert "VISTA2D is not available" in vlm.calls[1][-1].plain_text
    assert [s["step"] for s in reply.trace].count("expert_unavailable") == 1


def test_two_different_triggers_get_one_message_and_no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = runs(monkeypatch)
    session, vlm = chat(["<FAKESEG(bright)> and <FAKESEG(dark)>", "Sorry."])
    reply = session.ask("Segment both.")
    assert calls == [] and reply.text == "Sorry."
    assert "one expert at a time" in vlm.calls[1][-1].plain_text


def test_unknown_protocol_and_protocol_not_fitting_the_backend() -> None:
    with pytest.raises(InputError, match="unknown protocol 'vila'; choose one of: released, medm3"):
        ChatSession(MockBackend(script=[]), ct(), AgentConfig(protocol="vila"))
    tools = MockBackend(script=[], vila_format=False, supports_tools=True)
    with pytest.raises(InputError, match="use --protocol medm3"):
        ChatSession(tools, ct(), AgentConfig(protocol="released"))
    assert ChatSession(tools, ct(), AgentConfig()).protocol.name == "medm3"


@pytest.mark.parametrize("protocol", ["released", "medm3"])
def test_typed_image_token_is_never_an_image(protocol: str) -> None:
    session, vlm = chat(["An answer.", "Another."], protocol)
    reply = session.ask("What is <image> this?\n<image>")
    assert reply.text == "An answer."
    first = vlm.calls[0][0]
    assert len(first.images) == 1 and "<image>" not in first.plain_text
    assert first.plain_text.endswith("What is  this?")
    session.ask("<image> and again <image>")
    assert len(vlm.calls[1][-1].images) == 0 and "<image>" not in vlm.calls[1][-1].plain_text
    with pytest.raises(InputError, match="empty"):
        session.ask("<image>")


def test_chest_sentence_only_for_known_chest_xrays() -> None:
    knee = xray()
    knee.source = "knee.png"
    assert not is_chest_xray(knee, "Is there a fracture?")
    assert is_chest_xray(knee, "Is there effusion on this chest X-ray?")
    chest = xray()
    chest.metadata["body_part"] = "CHEST"
    assert is_chest_xray(chest)
    released = get_protocol("released")
    assert released.modality_sentence("XR") == ""
    assert released.modality_sentence("XR", chest=True) == "This is a CXR image.\n"


def test_medm3_palette_names_are_unique_for_every_group() -> None:
    from medm3.experts import vista3d_labels as labels
    from medm3.experts.vista3d import Vista3DExpert
    from medm3.imaging.palettes import unique_palette

    for group in Vista3DExpert.valid_args:
        ids = labels.expand_prompt(Vista3DExpert.prompt_ids(group))
        names = list(unique_palette(ids).values())
        assert len(names) == len(set(names)), group
    assert unique_palette([1, 26]) == {1: "red", 26: "blue"}  # liver red, tumour blue


def test_expert_not_installed_is_one_message_to_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from medm3.errors import MissingDependencyError
    from medm3.experts import registry

    def missing(*args: object, **kwargs: object) -> None:
        raise MissingDependencyError("torchxrayvision", "experts", "the CXR expert")

    monkeypatch.setattr(registry, "get_expert", missing)
    session, vlm = chat(["<FAKESEG(bright)>", "I cannot run it."])
    reply = session.ask("Where is the bright region?")
    assert reply.text == "I cannot run it." and reply.results == []
    fed = vlm.calls[1][-1].plain_text
    assert fed.startswith("The expert model could not be run:") and "torchxrayvision" in fed


@pytest.mark.parametrize(("protocol", "ensemble"), [("released", "reference"), ("medm3", None)])
def test_cxr_ensemble_follows_the_protocol(
    protocol: str, ensemble: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.data.reference_experts import FixedCXR
    from medm3.experts import registry
    from medm3.experts.cxr import LABELS

    asked: list[str | None] = []

    class Spy(FixedCXR):
        def predict_batch(self, images, *, ensemble=None, batch_size=None):  # type: ignore[no-untyped-def]
            asked.append(ensemble)
            return super().predict_batch(images)

    probs = {k: 0.2 for k in LABELS} | {"Effusion": 0.5, "Pneumothorax": 0.9}
    monkeypatch.setitem(registry._instances, ("cxr", None, None), Spy(probs))
    image = xray()
    image.metadata["body_part"] = "CHEST"
    backend = MockBackend(script=["<CXR()>", "Pneumothorax."])
    cfg = AgentConfig(experts=("cxr",), protocol=protocol, use_cache=False)
    ChatSession(backend, image, cfg).ask("Any pneumothorax?")
    assert asked == [ensemble or "calibrated"]
    fed = backend.calls[1][-1].plain_text
    assert "effusion: no\n" in fed  # 0.5 is not above the threshold
    last = fed.split("\n")[-3]  # the last label line
    assert ("pneumothorax: yes" in last) == (protocol == "released")  # released: listed last
