"""Expert results turned into the turn the model reads: text, overlay, colours.

:func:`build_feedback` writes the feedback of one expert result for a
:class:`~medm3.agent.protocol.Protocol`. A segmentation is drawn again on the
slice the model was shown (the reference demo's rule), with the protocol's
colours for the labels on that slice, and only those labels are named. BraTS
overlays are drawn on the T1ce sequence, with no legend panel. The returned
result is a copy whose overlay, colour table and text match what the model
read, so the user sees the same colours as the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medm3.agent.protocol import Protocol
from medm3.experts.base import ExpertResult, Overlay
from medm3.imaging.image import MedicalImage


@dataclass
class Feedback:
    """The feedback of one expert call.

    Attributes:
        text: The turn's text, with one ``<image>`` per picture.
        pictures: The pictures, in placeholder order.
        result: The result as the model saw it (overlay and colours replaced).
    """

    text: str
    pictures: list[Any]
    result: ExpertResult


@dataclass(frozen=True)
class ShownSlice:
    """Where the model looked: the base image, plane and slice index (None for 2-D)."""

    image: MedicalImage
    plane: str
    index: int | None
    window: str


def build_feedback(
    protocol: Protocol,
    result: ExpertResult,
    *,
    task: str,
    trigger: str,
    question: str,
    shown: ShownSlice | None,
    answer: bool = True,
    feed_overlay: bool = True,
) -> Feedback:
    """The feedback turn of one expert result.

    Args:
        protocol: The conversation protocol.
        result: The expert's result.
        task: The expert's task (``segmentation``, ``classification`` ...).
        trigger: The expert's trigger name (``VISTA3D``, ``BRATS`` ...).
        question: The user's question.
        shown: The slice the model was shown (None: no image).
        answer: Ask the model to answer (False: segmentation-only reply).
        feed_overlay: Send the overlay picture with the text.
    """
    img = "<image>"
    if task == "segmentation" and result.label_map is not None and shown is not None:
        redrawn = _redraw(protocol, result, shown)
        if redrawn is not None:
            picture, ids, colours = redrawn
            if trigger.upper() == "BRATS":
                text = protocol.brats_feedback(colours, question, answer=answer)
            else:
                names = result.label_names
                items = [(colours[i], names.get(i, f"label {i}")) for i in ids]
                text = protocol.segmentation_feedback(items, question, answer=answer)
            desc = text.split(img + "\n", 1)[1].lstrip(". ").split("Use this result")[0]
            overlay = Overlay(
                name=f"overlay_{shown.plane}_{shown.index if shown.index is not None else 0}",
                image=picture,
                plane=shown.plane,
                slice_index=shown.index if shown.index is not None else 0,
                caption=f"{shown.plane} slice {shown.index}, {len(ids)} structures named",
            )
            seen = dataclasses.replace(
                result,
                text=desc.strip(),
                overlays=[overlay, *result.overlays[1:]],
                info={**result.info, "colors": {str(i): colours[i] for i in ids}},
            )
            return _finish(text, [picture], seen, feed_overlay)
    if task == "classification" and result.probabilities:
        text = protocol.classification_feedback(result.probabilities, question)
        return Feedback(text, [], result)
    text = protocol.text_feedback(result.text, question)
    if result.overlays:
        return _finish(
            f"{img}\n{text}", [result.overlays[0].image.convert("RGB")], result, feed_overlay
        )
    return Feedback(text, [], result)


def _finish(text: str, pictures: list[Any], result: ExpertResult, feed: bool) -> Feedback:
    if feed:
        return Feedback(text, pictures, result)
    return Feedback(text.replace("<image>\n", "").replace("<image>", ""), [], result)


def _redraw(
    protocol: Protocol, result: ExpertResult, shown: ShownSlice
) -> tuple[Any, list[int], dict[int, str]] | None:
    """The overlay on the shown slice with the protocol's colours, or None when impossible."""
    from medm3.errors import InputError
    from medm3.imaging.palettes import palette_rgb
    from medm3.imaging.render import render_slice
    from medm3.imaging.slicing import take_slice

    assert result.label_map is not None
    labels = np.asarray(result.label_map.array)
    if labels.shape[: len(shown.image.spatial_shape)] != tuple(shown.image.spatial_shape):
        return None
    plane = shown.plane if shown.image.is_volume else "axial"
    try:
        on_slice = take_slice(labels, plane, shown.index) if shown.image.is_volume else labels
        ids = sorted(int(i) for i in np.unique(on_slice) if i > 0)
        colours = protocol.palette(ids)
        picture = render_slice(
            shown.image,
            plane=plane,
            index=shown.index if shown.image.is_volume else None,
            window=shown.window,
            mask=labels,
            legend=False,
            alpha=protocol.overlay_alpha,
            colors=palette_rgb(colours),
        )
    except InputError:
        return None
    return picture.convert("RGB"), ids, colours


def shown_colours(result: ExpertResult) -> Mapping[str, str]:
    """Label id (as text) -> colour name the model was told (empty when none)."""
    return dict(result.info.get("colors", {}))
