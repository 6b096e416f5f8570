"""Settings and results of the agent loop (:mod:`medm3.agent.session`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.errors import InputError
from medm3.experts.base import ExpertResult
from medm3.imaging.image import MedicalImage
from medm3.vlm.base import GenerationConfig

#: System prompt for tool-calling backends (the VILA-M3 models get model cards instead).
TOOLS_SYSTEM_PROMPT = (
    "You are a medical imaging assistant. You see a rendered view of the user's scan. "
    "When a precise answer needs segmentation, classification or measurement, call the "
    "matching expert tool; it runs on the full-resolution data and returns its findings "
    "and an overlay image. Then answer the user's question using the result."
)


@dataclass
class AgentConfig:
    """Settings of the agent loop.

    Attributes:
        experts: Registry names of the experts offered (``None``: all registered).
        use_experts: Offer experts at all (``False``: plain VLM answers).
        max_rounds: Most expert calls per question.
        feed_overlay: Send the expert's overlay image back with its text.
        plane: Plane of the view the VLM sees for volumes.
        slice_index: Slice the VLM sees (``None``: middle slice; experts choose
            the slice of their overlay themselves unless this is set).
        window: Window for rendering the VLM's view (``auto`` by modality).
        device: Device for the experts (``None``: automatic).
        weights: Expert name -> local weights folder overriding the cache.
        generation: Decoding settings.
        output_dir: Where overlays, label maps and results of each call are saved.
        use_cache: Use the expert result cache.
        protocol: ``released`` or ``medm3`` (``None``: ``released`` for VILA-format
            backends, ``medm3`` for the others); see :mod:`medm3.agent.protocol`.
    """

    experts: tuple[str, ...] | None = None
    use_experts: bool = True
    max_rounds: int = 3
    feed_overlay: bool = True
    plane: str = "axial"
    slice_index: int | None = None
    window: str = "auto"
    device: str | None = None
    weights: Mapping[str, str | Path] = field(default_factory=dict)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    output_dir: Path | None = None
    use_cache: bool = True
    protocol: str | None = None


@dataclass
class AgentReply:
    """The answer to one question.

    Attributes:
        text: The final answer.
        rounds: Expert calls made for this question.
        results: The expert results obtained for this question.
        files: Files written (overlays, label maps, result JSON).
        round_limit_reached: True when the model still asked for an expert after
            ``max_rounds`` calls.
        trace: The steps of this question (see :class:`~medm3.agent.trace.Trace`).
        protocol: The conversation protocol used (``released`` / ``medm3``).
        ended_by_segmentation: True when the model's reply was a segmentation-only
            answer: the expert ran and its overlay is the answer (no second generation).
    """

    text: str
    rounds: int
    results: list[ExpertResult]
    files: list[str]
    round_limit_reached: bool
    trace: list[dict[str, Any]]
    protocol: str = "medm3"
    ended_by_segmentation: bool = False


def normalize_images(
    images: MedicalImage | Sequence[MedicalImage] | Mapping[str, MedicalImage] | None,
) -> dict[str, MedicalImage]:
    """Name the input images: one image -> ``image``; BraTS sequences keep their names.

    Raises:
        InputError: Several unnamed images (the agent cannot guess their roles).
    """
    if images is None:
        return {}
    if isinstance(images, MedicalImage):
        return {"image": images}
    if isinstance(images, Mapping):
        return {str(k).lower(): v for k, v in images.items()}
    seq = list(images)
    if len(seq) == 1:
        return {"image": seq[0]}
    if not seq:
        return {}
    raise InputError(
        "several images need names (e.g. t1ce=, t1=, t2=, flair= for BraTS); "
        f"got {len(seq)} unnamed images"
    )


def is_brats_set(images: Mapping[str, MedicalImage]) -> bool:
    """True when the images are the four named BraTS MRI sequences."""
    return set(images) == {name for name, _ in prompts.BRATS_SEQUENCES}


@dataclass
class Turn:
    """Book-keeping of one question's expert calls."""

    limit: int
    rounds: int = 0
    limit_reached: bool = False
    ended: bool = False
    ran: set[tuple[str, str]] = field(default_factory=set)
    results: list[ExpertResult] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
