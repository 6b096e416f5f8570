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

The scale bar is a round length (1, 2, 5 x 10^n mm) close to a fifth of the
image width; it is drawn only when the pixel spacing is known.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["ORIENTATION", "annotate", "png_metadata", "scale_bar_mm"]

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


def annotate(
    picture: Image.Image,
    *,
    plane: str | None,
    index: int,
    count: int,
    window_text: str | None,
    mm_per_px: float | None,
) -> Image.Image:
    """Draw orientation letters, a scale bar and slice/window text on a copy of ``picture``.

    Args:
        picture: The rendered slice (image part only, no legend).
        plane: ``axial``/``coronal``/``sagittal`` for volumes; ``None`` for 2D
            images (no orientation letters, no slice number).
        index: Slice index.
        count: Number of slices in the plane.
        window_text: The window's description (``None``: not drawn).
        mm_per_px: Rendered pixel size in mm (``None``: spacing unknown, no bar).

    Returns:
        An annotated RGB copy.
    """
    out = picture.convert("RGB").copy()
    width, height = out.size
    size = int(np.clip(round(min(width, height) / 28), 10, 28))
    font = _font(size)
    draw = ImageDraw.Draw(out)
    pad = max(3, size // 2)
    if plane in ORIENTATION:
        top, bottom, left, right = ORIENTATION[plane]
        _text(draw, (width / 2, pad), top, font, "mt")
        _text(draw, (width / 2, height - pad), bottom, font, "mb")
        _text(draw, (pad, height / 2), left, font, "lm")
        _text(draw, (width - pad, height / 2), right, font, "rm")
        _text(draw, (pad, pad), f"{plane} {index + 1}/{count}", font, "lt")
    if window_text:
        _text(draw, (width - pad, pad), window_text, font, "rt")
    if mm_per_px and mm_per_px > 0:
        length_mm = scale_bar_mm(width, mm_per_px)
        length_px = round(length_mm / mm_per_px)
        y = height - pad - size // 2
        x0 = pad + size  # clear of the left letter's row
        draw.rectangle([x0 - 1, y - 2, x0 + length_px + 1, y + 2], fill=(0, 0, 0))
        draw.rectangle([x0, y - 1, x0 + length_px, y + 1], fill=(255, 255, 255))
        label = f"{length_mm:g} mm" if length_mm >= 1 else f"{length_mm * 1000:g} um"
        _text(draw, (x0 + length_px / 2, y - size // 2 - 2), label, font, "mb")
    return out


def png_metadata(fields: dict[str, object]) -> object:
    """A ``PngInfo`` with one ``tEXt`` chunk per field (``medm3:<key>``), for ``Image.save``."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in fields.items():
        if value is not None:
            info.add_text(f"medm3:{key}", str(value))
    return info
