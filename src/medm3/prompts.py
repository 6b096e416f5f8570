"""The single source of truth for VILA-M3 prompt text.

Model cards, the trigger syntax, the phrasing of expert results and the
follow-up instruction are defined here and nowhere else. The experts, the
agent loop, the training-data builders and the evaluation all import them, so
training and inference cannot drift apart.

The strings reproduce the conventions of the released VILA-M3 checkpoints
(their reference demo and expert-augmented training data): a model card is
``<NAME(args)> Modality: ..., Task: ..., Overview: ..., Accuracy: ..., Valid
args are: ...``. What the model reads around an expert call (feedback text,
``<image>`` position, colours, rounds) is assembled by the conversation
protocol, :mod:`medm3.agent.protocol`, from these pieces; the experts' own
``result.text`` (from :func:`segmentation_text`, :func:`classification_text`
...) is what users see. docs/fidelity.md compares every point with the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medm3.utils.names import normalize_name

#: First line of the model-card block.
MODEL_CARDS_HEADER = "Here is a list of available expert models:\n"
#: Last line of the model-card block.
MODEL_CARDS_FOOTER = "Give the model <NAME(args)> when selecting a suitable expert model.\n"
#: How a model asks for an expert: ``<VISTA3D(hepatic tumor)>``.
TRIGGER_TEMPLATE = "<{name}({args})>"
#: Start of every segmentation result text.
SEGMENTATION_PREFIX = "The results are <segmentation>. The colors in this image describe "
#: First line of every classification result text.
CLASSIFICATION_HEADER = "The resulting predictions are:"
#: First line of every measurement result text.
MEASUREMENT_HEADER = "The measurements are:"
#: Put before the user's question when an expert result is fed back.
FOLLOW_UP_INSTRUCTION = "Use this result to respond to this prompt:\n"
#: Follow-up instruction after classification (CXR) results, as in the training data.
CLASSIFICATION_FOLLOW_UP = (
    "Analyze the image and take these predictions into account when responding to this prompt:\n"
)
#: Threshold of the CXR yes/no text: ``yes`` when the probability is strictly above it
#: (the reference training data's ``v > 0.5``).
CXR_TEXT_THRESHOLD = 0.5


def format_trigger(name: str, args: str = "") -> str:
    """Return the trigger text for an expert call, e.g. ``<VISTA3D(everything)>``.

    Args:
        name: Trigger name of the expert (``VISTA3D``, ``BRATS``, ``CXR`` ...).
        args: The argument string (empty for experts without arguments).
    """
    return TRIGGER_TEMPLATE.format(name=name, args=args)


def format_valid_args(valid_args: Sequence[str]) -> str:
    """Format valid arguments as in the model cards: ``'a', 'b', or 'c'`` / ``None``.

    Args:
        valid_args: The expert's valid argument values (empty: takes none).
    """
    quoted = [f"'{a}'" for a in valid_args]
    if not quoted:
        return "None"
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + ", or " + quoted[-1]


def model_card(
    trigger: str,
    *,
    modality: str,
    task: str,
    overview: str,
    accuracy: str,
    valid_args: Sequence[str],
) -> str:
    """One model-card line (no trailing newline).

    Args:
        trigger: Trigger name, e.g. ``VISTA3D``.
        modality: Modality as written for the model, e.g. ``CT``.
        task: ``segmentation``, ``classification``, ``measurement`` ...
        overview: One-sentence description of the expert.
        accuracy: The expert's published accuracy, as a short phrase.
        valid_args: Valid argument values (empty when it takes none).
    """
    return (
        f"{format_trigger(trigger, 'args')} Modality: {modality}, Task: {task}, "
        f"Overview: {overview}, Accuracy: {accuracy}, "
        f"Valid args are: {format_valid_args(valid_args)}"
    )


def model_cards_block(cards: Iterable[str]) -> str:
    """The full model-card block given to the model before the question.

    Args:
        cards: Lines produced by :func:`model_card`, in the order to show them.
    """
    return MODEL_CARDS_HEADER + "".join(f"{c}\n" for c in cards) + MODEL_CARDS_FOOTER


def segmentation_text(items: Iterable[tuple[str, str]]) -> str:
    """Segmentation result text: which colour shows which structure.

    Args:
        items: ``(colour name, structure name)`` pairs, in the order to list them.

    Returns:
        E.g. ``The results are <segmentation>. The colors in this image describe
        red: liver, blue: spleen.`` (``... describe no structures found.`` when empty).
    """
    parts = [f"{colour}: {name}" for colour, name in items]
    body = ", ".join(parts) if parts else "no structures found"
    return f"{SEGMENTATION_PREFIX}{body}. "


def brats_text(colours: Mapping[int, str]) -> str:
    """BraTS result text from the colours of BraTS labels 1 (NCR), 2 (ED), 4 (ET).

    Args:
        colours: Label value -> colour name, for the labels present.
    """
    ncr, ed, et = colours.get(1), colours.get(2), colours.get(4)
    text = SEGMENTATION_PREFIX.rstrip(" ") + "\n"
    if ncr is not None and et is not None:
        text += f"{ncr} and {et}: tumor core, "
    elif ncr is not None:
        text += f"{ncr}: tumor core, "
    if et is not None:
        text += f"only {et}: enhancing tumor, "
    if ncr is None and ed is None and et is None:
        return text + "no tumor found\n"
    return text + "all colors: whole tumor\n"


def classification_text(findings: Mapping[str, bool]) -> str:
    """Classification result text: ``label: yes/no`` lines, in the order given.

    This is the text users see; what the model reads is written by the
    conversation protocol (:mod:`medm3.agent.protocol`).

    Args:
        findings: Label name -> present (the CXR expert: torchxrayvision's
            order). Names are lower-cased and ``_`` becomes a space, as in the
            reference (``Pleural_Thickening`` -> ``pleural thickening``).
    """
    lines = [f"{normalize_name(key)}: {'yes' if findings[key] else 'no'}" for key in findings]
    return "\n".join([CLASSIFICATION_HEADER, *lines])


def follow_up(question: str, trigger: str | None = None) -> str:
    """The instruction appended to an expert result so the model answers the question.

    The released checkpoints were trained with two phrasings: classification
    results (CXR) ask the model to "analyze the image and take these
    predictions into account"; segmentation results say "use this result" and
    end the question with a full stop.

    Args:
        question: The user's original question.
        trigger: Trigger name of the expert whose result precedes (``CXR`` ...).
    """
    if trigger is not None and trigger.upper() == "CXR":
        return CLASSIFICATION_FOLLOW_UP + question
    return (
        FOLLOW_UP_INSTRUCTION + question.rstrip() + ("" if question.rstrip().endswith(".") else ".")
    )


def measurement_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Measurement result text: one line per structure after :data:`MEASUREMENT_HEADER`.

    Args:
        rows: Measurement dicts as produced by the measure expert, with the keys
            ``name``, ``voxels``, ``volume_ml``, ``max_axial_diameter_mm``,
            ``components``, ``largest_component_ml``, ``mean_intensity`` and
            ``intensity_unit`` (``"HU"`` for CT, ``""`` otherwise). ``_`` in
            names becomes a space.

    Returns:
        E.g. ``The measurements are:`` then ``liver: volume 1043.1 mL, max axial
        diameter 182.3 mm, mean 104 HU, 1 component(s)``; a structure without
        voxels reads ``hepatic tumor: not present``. Volumes under 1 mL get three
        decimals (``0.027 mL``).
    """
    lines = [MEASUREMENT_HEADER]
    for row in rows:
        name = str(row["name"]).replace("_", " ")
        if not row.get("voxels"):
            lines.append(f"{name}: not present")
            continue
        unit = row.get("intensity_unit") or ""
        mean = float(row["mean_intensity"])
        mean_text = f"mean {mean:.0f} {unit}" if unit else f"mean intensity {mean:.1f}"
        count = int(row["components"])
        largest = f" (largest {_ml(row['largest_component_ml'])} mL)" if count > 1 else ""
        lines.append(
            f"{name}: volume {_ml(row['volume_ml'])} mL, "
            f"max axial diameter {float(row['max_axial_diameter_mm']):.1f} mm, "
            f"{mean_text}, {count} component(s){largest}"
        )
    if len(lines) == 1:
        lines.append("no structures to measure")
    return "\n".join(lines)


