"""Reading aids drawn on rendered slices: orientation letters, scale bar, slice and window text.

Used by :func:`medm3.imaging.render.render_slice` with ``annotate=True`` (the
default of ``m3 render``; off for the view sent to a VLM). Letters follow the
radiological display convention of :mod:`medm3.imaging.slicing`:

=========  =====  ======  ====  =====
plane      top    bottom  left  right
=========  =====  ======  ====  =====
axial      A      P       R     L
coronal    S      I       R     L
sagittal   S      I       A     P
=========  =====  ======  ====  =====

2D images (X-rays, photographs) are shown as stored, row 0 at the top; their
letters come from DICOM PatientOrientation (0020,0020) or ImageOrientationPatient
in DICOM's letters (``A P R L H F``; obliques get two or three), and an image
with neither says "orientation unknown": letters are never guessed.

The scale bar is a round length (1, 2, 5 x 10^n mm) close to a fifth of the
image width; it is drawn only when the pixel spacing is known, and labelled
"at detector" when it comes from ImagerPixelSpacing (a projection radiograph's
detector plane, not corrected for magnification). An assumed spacing (PNG/JPEG,
DICOM without spacing) gets no bar and the note "spacing unknown (assumed 1 mm)".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "ORIENTATION",
    "Annotations",
    "annotate",
    "annotations_for",
    "letters_2d",
    "png_metadata",
    "scale_bar_mm",
]

#: Plane -> (top, bottom, left, right) patient directions of the displayed slice.
ORIENTATION: dict[str, tuple[str, str, str, str]] = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}


def scale_bar_mm(width_px: int, mm_per_px: float, fraction: float = 0.2) -> float:
    """A round bar length (1, 2 or 5 x 10^n mm) close to ``fraction`` of the width."""
    target = max(width_px * mm_per_px * fraction, 1e-6)
    exponent = math.floor(math.log10(target))
    best = 10.0**exponent
    for base in (1.0, 2.0, 5.0, 10.0):
        if base * 10.0**exponent <= target:
            best = base * 10.0**exponent
    return best


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, anchor: str) -> None:
    """White text with a dark outline, readable on any grey."""
    draw.text(xy, text, fill=(255, 255, 255), font=font, anchor=anchor, stroke_width=2,
              stroke_fill=(0, 0, 0))  # fmt: skip


@dataclass(frozen=True)
class Annotations:
    """What :func:`annotate` draws on one rendered slice.

    Attributes:
        letters: ``(top, bottom, left, right)`` patient directions, or None
            when unknown (never guessed).
        heading: Top-left text, e.g. ``"axial 12/30"`` (None: nothing).
        window_text: Top-right text, the window's description (None: nothing).
        mm_per_px: Rendered pixel size in mm when the spacing is known, else None (no bar).
        bar_note: Appended to the bar's length, e.g. ``"at detector"``.
        notes: Bottom-right lines, e.g. ``"orientation unknown"``.
    """

    letters: tuple[str, str, str, str] | None
    heading: str | None = None
    window_text: str | None = None
    mm_per_px: float | None = None
    bar_note: str = ""
    notes: tuple[str, ...] = ()


#: DICOM patient direction letter -> its opposite.
OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
#: LPS axis -> letters of its (positive, negative) direction, as DICOM writes them.
_LPS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))


def direction_letters(cosines: Sequence[float], threshold: float = 0.25) -> str:
    """DICOM letters of an LPS direction, strongest component first (``"L"``, ``"LH"`` ...).

    Args:
        cosines: A direction in LPS (e.g. a row of ImageOrientationPatient).
        threshold: Components smaller than this are left out (obliques get 2-3 letters).

    Returns:
        The letters, or ``""`` for a null vector.
    """
    order = sorted(range(3), key=lambda i: -abs(float(cosines[i])))
    return "".join(
        _LPS_LETTERS[i][0 if cosines[i] > 0 else 1]
        for i in order
        if abs(float(cosines[i])) >= threshold
    )


def opposite(letters: str) -> str:
    """The opposite direction: ``"LF"`` -> ``"RH"``."""
    return "".join(OPPOSITE[c] for c in letters)


def letters_2d(metadata: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """``(top, bottom, left, right)`` of a 2D image as displayed (row 0 at the top), or None.

    From DICOM PatientOrientation (0020,0020) (the directions of the rows and
    of the columns, e.g. ``L\\F``), else from ImageOrientationPatient. Unknown
    (a PNG, or a DICOM with neither) gives None: letters are never guessed.

    Args:
        metadata: The image's metadata (``patient_orientation``, ``image_orientation``).

    Returns:
        The four letters, or None.
    """
    rows_dir = cols_dir = ""
    given = metadata.get("patient_orientation")
    if given and len(given) == 2:
        rows_dir, cols_dir = (str(v).strip().upper() for v in given)
    elif metadata.get("image_orientation") and len(metadata["image_orientation"]) == 6:
        iop = [float(v) for v in metadata["image_orientation"]]
        rows_dir, cols_dir = direction_letters(iop[:3]), direction_letters(iop[3:])
    if not rows_dir or not cols_dir or not set(rows_dir + cols_dir) <= set(OPPOSITE):
        return None
    return opposite(cols_dir), cols_dir, opposite(rows_dir), rows_dir


def annotations_for(image: Any, view: Any, window_text: str | None) -> Annotations:
    """What to draw on a rendered slice of ``image``.

    Volumes get the letters of their plane and ``plane k/n``; 2D images the
    letters of :func:`letters_2d` or the note "orientation unknown". The bar
    is drawn only with a known pixel spacing (labelled "at detector" for
    ImagerPixelSpacing, which is not corrected for magnification); with an
    assumed spacing the note "spacing unknown (assumed 1 mm)" replaces it.
    A slice filled by ``--allow-gaps fill`` says so.

    Args:
        image: The :class:`~medm3.imaging.image.MedicalImage`.
        view: Its :class:`~medm3.imaging.slicing.SliceView`, already zoomed.
        window_text: The window's description, or None.

    Returns:
        The annotations.
    """
    md = image.metadata
    notes: list[str] = []
    if image.is_volume:
        letters: tuple[str, str, str, str] | None = ORIENTATION[view.plane]
        heading: str | None = f"{view.plane} {view.index + 1}/{view.count}"
    else:
        letters, heading = letters_2d(md), None
        if letters is None:
            notes.append("orientation unknown")
    known = not md.get("spacing_assumed")
    if not known:
        notes.append("spacing unknown (assumed 1 mm)")
    filled = filled_note(md, view.plane, view.index) if image.is_volume else None
    if filled:
        notes.append(filled)
    return Annotations(
        letters=letters,
        heading=heading,
        window_text=window_text,
        mm_per_px=view.pixel_spacing[1] / view.zoom[1] if known else None,
        bar_note="at detector" if md.get("spacing_source") == "ImagerPixelSpacing" else "",
        notes=tuple(notes),
    )


def filled_note(metadata: Mapping[str, Any], plane: str, index: int) -> str | None:
    """A note when the shown slice is (or crosses) slices filled by ``--allow-gaps fill``."""
    from medm3.imaging.slicing import PLANE_AXIS

    filled = metadata.get("filled_slices")
    if not filled:
        return None
    gaps = metadata.get("gaps") or {}
    if gaps.get("axis") != PLANE_AXIS[plane]:
        return f"{len(filled)} filled slice(s) cross this view"
    if index not in filled:
        return None
    source = (gaps.get("copied_from") or {}).get(index)
    return "FILLED slice" + (f" (copy of {source})" if source is not None else "")


def annotate(picture: Image.Image, marks: Annotations) -> tuple[Image.Image, float | None]:
    """Draw orientation letters, a scale bar and text on a copy of ``picture``.

    Args:
        picture: The rendered slice (image part only, no legend).
        marks: What to draw (see :func:`annotations_for`).

    Returns:
        An annotated RGB copy, and the scale bar's length in mm (None: no bar).
    """
    out = picture.convert("RGB").copy()
    width, height = out.size
    size = int(np.clip(round(min(width, height) / 28), 10, 28))
    font = _font(size)
    draw = ImageDraw.Draw(out)
    pad = max(3, size // 2)
    line = size + 4
    top_letter = bottom_letter = ""
    if marks.letters:
        top_letter, bottom_letter, left, right = marks.letters
        _text(draw, (width / 2, pad), top_letter, font, "mt")
        _text(draw, (width / 2, height - pad), bottom_letter, font, "mb")
        _text(draw, (pad, height / 2), left, font, "lm")
        _text(draw, (width - pad, height / 2), right, font, "rm")

    def clear(text: str, letter: str) -> bool:
        """Whether a corner text stays clear of the centred top/bottom letter."""
        half = draw.textlength(letter, font=font) / 2 + size / 2
        return not letter or draw.textlength(text, font=font) + pad < width / 2 - half

    if marks.heading:
        y = pad if clear(marks.heading, top_letter) else pad + line
        _text(draw, (pad, y), marks.heading, font, "lt")
    if marks.window_text:
        y = pad if clear(marks.window_text, top_letter) else pad + line
        _text(draw, (width - pad, y), marks.window_text, font, "rt")
    notes = list(reversed(marks.notes))
    shift = 0 if all(clear(n, bottom_letter) for n in notes) else line
    for k, note in enumerate(notes):
        _text(draw, (width - pad, height - pad - shift - k * line), note, font, "rb")
    if not (marks.mm_per_px and marks.mm_per_px > 0):
        return out, None
    length_mm = scale_bar_mm(width, marks.mm_per_px)
    length_px = round(length_mm / marks.mm_per_px)
    y = height - pad - size // 2
    x0 = pad + size  # clear of the left letter's row
    draw.rectangle([x0 - 1, y - 2, x0 + length_px + 1, y + 2], fill=(0, 0, 0))
    draw.rectangle([x0, y - 1, x0 + length_px, y + 1], fill=(255, 255, 255))
    label = f"{length_mm:g} mm" if length_mm >= 1 else f"{length_mm * 1000:g} um"
    label += f" {marks.bar_note}" if marks.bar_note else ""
    _text(draw, (x0, y - size // 2 - 2), label, font, "lb")  # from the bar's start: never cut
    return out, length_mm


def png_metadata(fields: dict[str, object]) -> object:
    """A ``PngInfo`` with one ``tEXt`` chunk per field (``medm3:<key>``), for ``Image.save``."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in fields.items():
        if value is not None:
            info.add_text(f"medm3:{key}", str(value))
    return info
