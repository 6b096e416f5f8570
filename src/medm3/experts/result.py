"""Expert results, errors and run context (a leaf: no other expert module imported).

:mod:`medm3.experts.base` (the :class:`~medm3.experts.base.Expert` class),
the result cache and the registry all use these types; keeping them here
keeps the experts package free of import cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3 import prompts
from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from medm3.imaging.image import MedicalImage

__all__ = [
    "LABEL_MAP_CONTENT",
    "LABEL_MAP_KEY",
    "CacheLookup",
    "ExpertError",
    "ExpertResult",
    "Overlay",
    "RunContext",
    "label_map_metadata",
]

#: Metadata key (and value) marking a :class:`MedicalImage` as an expert's label map.
LABEL_MAP_KEY = "content"
LABEL_MAP_CONTENT = "label_map"

#: ``lookup(args)`` given to :meth:`Expert.derive_from_cache`: the cached result of
#: the same inputs, weights and context with other (normalised) args, or None.
CacheLookup = Callable[[str], "ExpertResult | None"]


class ExpertError(InputError):
    """A recoverable expert failure, shown to the VLM (and to CLI users) as text.

    Examples: the image has the wrong modality, the argument is not valid, a
    required input is missing. The agent feeds the message back to the model
    instead of crashing.
    """


@dataclass
class Overlay:
    """A rendered view of an expert result (what the VLM and the user see).

    Attributes:
        name: File-name stem, e.g. ``"overlay_axial_42"``.
        image: The rendered RGB image.
        plane: ``axial``/``coronal``/``sagittal`` for volumes, ``None`` for 2D.
        slice_index: Index of the rendered slice in that plane, if a volume.
        caption: One line describing the view.
    """

    name: str
    image: Image.Image
    plane: str | None = None
    slice_index: int | None = None
    caption: str = ""


@dataclass
class ExpertResult:
    """What an expert returns.

    Attributes:
        expert: Registry name of the expert (``vista3d``).
        args: Normalised argument string (``""`` when none).
        text: Result text for the VLM (phrasing from :mod:`medm3.prompts`).
        overlays: Rendered overlay images.
        label_map: Label volume/image on the input grid (segmentation experts).
        label_names: Label value -> structure name for ``label_map``.
        probabilities: Class name -> probability (classification experts).
        findings: Class name -> present (thresholded probabilities).
        measurements: One dict per measured structure (see the measure expert).
        timings: Stage name -> seconds (``setup``, ``inference``, ``total`` ...).
        info: Other facts: device, weights version, ``cache`` hit/miss ...
    """

    expert: str
    args: str
    text: str
    overlays: list[Overlay] = field(default_factory=list)
    label_map: MedicalImage | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)
    findings: dict[str, bool] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    trigger: str = ""

    @property
    def trigger_text(self) -> str:
        """The trigger that produces this result, e.g. ``<VISTA3D(everything)>``.

        Uses :attr:`trigger` (set by :meth:`Expert.run`), else the upper-cased
        expert name.
        """
        return prompts.format_trigger(self.trigger or self.expert.upper(), self.args)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no arrays, no images)."""
        return {
            "expert": self.expert,
            "args": self.args,
            "text": self.text,
            "overlays": [
                {
                    "name": o.name,
                    "plane": o.plane,
                    "slice_index": o.slice_index,
                    "caption": o.caption,
                }
                for o in self.overlays
            ],
            "label_names": {str(k): v for k, v in sorted(self.label_names.items())},
            "probabilities": dict(self.probabilities),
            "findings": dict(self.findings),
            "measurements": list(self.measurements),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "info": dict(self.info),
        }


@dataclass
class RunContext:
    """What an expert may know about the conversation it runs in.

    Attributes:
        previous: Earlier results in the same conversation, oldest first (the
            measure expert reads the latest label map from here).
        plane: Preferred plane for overlays of volumes.
        slice_index: Preferred slice for overlays (else the expert chooses).
        output_dir: Where files may be written, if anywhere.
        options: Expert-specific options (e.g. VISTA3D point prompts), documented
            by each expert; unknown keys are ignored.
    """

    previous: list[ExpertResult] = field(default_factory=list)
    plane: str = "axial"
    slice_index: int | None = None
    output_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


def label_map_metadata(expert: str, source: MedicalImage) -> dict[str, Any]:
    """Metadata of an expert's label map: the source image's, marked as a label map.

    Args:
        expert: Registry name of the expert that made it.
        source: The image it lies on (its metadata is kept; ``image`` names it).

    Returns:
        ``{**source.metadata, "content": "label_map", "expert": ..., "image": ...}``.
    """
    return {
        **source.metadata,
        LABEL_MAP_KEY: LABEL_MAP_CONTENT,
        "expert": expert,
        "image": source.source,
    }