def _ml(value: Any) -> str:
    """A volume in mL: one decimal, three below 1 mL (``1043.1``, ``0.027``)."""
    volume = float(value)
    return f"{volume:.1f}" if volume >= 1 else f"{volume:.3f}"


# --------------------------------------------------------------------------------------
# Conversation format (VILA-M3). Text uses IMAGE_TOKEN where an image stands, exactly as
# the LLaVA-style training JSON does; the agent turns it into text and image parts.
# --------------------------------------------------------------------------------------

#: Placeholder of one image in conversation text (LLaVA / VILA convention).
IMAGE_TOKEN = "<image>"

#: How each modality code is named in the first turn ("This is a CT image.").
MODALITY_WORDS: dict[str, str] = {
    "CT": "CT",
    "MR": "MRI",
    "XR": "CXR",
    "PT": "PET",
    "US": "ultrasound",
}

#: The BraTS inputs in the order and with the names of the training conversations.
BRATS_SEQUENCES: tuple[tuple[str, str], ...] = (
    ("t1ce", "T1(contrast enhanced)"),
    ("t1", "T1"),
    ("t2", "T2"),
    ("flair", "FLAIR"),
)

#: What the model says when it calls an expert (training-data phrasing), per trigger.
TRIGGER_REPLIES: dict[str, str] = {
    "VISTA3D": "This looks like a CT image. Let me trigger {trigger}. ",
    "CXR": "This looks like an chest x-ray. Let me first trigger {trigger}.",
    "BRATS": "This looks like an MRI image sequence. Let me first trigger {trigger}.",
}
#: Fallback phrasing for experts without a training phrasing (e.g. MEASURE).
DEFAULT_TRIGGER_REPLY = "Let me use an expert: {trigger}."


