"""High-level rendering: one slice of a :class:`MedicalImage` -> PIL image.

:func:`render_slice` windows the image, cuts the slice in radiological display
convention (see :mod:`medm3.imaging.slicing`), resamples it to square pixels,
blends an optional label mask and draws a legend. What it did is recorded in
``result.info["medm3"]`` (a JSON-serialisable dict, see :func:`render_slice`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from PIL import Image

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.overlay import (
    LegendEntry,
    blend_labels,
    check_mask,
    draw_legend,
    legend_entries,
)
from medm3.imaging.slicing import (
    SliceView,
    extract_slice,
    normalize_plane,
    resize_labels,
    resize_pixels,
    square_size,
)
from medm3.imaging.windowing import (
    Window,
    apply_window,
    parse_window,
    resolve_window,
    to_uint8_rgb,
)

#: With ``scale=None`` small images are enlarged so their long side is at least this.
MIN_LONG_SIDE = 512
#: With ``scale=None`` small images are enlarged so their short side is at least this
#: (as long as the long side stays within :data:`MAX_LONG_SIDE`).
MIN_SHORT_SIDE = 256
#: The short-side enlargement never makes the long side longer than this.
MAX_SLAB_LONG_SIDE = 768
#: With ``scale=None`` large images are shrunk so their long side is at most this.
MAX_LONG_SIDE = 2048


def _is_rgb(image: MedicalImage) -> bool:
    return image.channels in (3, 4) and (not image.is_volume or image.array.dtype == np.uint8)


def auto_scale(size: tuple[int, int]) -> float:
    """Zoom used when ``scale`` is None.

    The size follows the physical extent (square pixels of the finer spacing).
    Images are enlarged until the long side is >= 512 px and the short side
    >= 256 px, but the short-side boost stops at a 768 px long side
    (:data:`MAX_SLAB_LONG_SIDE`), so a thin slab (a coronal cut through a few
    slices) stays a proportionate, sharp strip instead of a huge blurred one;
    images whose long side exceeds 2048 px are shrunk to it. Otherwise the
    zoom is 1.

    Args:
        size: Square-pixel ``(rows, cols)`` before scaling.

    Returns:
        The zoom factor.
    """
    long_side, short_side = max(size), min(size)
    if long_side > MAX_LONG_SIDE:
        return MAX_LONG_SIDE / long_side
    short_boost = min(MIN_SHORT_SIDE / short_side, MAX_SLAB_LONG_SIDE / long_side)
    zoom = max(1.0, MIN_LONG_SIDE / long_side, short_boost)
    return min(zoom, MAX_LONG_SIDE / long_side)


def render_slice(
    image: MedicalImage,
    *,
    plane: str = "axial",
    index: int | None = None,
    window: str = "auto",
    mask: MedicalImage | np.ndarray | None = None,
    label_names: Mapping[int, str] | None = None,
    contours: bool = False,
    alpha: float = 0.45,
    legend: bool = True,
    scale: float | None = None,
    contour_width: int | None = None,
    legend_scope: Literal["slice", "volume"] = "slice",
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    annotate: bool = False,
) -> Image.Image:
    """Render one slice, with an optional label overlay and legend, as an RGB image.

    Args:
        image: Volume or 2D image.
        plane: ``axial``, ``coronal`` or ``sagittal`` (2D images: ``axial`` only).
        index: Slice index along the plane's normal axis of the RAS+ array
            (see :mod:`medm3.imaging.slicing`); None: the slice with the largest
            labelled area when ``mask`` has labels, else the middle slice.
        window: Window name or ``"W,L"`` (see :mod:`medm3.imaging.windowing`);
            ignored for RGB images.
        mask: Label map on the image's grid (:class:`MedicalImage` or array).
        label_names: ``{id: name}`` for the legend (default ``"label N"``).
        contours: Draw only label boundaries (opaque) instead of filled regions.
        alpha: Opacity of filled label regions, 0-1 (contours are opaque).
        legend: Draw a legend beside the image (only when a mask is given).
        scale: Zoom applied after resampling to square pixels; None chooses
            one so the long side is 512-2048 px.
        contour_width: Contour thickness in output pixels (default: 1 per
            256 px of the long side, at least 1).
        legend_scope: List labels present in the rendered ``"slice"`` or in
            the whole ``"volume"``.
        colors: Id -> RGB of the overlay (default: the stable per-id colours).
        annotate: Draw orientation letters (2D images: from DICOM, else
            "orientation unknown"), a scale bar (when the spacing is known,
            else a "spacing unknown" note) and the slice / window text
            (:mod:`medm3.imaging.annotate`); on for ``m3 render``, off for the
            view a VLM sees.

    Returns:
        An RGB :class:`PIL.Image.Image`. ``info["medm3"]`` holds: ``kind``
        (``"volume"`` or ``"2d"``), ``plane``, ``index``, ``num_slices``,
        ``window`` (``{"name", "width", "level", "text"}`` or None for RGB),
        ``image_size`` (``[width, height]`` of the image part, at the top-left
        corner), ``zoom`` (``[row_zoom, col_zoom]``:
        rendered pixel = native slice pixel * zoom), ``labels_in_slice``
        (ids), ``legend`` (list of ``{"id", "name", "color", "color_name"}``),
        ``pixel_spacing_mm`` (rendered pixels) and, when annotated,
        ``annotations`` (``letters``, ``notes``, ``scale_bar_mm``).

    Raises:
        InputError: Bad plane, slice, window, alpha, scale or mask.
    """
    plane = _check_options(plane, alpha, scale, legend_scope)
    labels = check_mask(image, mask) if mask is not None else None
    image, win = _windowed(image, window)
    view = extract_slice(image, plane, index, labels)
    pixels = to_uint8_rgb(view.pixels) if win is None else apply_window(view.pixels, win)
    pixels, size = _resize(pixels, view, scale)
    width = contour_width if contour_width is not None else max(1, round(max(size) / 256))
    pixels, slice_ids = _blend(pixels, view, size, float(alpha), contours, width, colors)
    result = Image.fromarray(pixels).convert("RGB")
    marks = None
    if annotate:
        result, marks = _annotate(result, image, view, win)
    entries: list[LegendEntry] = []
    if legend and view.mask is not None:
        ids = slice_ids if legend_scope == "slice" else np.unique(labels)  # type: ignore[arg-type]
        entries = recolor(legend_entries(ids, label_names), colors)
        result = draw_legend(result, entries) if entries else result
    result.info["medm3"] = _info(view, win, size, slice_ids, entries)
    result.info["medm3"].update(_extra_info(image, view, colors, marks))
    return result


def _windowed(image: MedicalImage, window: str) -> tuple[MedicalImage, Window | None]:
    """The image to show (first channel of a multi-channel volume) and its window (None: RGB)."""
    parse_window(window)  # validate even when unused
    if _is_rgb(image):
        return image, None
    if image.channels > 1:
        image = image.with_array(image.array[..., 0])
    return image, resolve_window(image, window)


def _blend(
    pixels: np.ndarray,
    view: SliceView,
    size: tuple[int, int],
    alpha: float,
    contours: bool,
    width: int,
    colors: Mapping[int, tuple[int, int, int]] | None,
) -> tuple[np.ndarray, list[int]]:
    """Blend the slice's labels (resized to ``size``); return the pixels and the ids shown."""
    if view.mask is None:
        return pixels, []
    shown = resize_labels(view.mask, size)
    ids = [int(i) for i in np.unique(shown) if i > 0]
    blended = blend_labels(
        pixels, shown, alpha=alpha, contours=contours, contour_width=width, colors=colors
    )
    return blended, ids


