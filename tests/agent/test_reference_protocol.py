"""The ``released`` protocol replays the reference's own training conversations exactly.

``golden/reference_conversations.json`` was produced by running the reference
repository's conversation builders and VILA's ``preprocess_multimodal`` (see
``golden/make_golden.py`` and the file's ``provenance``). Each conversation is
replayed through :class:`~medm3.agent.session.ChatSession` with a scripted
model that answers what the reference model was trained to answer and experts
that return the labels / probabilities the reference texts describe. The
rendered prompt text and its token ids (tiny VILA ``llama_3`` tokenizer) must
be identical turn by turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3.agent import AgentConfig, ChatSession
from medm3.data.reference_experts import FixedCXR, ReferenceBrats, ReferenceVista3D
from medm3.experts.cxr import LABELS
from medm3.imaging.image import MedicalImage
from medm3.vlm.base import ImagePart, Message, TextPart
from medm3.vlm.mock import MockBackend
from tests.data.replay import render
from tests.doubles import volume

GOLDEN = json.loads((Path(__file__).parent / "golden" / "reference_conversations.json").read_text())
FEEDBACK_STARTS = ("The results are", "The resulting predictions are")
SHAPE = (24, 20, 6)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from medm3.testing import build_tiny_vila
    from medm3.vlm.vila.tokenize import load_tokenizer

    folder = build_tiny_vila(tmp_path_factory.mktemp("vila") / "tiny", "llama_3")
    return load_tokenizer(folder / "llm")[0]


def _labels(regions: dict[str, list[int]]) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    for lid, (r0, r1, c0, c1) in regions.items():
        label[r0:r1, c0:c1, 2:5] = int(lid)
    label[0:2, 0:2, 0] = 10  # off the shown slice, as in the reference run
    return label


def _vista3d_case(case: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    colours = GOLDEN["demo_colours"]["vista3d"]
    text = " ".join(t["value"] for t in case["conversation"][1:])  # not the cards
    key = "organs"
    if "hepatic tumor" in text:
        key = "liver+hepatic tumor" if "blue: hepatic tumor" in text else "liver"
    image = volume(np.full(SHAPE, 40, np.int16), spacing=(1.0, 1.0, 2.0), modality="CT")
    return image, {"vista3d": ReferenceVista3D(_labels(colours[key]["regions"]))}


def _brats_case() -> tuple[Any, dict[str, Any]]:
    label = np.zeros(SHAPE, np.uint8)
    label[4:16, 4:16, 2:5] = 2
    label[6:12, 6:12, 2:5] = 1
    label[8:10, 8:10, 2:5] = 4
    images = {
        name: volume(np.full(SHAPE, 100, np.int16), modality="MR", seed=i)
        for i, name in enumerate(("t1ce", "t1", "t2", "flair"))
    }
    return images, {"brats": ReferenceBrats(label)}


def _cxr_case(case: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    probs = {k: float(case["ensemble"][k]) for k in LABELS}  # the expert's own order
    image = MedicalImage(
        array=np.zeros((16, 16), np.uint8),
        spacing=(1.0, 1.0),
        affine=np.eye(4),
        modality="XR",
        modality_source="inferred",
        source="cxr_0001.png",
    )
    return image, {"cxr": FixedCXR(probs)}


def _questions(case: dict[str, Any]) -> list[str]:
    turns = case["conversation"]
    first = turns[0]["value"].split("image.\n", 1)[-1].split("modalities.\n", 1)[-1]
    later = [
        t["value"]
        for t in turns[1:]
        if t["from"] == "human" and not t["value"].startswith(FEEDBACK_STARTS)
    ]
    return [first, *later]


def _golden_messages(turns: list[dict[str, str]]) -> list[Message]:
    from PIL import Image

    from medm3 import prompts

    out = []
    for turn in turns:
        parts: list[Any] = [
            ImagePart(Image.new("RGB", (4, 4))) if p is None else TextPart(p)
            for p in prompts.split_images(turn["value"])
        ]
        out.append(Message("user" if turn["from"] == "human" else "assistant", parts))
    return out


@pytest.mark.parametrize("index", range(len(GOLDEN["cases"])))
def test_released_protocol_replays_reference_conversation(
    index: int, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.experts import registry
    from medm3.vlm.vila.templates import render_prompt
    from medm3.vlm.vila.tokenize import tokenize_prompt

    case = GOLDEN["cases"][index]
    if case["kind"] == "vista3d":
        images, experts = _vista3d_case(case)
    elif case["kind"] == "brats":
        images, experts = _brats_case()
    else:
        images, experts = _cxr_case(case)
    monkeypatch.setattr(registry, "_instances", {})
    for name, expert in experts.items():
        registry._instances[(name, None, None)] = expert
    script = [t["value"] for t in case["conversation"] if t["from"] == "gpt"]
    backend = MockBackend(script=script)
    chat = ChatSession(backend, images, AgentConfig(use_cache=False))
    assert chat.protocol.name == "released"  # the default for VILA-format backends
    for question in _questions(case):
        chat.ask(question)
    assert backend.remaining == 0

    ours = render(chat.messages)
    golden = [(t["from"], t["value"]) for t in case["conversation"]]
    assert ours == golden
    # The prompts the model received, turn by turn: text and token ids.
    golden_messages = _golden_messages(case["conversation"])
    for k, sent in enumerate(backend.calls):
        text, pictures = render_prompt(sent, "llama_3")
        want, want_pictures = render_prompt(golden_messages[: len(sent)], "llama_3")
        assert text == want, f"prompt {k} differs"
        assert len(pictures) == len(want_pictures)
        assert tokenize_prompt(text, tokenizer) == tokenize_prompt(want, tokenizer)


def test_golden_covers_the_issue_cases() -> None:
    kinds = [c["kind"] for c in GOLDEN["cases"]]
    texts = [" ".join(t["value"] for t in c["conversation"][1:]) for c in GOLDEN["cases"]]
    assert {"vista3d", "brats", "cxr"} <= set(kinds)
    assert any("hepatic tumor" in t and t.endswith("hepatic tumors.") for t in texts)  # yes
    assert any("hepatic tumor" in t and t.endswith(" no") for t in texts)  # no
    assert any(len(c["conversation"]) == 2 for c in GOLDEN["cases"])  # segmentation-only
    assert any("such as identified by VISTA3D" in t for t in texts)  # "what is" question


def test_released_palette_equals_the_reference_dye() -> None:
    from medm3.imaging.palettes import reference_palette

    ref = GOLDEN["demo_colours"]["palette"]
    ids = [int(i) for i in ref["colormap"]]
    assert {str(k): v for k, v in reference_palette([*ids, 0]).items()} == ref["colormap"]
    assert 99 not in ids  # the reference names only what is on the shown slice