def image_join(before: str, after: str) -> str:
    """Join text around one image the way VILA-M3 training text is normalised.

    The text before the image is stripped and followed by a space unless it
    ends a line; the image token is followed by exactly one newline.

    Args:
        before: Text preceding the image.
        after: Text following the image (leading whitespace is dropped).
    """
    head = before.strip()
    if head and not head.endswith("\n"):
        head += " "
    return f"{head}{IMAGE_TOKEN}\n{after.lstrip()}"


def modality_sentence(modality: str | None) -> str:
    """``This is a CT image.\n`` for a modality code (empty when unknown/other).

    Args:
        modality: Modality code (``CT``, ``MR``, ``XR`` ...) or ``None``.
    """
    word = MODALITY_WORDS.get((modality or "").upper())
    return f"This is a {word} image.\n" if word else ""


def first_turn(question: str, modality: str | None, *, model_cards: str = "") -> str:
    """The first user turn for one image: model cards, the image, the modality, the question.

    Args:
        question: The user's question.
        modality: Modality code of the image (``None``/``OT``: no modality sentence).
        model_cards: The model-card block (empty: experts not offered).

    Returns:
        Text with one :data:`IMAGE_TOKEN`, e.g. ``"Here is a list ... expert model.
        <image>\nThis is a CT image.\nWhat is shown?"``.
    """
    return image_join(model_cards, modality_sentence(modality) + question.strip())


def brats_first_turn(question: str, *, model_cards: str = "") -> str:
    """The first user turn for the four BraTS MRI sequences (four image tokens, named).

    Args:
        question: The user's question.
        model_cards: The model-card block (empty: experts not offered).
    """
    text = model_cards
    for i, (_, label) in enumerate(BRATS_SEQUENCES):
        prefix = "" if i == 0 else ", "
        text = image_join(text + prefix + f"{label}:", "")
    return text + "These are different MRI modalities.\n" + question.strip()


#: The report-generation instruction (MIMIC-CXR / IU-Xray report rows and their evaluation).
REPORT_PROMPT = "Describe the image in detail."


def report_turn(modality: str | None = None, *, model_cards: str = "") -> str:
    """The first user turn asking for a radiology report of one image.

    Args:
        modality: Modality code (``None``: no modality sentence, the plain
            report-generation prompt of the evaluation protocol).
        model_cards: The model-card block (empty: experts not offered).

    Returns:
        ``"<image>\\nDescribe the image in detail."`` without cards and modality.
    """
    return first_turn(REPORT_PROMPT, modality, model_cards=model_cards)


def trigger_reply(trigger: str, args: str = "") -> str:
    """The assistant turn that calls an expert, in the training phrasing.

    Args:
        trigger: Trigger name (``VISTA3D``).
        args: Trigger argument.
    """
    template = TRIGGER_REPLIES.get(trigger.upper(), DEFAULT_TRIGGER_REPLY)
    return template.format(trigger=format_trigger(trigger, args))


