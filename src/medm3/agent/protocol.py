"""How the agent talks to the model: the ``released`` and the ``medm3`` protocol.

A :class:`Protocol` owns every text and rule of an expert-calling conversation:
the model cards, the first turn (image placement, modality sentence), the
assistant's trigger phrasing (for training data), the expert feedback (text,
``<image>`` position, overlay colours), how many expert calls one question may
make and when a turn ends. The agent (:mod:`medm3.agent.session`) and the
training-data builders (:mod:`medm3.data.conversation`) use the same object,
so training text and inference text cannot drift apart.

``released`` reproduces, byte for byte, the expert conversations the released
VILA-M3 checkpoints were fine-tuned on (the reference repository's
``m3/data_prepare/experts`` builders after VILA's ``preprocess_multimodal``
normalisation of ``<image>``), and the reference demo's rules where training has
no example: four model cards (VISTA2D included, answered with a "not
available" turn), one expert call per question, a reply saying "segmented"
ends the turn with the overlay, colours from the reference's 16-name list
cycled over the labels on the shown slice, CXR findings in the reference
ensemble's order with ``> 0.5``.

``medm3`` keeps the same phrasing and adds: the cards of the experts installed
(MEASURE, plugins), chaining up to ``max_rounds`` calls with repeat detection
(a trigger already run for the question is never run again), and overlay
colours whose names are unique within one overlay.

docs/fidelity.md lists every point with the reference file and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medm3 import prompts
from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage
    from medm3.vlm.base import VLMBackend

RELEASED = "released"
MEDM3 = "medm3"
#: Protocol names, the default first.
PROTOCOLS: tuple[str, ...] = (RELEASED, MEDM3)

IMG = prompts.IMAGE_TOKEN

#: The released model-card block: the four experts in this order (VISTA2D is not in medm3).
RELEASED_CARD_ORDER: tuple[str, ...] = ("BRATS", "VISTA3D", "VISTA2D", "CXR")
#: The VISTA2D card the released checkpoints saw (the expert itself is not part of medm3).
VISTA2D_CARD = prompts.model_card(
    "VISTA2D",
    modality="cell imaging",
    task="segmentation",
    overview=(
        "model for cell segmentation, which was trained on a variety of cell imaging outputs, "
        "including brightfield, phase-contrast, fluorescence, confocal, or electron microscopy"
    ),
    accuracy="Good accuracy across several cell imaging datasets",
    valid_args=(),
)
#: How each modality code is named in the modality sentence, per protocol.
MODALITY_WORDS: dict[str, dict[str, str]] = {
    RELEASED: {"CT": "CT", "MR": "MRI", "US": "US"},
    MEDM3: {"CT": "CT", "MR": "MRI", "US": "ultrasound", "PT": "PET"},
}
#: The word of a chest X-ray (only said when the image is known to be one).
CHEST_XRAY_WORD = "CXR"
_CHEST_WORDS = re.compile(r"chest|thorax|cxr|lung", re.IGNORECASE)
_CHEST_QUESTION = re.compile(r"\bcxr\b|chest x-?ray|chest radiograph", re.IGNORECASE)
#: The word whose presence in a trigger reply makes it a segmentation-only answer.
SEGMENTED_WORD = "segmented"
#: The trained answer to a segmentation request: ``I <verb> ... using <TRIGGER(...)>``.
_SEGMENTATION_ANSWER = re.compile(r"^\s*I\s+\w+[^<]*\busing\s*<")


def is_chest_xray(image: MedicalImage, question: str = "") -> bool:
    """True when a 2-D X-ray is known to show a chest.

    Known means: the DICOM body part or series description names the chest /
    thorax / lung, the file name says ``cxr`` or ``chest``, or the question
    mentions a chest X-ray (the reference demo's rule for file names and text).

    Args:
        image: The image.
        question: The user's question.
    """
    if image.is_volume or (image.modality or "").upper() != "XR":
        return False
    md = image.metadata or {}
    described = " ".join(str(md.get(k, "")) for k in ("body_part", "series_description"))
    name = str(image.source or "").replace("\\", "/").rsplit("/", 1)[-1]
    return bool(
        _CHEST_WORDS.search(described)
        or re.search(r"cxr|chest", name, re.IGNORECASE)
        or _CHEST_QUESTION.search(question or "")
    )


def strip_image_tokens(text: str) -> str:
    """Remove every literal ``<image>`` a person (or the model) typed.

    Only the agent places image placeholders; typed ones would be counted as
    images by VILA's tokenisation. They are removed the way the reference's
    data builders remove them (``"\\n<image>"`` first, then ``"<image>"``).
    """
    return text.replace("\n" + IMG, "").replace(IMG, "")


@dataclass(frozen=True)
class Protocol:
    """One conversation protocol (see the module docstring).

    Attributes:
        name: ``released`` or ``medm3``.
    """

    name: str

    @property
    def released(self) -> bool:
        """True for the ``released`` protocol."""
        return self.name == RELEASED

    # ------------------------------------------------------------------ rules
    def max_calls(self, configured: int) -> int:
        """Most expert calls per question (``released``: one, the reference's rule)."""
        return min(int(configured), 1) if self.released else int(configured)

    @property
    def detects_repeats(self) -> bool:
        """Whether a trigger already run for this question is refused (``medm3``)."""
        return not self.released

    @property
    def overlay_alpha(self) -> float:
        """Opacity of the overlay fed to the model (the reference's label2rgb uses 0.3)."""
        return 0.3 if self.released else 0.45

    def segmentation_only(self, reply: str, task: str, trigger: str = "") -> bool:
        """True when a trigger reply is itself the answer ("I segmented ... <VISTA3D(...)>").

        The demo's rule ("segmented" in the reply) plus the trained form of the
        answers to segmentation requests (``I isolated the organs using
        <VISTA3D(organs)>``). BraTS is excluded: its training sample after
        ``I segmented any brain tumors using <BRATS()>.`` has the result and an answer.
        """
        if task != "segmentation" or trigger.upper() == "BRATS" or "Let me" in reply:
            return False
        return SEGMENTED_WORD in reply or bool(_SEGMENTATION_ANSWER.match(reply))

    def palette(self, ids: Iterable[int]) -> dict[int, str]:
        """Id -> colour name for the labels of one overlay (ascending ids)."""
        from medm3.imaging.palettes import reference_palette, unique_palette

        return reference_palette(ids) if self.released else unique_palette(ids)

    def ensemble(self) -> str | None:
        """The CXR ensemble this protocol asks for (``None``: the expert's default)."""
        return "reference" if self.released else None

    # ------------------------------------------------------------- first turn
    def cards(self, expert_names: Sequence[str]) -> str:
        """The model-card block (``released``: always the four cards the models saw).

        Args:
            expert_names: Registry names of the experts offered.
        """
        from medm3.experts.registry import get_expert_class, model_cards

        if not self.released:
            return model_cards(list(expert_names))
        by_trigger = {}
        for name in ("brats", "vista3d", "cxr"):
            cls = get_expert_class(name)
            by_trigger[cls.trigger] = cls.model_card()
        by_trigger["VISTA2D"] = VISTA2D_CARD
        return prompts.model_cards_block(by_trigger[t] for t in RELEASED_CARD_ORDER)

    def card_triggers(self) -> tuple[str, ...]:
        """Trigger names the ``released`` cards announce (empty for ``medm3``)."""
        return RELEASED_CARD_ORDER if self.released else ()

    def modality_sentence(self, modality: str | None, *, chest: bool = False) -> str:
        """``This is a CT image.\\n`` (empty when the modality is unknown or other).

        Args:
            modality: Modality code (``CT``, ``MR``, ``XR`` ...).
            chest: The image is known to be a chest X-ray (only then ``CXR``).
        """
        code = (modality or "").upper()
        word = CHEST_XRAY_WORD if code == "XR" and chest else MODALITY_WORDS[self.name].get(code)
        return f"This is a {word} image.\n" if word else ""

    def first_turn(
        self, question: str, modality: str | None, *, cards: str = "", chest: bool = False
    ) -> str:
        """The first user turn for one image, as VILA normalises it.

        ``{cards} <image>\\n{modality sentence}{question}`` (no space before the
        image without cards).
        """
        sentence = self.modality_sentence(modality, chest=chest)
        return prompts.image_join(cards, sentence + strip_image_tokens(question).strip())

    def brats_first_turn(self, question: str, *, cards: str = "") -> str:
        """The first user turn for the four BraTS sequences (four images, named)."""
        return prompts.brats_first_turn(strip_image_tokens(question), model_cards=cards)

    # --------------------------------------------------------------- feedback
    def segmentation_feedback(
        self, items: Sequence[tuple[str, str]], question: str, *, answer: bool = True
    ) -> str:
        """Feedback of a segmentation (VISTA3D style), with one image placeholder.

        Args:
            items: ``(colour, structure)`` pairs of the structures on the overlay.
            question: The user's question.
            answer: Ask the model to answer (False: a segmentation-only reply,
                the feedback is the result and the turn ends).
        """
        described = ", ".join(f"{c}: {n}" for c, n in items) or "no structures found"
        text = f"The results are {IMG}\n. The colors in this image describe {described}. "
        return text + (self.instruction(question) if answer else "")

    def brats_feedback(
        self, colours: Mapping[int, str], question: str, *, answer: bool = True
    ) -> str:
        """Feedback of a BraTS segmentation from the colours of labels 1 (NCR), 2 (ED), 4 (ET).

        With all three labels present this is the training text ``yellow and
        red: tumor core, only yellow: enhancing tumor, all colors: whole tumor``.
        """
        ncr, ed, et = colours.get(1), colours.get(2), colours.get(4)
        parts = []
        if ncr is not None and et is not None:
            parts.append(f"{et} and {ncr}: tumor core")
        if et is not None:
            parts.append(f"only {et}: enhancing tumor")
        if ncr is not None or ed is not None or et is not None:
            parts.append("all colors: whole tumor")
        described = ", ".join(parts) or "no tumor found"
        text = f"The results are {IMG}\n. The colors in this image describe\n{described}\n"
        return text + (self.instruction(question) if answer else "")

    def classification_feedback(self, probabilities: Mapping[str, float], question: str) -> str:
        """Feedback of the CXR expert: ``label: yes/no`` lines, then the question.

        ``released``: the reference ensemble file's label order (torchxrayvision's
        order with Pneumothorax last, as the training data listed them) and
        ``> 0.5``; the lines end with ``"\\n. "`` as in training. ``medm3``: the
        expert's order, same threshold, no stray ``.`` line.
        """
        order = list(probabilities)
        if self.released:
            order = [k for k in order if k != "Pneumothorax"] + (
                ["Pneumothorax"] if "Pneumothorax" in probabilities else []
            )
        lines = "".join(
            f"{k.lower().replace('_', ' ')}: "
            f"{'yes' if float(probabilities[k]) > prompts.CXR_TEXT_THRESHOLD else 'no'}\n"
            for k in order
        )
        head = f"{prompts.CLASSIFICATION_HEADER}\n{lines}"
        head += ". " if self.released else ""
        return head + prompts.CLASSIFICATION_FOLLOW_UP + strip_image_tokens(question)

    def text_feedback(self, result_text: str, question: str) -> str:
        """Feedback of an expert without its own format (MEASURE, plugins)."""
        text = result_text if result_text.endswith((" ", "\n")) else result_text + "\n"
        return text + self.instruction(question)

    def instruction(self, question: str) -> str:
        """``Use this result to respond to this prompt:\\n{question}.`` (training form)."""
        q = strip_image_tokens(question).strip()
        if not self.released and q.endswith("."):
            return prompts.FOLLOW_UP_INSTRUCTION + q
        return f"{prompts.FOLLOW_UP_INSTRUCTION}{q}."

    def unavailable_feedback(self, trigger: str, question: str) -> str:
        """The turn answering a call of an expert this installation does not have."""
        return (
            f"The expert model {trigger} is not available in this system. "
            f"Respond to this prompt without it:\n{strip_image_tokens(question).strip()}"
        )

    def repeat_feedback(self, trigger: str, question: str) -> str:
        """The turn answering a trigger already run for this question (``medm3``)."""
        return (
            f"{trigger} was already run for this question; its result is above. "
            f"Do not call it again. Respond to this prompt:\n{strip_image_tokens(question).strip()}"
        )

    # ------------------------------------------------------------ assistant
    def trigger_reply(self, trigger: str, args: str = "", *, segmented: bool = False) -> str:
        """The assistant turn that calls an expert, in the training phrasing."""
        if segmented and trigger.upper() == "BRATS":
            return f"I segmented any brain tumors using {prompts.format_trigger(trigger, args)}."
        return prompts.trigger_reply(trigger, args)


_BY_NAME = {name: Protocol(name) for name in PROTOCOLS}


def get_protocol(name: str | Protocol) -> Protocol:
    """The protocol of a name.

    Raises:
        InputError: Unknown name (the message lists the valid ones).
    """
    if isinstance(name, Protocol):
        return name
    key = str(name).strip().lower()
    if key not in _BY_NAME:
        raise InputError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}")
    return _BY_NAME[key]


def default_protocol(backend: VLMBackend | Any) -> str:
    """``released`` for VILA-format backends, ``medm3`` for the others (tool calling ...)."""
    return RELEASED if getattr(backend, "vila_format", False) else MEDM3


def check_fits(protocol: Protocol, backend: VLMBackend | Any) -> None:
    """Refuse a protocol the backend cannot speak.

    Raises:
        InputError: ``released`` with a backend that does not use the VILA-M3
            text format (e.g. native tool calling).
    """
    if protocol.released and (
        not getattr(backend, "vila_format", False) or getattr(backend, "supports_tools", False)
    ):
        kind = getattr(backend, "name", type(backend).__name__)
        raise InputError(
            f"protocol 'released' needs a VILA-M3 checkpoint (backend vila); the {kind} backend "
            "does not speak it: use --protocol medm3"
        )