def _check_options(plane: str, alpha: float, scale: float | None, legend_scope: str) -> str:
    """Validate ``render_slice``'s options; return the normalised plane."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, not {alpha}")
    if scale is not None and not float(scale) > 0:
        raise InputError(f"scale must be > 0, not {scale}")
    if legend_scope not in ("slice", "volume"):
        raise InputError(f"legend scope must be 'slice' or 'volume', not '{legend_scope}'")
    return normalize_plane(plane)


def _resize(
    pixels: np.ndarray, view: SliceView, scale: float | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Resample to square pixels at the chosen zoom; record the zoom on ``view``."""
    native = (int(pixels.shape[0]), int(pixels.shape[1]))
    square = square_size(native, view.pixel_spacing)
    zoom_factor = auto_scale(square) if scale is None else float(scale)
    size = square_size(native, view.pixel_spacing, zoom_factor)
    view.zoom = (size[0] / native[0], size[1] / native[1])
    return resize_pixels(pixels, size), size


def _annotate(
    picture: Image.Image, image: MedicalImage, view: SliceView, win: Window | None
) -> tuple[Image.Image, dict[str, Any]]:
    """Draw the reading aids (:mod:`medm3.imaging.annotate`); return the picture and a record."""
    from medm3.imaging.annotate import annotate, annotations_for

    marks = annotations_for(image, view, win.describe() if win is not None else None)
    picture, bar_mm = annotate(picture, marks)
    record = {
        "letters": list(marks.letters) if marks.letters else None,
        "notes": list(marks.notes),
        "scale_bar_mm": bar_mm,
        "scale_bar_note": marks.bar_note or None,
    }
    return picture, record