def expert_feedback(result_text: str, question: str, trigger: str) -> str:
    """The user turn that returns an expert's result to the model.

    Args:
        result_text: The expert's result text (:func:`segmentation_text` ...).
        question: The user's question being answered.
        trigger: Trigger name of the expert.
    """
    text = result_text
    if not text.endswith((" ", "\n")):
        text += " "
    return text + follow_up(question, trigger)


def expert_error_feedback(message: str, question: str) -> str:
    """The user turn telling the model an expert call failed (it may retry or answer).

    Args:
        message: Why the call failed (an :class:`~medm3.experts.ExpertError` message).
        question: The user's question being answered.
    """
    return (
        f"The expert model could not be run: {message.strip()}\n"
        f"Answer without it, or call a valid expert. Respond to this prompt:\n{question.strip()}"
    )


def split_images(text: str) -> list[str | None]:
    """Split conversation text into text pieces and ``None`` for each image token.

    Args:
        text: Text possibly holding :data:`IMAGE_TOKEN` placeholders.

    Returns:
        E.g. ``["cards ", None, "\nThis is a CT image."]`` (empty pieces dropped).
    """
    out: list[str | None] = []
    for i, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            out.append(None)
        if chunk:
            out.append(chunk)
    return out


# --------------------------------------------------------------------------------------
# Evaluation prompts (`m3 eval`). The text of the VILA-M3 reference evaluation scripts:
# VQA via VILA's model_vqa_science with --single-pred-prompt (the report question is
# REPORT_PROMPT above) and the CheXpert / ChestX-ray14 yes/no classification prompts.
# --------------------------------------------------------------------------------------

#: Appended (after a newline) to every VQA question by the reference VQA evaluation.
SINGLE_LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
#: First sentence of the chest X-ray classification questions.
CXR_CLASS_PREAMBLE = (
    "The following is a question about findings in chest X-ray in the frontal view. "
)
#: Introduces the expert's ``label: yes/no`` lines in the "with expert" classification prompt.
CXR_CLASS_EXPERT_PREFIX = (
    "When answering the question, please analyze the image and incorporate the additional "
    "results generated by an expert classification model:\n"
)
#: The yes/no instruction of the classification prompts.
YES_NO_INSTRUCTION = "Please reply with yes or no.\n"


def vqa_eval_question(question: str, *, single_letter: bool = True) -> str:
    """The text that follows the image in a VQA evaluation question.

    The reference removes ``<image>`` from the question, strips it and, with
    ``single_letter``, appends :data:`SINGLE_LETTER_INSTRUCTION` after a newline.

    Args:
        question: The dataset question (may hold :data:`IMAGE_TOKEN`).
        single_letter: Append the single-prediction instruction (protocol ``vila-m3``).
    """
    text = question.replace(IMAGE_TOKEN, "").strip()
    return f"{text}\n{SINGLE_LETTER_INSTRUCTION}" if single_letter else text


def cxr_expert_lines(probabilities: Mapping[str, float], threshold: float = 0.5) -> str:
    """The expert block of the "with expert" classification prompt.

    One `` label: yes|no`` line per finding (leading space and newline as in the
    reference), ``yes`` when the probability is strictly above ``threshold``;
    names lower-cased with ``_`` as a space; in the order given.

    Args:
        probabilities: Finding name -> probability (e.g. a CXR expert's output).
        threshold: Strict threshold for ``yes``.
    """
    return "".join(
        f" {normalize_name(name)}: {'yes' if float(p) > threshold else 'no'}\n"
        for name, p in probabilities.items()
    )


def cxr_class_question(class_name: str, expert_lines: str | None = None) -> str:
    """The yes/no classification question that follows the image.

    Without expert: ``The following is ... frontal view. Please reply with yes or
    no.\\nQuestion: is there {class} according to the provided X-ray image?\\n``.
    With expert lines, those come first after :data:`CXR_CLASS_EXPERT_PREFIX`
    and the yes/no instruction moves after the question (the reference template).

    Args:
        class_name: The finding, as asked (``pleural effusion``).
        expert_lines: Output of :func:`cxr_expert_lines`, or ``None`` (no expert).
    """
    question = f"Question: is there {class_name} according to the provided X-ray image?\n"
    if expert_lines is None:
        return CXR_CLASS_PREAMBLE + YES_NO_INSTRUCTION + question
    head = CXR_CLASS_PREAMBLE + CXR_CLASS_EXPERT_PREFIX + expert_lines
    return head + question + YES_NO_INSTRUCTION
