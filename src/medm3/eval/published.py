"""Published numbers printed beside ours, each with the protocol that produced it.

Values are percentages. ``protocol`` names how the number was scored:
``vila-m3`` and ``llava-med`` are the protocols :mod:`medm3.eval` implements;
``med-gemini`` marks Med-Gemini's own reported figures as the VILA-M3 paper
tabulates them (scored by Google's pipeline, not reproducible here). A number
is comparable with ours only when the protocols match; the report marks the
others.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODEL_ORDER", "PROTOCOL_NOTES", "PUBLISHED", "Published", "lookup"]

VILA_M3_SOURCE = "VILA-M3 (Nath et al., CVPR 2025)"
LLAVA_MED_SOURCE = "LLaVA-Med (Li et al., NeurIPS 2023), dataset-specific fine-tunes"


@dataclass(frozen=True)
class Published:
    """One published number.

    Attributes:
        model: Model as named in the tables (``VILA-M3 8B``).
        task: Our task name (``vqa-rad``).
        metric: Our metric key (``accuracy``, ``closed``, ``bleu_4``, ``f1_macro`` ...).
        value: The number, in percent.
        protocol: Scoring protocol that produced it.
        experts: For classification: with (True) or without (False) expert
            findings; ``None`` when it does not apply.
        source: Where it is published.
    """

    model: str
    task: str
    metric: str
    value: float
    protocol: str
    experts: bool | None = None
    source: str = VILA_M3_SOURCE


#: Protocols of published numbers that medm3 does not implement.
PROTOCOL_NOTES: dict[str, str] = {
    "med-gemini": "Med-Gemini's own evaluation, as tabulated by VILA-M3",
}

#: Column order of the published models.
MODEL_ORDER: tuple[str, ...] = (
    "VILA-M3 3B",
    "VILA-M3 8B",
    "VILA-M3 13B",
    "Med-Gemini-1.5T",
    "LLaVA-Med",
    "TorchXRayVision",
)


def _vila(
    task: str, metric: str, values: tuple[float, float, float], experts: bool | None = None
) -> list[Published]:
    sizes = ("VILA-M3 3B", "VILA-M3 8B", "VILA-M3 13B")
    return [
        Published(m, task, metric, v, "vila-m3", experts)
        for m, v in zip(sizes, values, strict=True)
    ]


def _gemini(task: str, metric: str, value: float) -> Published:
    return Published("Med-Gemini-1.5T", task, metric, value, "med-gemini")


#: Every published number known to the report.
PUBLISHED: tuple[Published, ...] = (
    *_vila("vqa-rad", "accuracy", (78.2, 84.5, 80.5)),
    *_vila("slake", "accuracy", (79.8, 84.5, 83.2)),
    *_vila("pathvqa", "accuracy", (87.9, 90.0, 91.0)),
    *_vila("mimic-cxr-report", "bleu_4", (20.2, 21.5, 21.6)),
    *_vila("mimic-cxr-report", "rouge_l", (31.7, 32.3, 32.1)),
    *_vila("mimic-cxr-report", "green", (39.4, 40.0, 39.3)),
    *_vila("chexpert-cls", "f1_macro", (57.4, 61.4, 55.8), experts=False),
    *_vila("chexpert-cls", "f1_macro", (60.8, 60.4, 61.5), experts=True),
    *_vila("cxr14-cls", "f1_macro", (48.4, 45.9, 49.9), experts=False),
    *_vila("cxr14-cls", "f1_macro", (51.3, 50.7, 51.2), experts=True),
    Published("TorchXRayVision", "cxr14-cls", "f1_macro", 50.0, "vila-m3"),
    Published("TorchXRayVision", "chexpert-cls", "f1_macro", 51.5, "vila-m3"),
    _gemini("vqa-rad", "accuracy", 78.8),
    _gemini("slake", "accuracy", 84.8),
    _gemini("pathvqa", "accuracy", 83.3),
    _gemini("mimic-cxr-report", "bleu_4", 20.5),
    _gemini("mimic-cxr-report", "rouge_l", 28.3),
    _gemini("cxr14-cls", "f1_macro", 46.7),
    _gemini("chexpert-cls", "f1_macro", 48.3),
    Published("LLaVA-Med", "vqa-rad", "closed", 84.2, "llava-med", source=LLAVA_MED_SOURCE),
    Published("LLaVA-Med", "slake", "closed", 86.8, "llava-med", source=LLAVA_MED_SOURCE),
    Published("LLaVA-Med", "pathvqa", "closed", 91.7, "llava-med", source=LLAVA_MED_SOURCE),
)

# The same VQA benchmark is reported as "accuracy" (vila-m3) or "closed" (llava-med):
# both are shown on either row, marked when the protocol differs.
_SAME_NUMBER = {"accuracy": "closed", "closed": "accuracy"}


def lookup(task: str, metric: str, experts: bool | None = None) -> list[Published]:
    """Published numbers for a task and metric (and expert variant).

    The VQA headline numbers of both protocols (``accuracy`` of ``vila-m3``,
    ``closed`` of ``llava-med``) are returned for either metric, so a row shows
    them all; compare only those whose protocol matches the row's.

    Args:
        task: Our task name.
        metric: Our metric key.
        experts: The run's expert setting (classification).
    """
    metrics = {metric, _SAME_NUMBER.get(metric, metric)}
    return [
        p
        for p in PUBLISHED
        if p.task == task
        and p.metric in metrics
        and (p.experts is None or experts is None or p.experts == experts)
    ]