def _extra_info(
    image: MedicalImage,
    view: SliceView,
    colors: Mapping[int, tuple[int, int, int]] | None,
    marks: dict[str, Any] | None,
) -> dict[str, Any]:
    """The parts of ``info['medm3']`` beyond :func:`_info`."""
    extra: dict[str, Any] = {
        "kind": "volume" if image.is_volume else "2d",
        "annotated": marks is not None,
        "pixel_spacing_mm": [
            view.pixel_spacing[0] / view.zoom[0],
            view.pixel_spacing[1] / view.zoom[1],
        ],
    }
    if marks is not None:
        extra["annotations"] = marks
    if colors:
        extra["colors"] = {int(k): list(v) for k, v in colors.items()}
    return extra


def recolor(
    entries: list[LegendEntry], colors: Mapping[int, tuple[int, int, int]] | None
) -> list[LegendEntry]:
    """Legend entries with the overlay's own colours where a palette overrides the defaults."""
    if not colors:
        return entries
    from medm3.imaging.overlay import color_name

    out = []
    for e in entries:
        rgb = tuple(int(c) for c in colors.get(e.label_id, e.color))
        out.append(LegendEntry(e.label_id, e.name, rgb, color_name(rgb)))  # type: ignore[arg-type]
    return out


def png_info(picture: Image.Image, source: str | None = None) -> Any:
    """PNG text chunks describing a rendered slice (for ``picture.save(path, pnginfo=...)``).

    Keys (``medm3:*``): ``source``, ``plane``, ``index``, ``num_slices``, ``window``,
    ``pixel_spacing_mm`` (rendered pixels), ``labels``, ``orientation`` and ``notes``
    (when annotated) and ``software``.
    """
    from medm3 import __version__
    from medm3.imaging.annotate import png_metadata

    meta = dict(picture.info.get("medm3") or {})
    window = meta.get("window") or {}
    spacing = meta.get("pixel_spacing_mm")
    marks = meta.get("annotations") or {}
    letters = marks.get("letters")
    return png_metadata(
        {
            "source": source,
            "plane": meta.get("plane"),
            "index": meta.get("index"),
            "num_slices": meta.get("num_slices"),
            "window": window.get("text"),
            "pixel_spacing_mm": None if not spacing else " x ".join(f"{v:.4g}" for v in spacing),
            "labels": ", ".join(f"{e['id']}={e['name']}" for e in meta.get("legend", [])) or None,
            "orientation": "top {} bottom {} left {} right {}".format(*letters)
            if letters
            else None,
            "notes": "; ".join(marks.get("notes") or []) or None,
            "software": f"medm3 {__version__}",
        }
    )


def _info(
    view: SliceView,
    win: Window | None,
    size: tuple[int, int],
    ids: list[int],
    entries: list[LegendEntry],
) -> dict[str, Any]:
    return {
        "plane": view.plane,
        "index": view.index,
        "num_slices": view.count,
        "window": None
        if win is None
        else {"name": win.name, "width": win.width, "level": win.level, "text": win.describe()},
        "image_size": [size[1], size[0]],
        "zoom": [view.zoom[0], view.zoom[1]],
        "labels_in_slice": ids,
        "legend": [e.as_dict() for e in entries],
    }
