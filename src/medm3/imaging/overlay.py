"""Label overlays: stable per-label colours, alpha blending, contours and a legend.

Colours: :func:`label_color` gives every label id the same RGB colour in every
image and every run. Ids 1-20 use a hand-picked high-contrast qualitative
palette (red, green, yellow, blue, orange, ...); higher ids continue with
colours picked greedily to be as far as possible (CIELAB distance) from all
lower ids, avoiding greys (invisible on grey-scale scans). The table has 255
entries; id ``n`` > 255 reuses the colour of ``(n - 1) % 255 + 1``. Id 0 is
background and is never drawn. :func:`label_color_name` / :func:`color_name`
give a human name (nearest entry of a small named-colour table) so that text
can say "the liver is shown in green".
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.labels import label_name

RGB = tuple[int, int, int]

#: Hand-picked palette for label ids 1..20 (name, colour).
BASE_PALETTE: tuple[tuple[str, RGB], ...] = (
    ("red", (230, 25, 75)),
    ("green", (60, 180, 75)),
    ("yellow", (255, 225, 25)),
    ("blue", (0, 130, 200)),
    ("orange", (245, 130, 48)),
    ("purple", (145, 30, 180)),
    ("cyan", (70, 240, 240)),
    ("magenta", (240, 50, 230)),
    ("lime", (190, 240, 40)),
    ("pink", (250, 170, 200)),
    ("teal", (0, 128, 128)),
    ("lavender", (200, 170, 255)),
    ("brown", (170, 110, 40)),
    ("maroon", (128, 0, 0)),
    ("mint", (150, 255, 180)),
    ("olive", (128, 128, 0)),
    ("navy", (0, 0, 128)),
    ("gold", (200, 160, 0)),
    ("sky blue", (120, 190, 255)),
    ("salmon", (255, 120, 100)),
)

#: Extra named colours used only to name generated colours.
_EXTRA_NAMES: tuple[tuple[str, RGB], ...] = (
    ("dark red", (139, 0, 0)),
    ("coral", (255, 127, 80)),
    ("peach", (255, 200, 150)),
    ("tan", (210, 180, 140)),
    ("beige", (240, 225, 170)),
    ("khaki", (190, 180, 100)),
    ("chartreuse", (127, 255, 0)),
    ("light green", (144, 238, 144)),
    ("dark green", (0, 100, 0)),
    ("spring green", (0, 255, 127)),
    ("sea green", (46, 139, 87)),
    ("turquoise", (64, 224, 208)),
    ("light blue", (173, 216, 230)),
    ("royal blue", (65, 105, 225)),
    ("dark blue", (0, 0, 200)),
    ("indigo", (75, 0, 130)),
    ("violet", (140, 80, 240)),
    ("plum", (200, 120, 200)),
    ("orchid", (218, 112, 214)),
    ("rose", (255, 0, 127)),
    ("hot pink", (255, 105, 180)),
    ("dark purple", (90, 20, 90)),
    ("red-orange", (255, 69, 0)),
    ("rosy brown", (160, 90, 90)),
    ("steel blue", (70, 130, 180)),
    ("medium blue", (0, 60, 230)),
    ("blue-violet", (138, 43, 226)),
    ("emerald", (0, 180, 120)),
    ("yellow-green", (154, 205, 50)),
    ("dark olive", (85, 107, 47)),
    ("slate blue", (106, 90, 205)),
)

#: Number of distinct colours in the label colour table.
PALETTE_SIZE = 255


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255, shape (..., 3)) -> CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack(
        [
            116.0 * f[..., 1] - 16.0,
            500.0 * (f[..., 0] - f[..., 1]),
            200.0 * (f[..., 1] - f[..., 2]),
        ],
        axis=-1,
    )


@functools.cache
def _color_table() -> tuple[RGB, ...]:
    """The fixed label colour table (index i -> colour of label id i + 1)."""
    steps = np.arange(0, 256, 17)
    candidates = np.array(list(itertools.product(steps, steps, steps)))
    lab = _srgb_to_lab(candidates)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    keep = (chroma >= 30) & (lab[:, 0] >= 35) & (lab[:, 0] <= 92)
    candidates, lab = candidates[keep], lab[keep]
    chosen: list[RGB] = [rgb for _, rgb in BASE_PALETTE]
    base_lab = _srgb_to_lab(np.array(chosen))
    nearest = np.min(np.linalg.norm(lab[:, None, :] - base_lab[None], axis=-1), axis=1)
    while len(chosen) < PALETTE_SIZE:
        best = int(np.argmax(nearest))
        chosen.append(tuple(int(v) for v in candidates[best]))  # type: ignore[arg-type]
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[best], axis=1))
    return tuple(chosen)


def label_color(label_id: int) -> RGB:
    """The overlay colour of a label id, identical in every image and run.

    Args:
        label_id: A positive label id.

    Returns:
        ``(r, g, b)`` with 0-255 components.

    Raises:
        ValueError: For id 0 (background) or negative ids.
    """
    label_id = int(label_id)
    if label_id <= 0:
        raise ValueError(f"label id {label_id} has no colour (0 is background)")
    return _color_table()[(label_id - 1) % PALETTE_SIZE]


@functools.cache
def _named_colors() -> tuple[tuple[str, ...], np.ndarray]:
    named = (*BASE_PALETTE, *_EXTRA_NAMES)
    return tuple(n for n, _ in named), _srgb_to_lab(np.array([c for _, c in named]))


def color_name(rgb: Iterable[int]) -> str:
    """Human name of a colour: the nearest (CIELAB) entry of a small table.

    Args:
        rgb: ``(r, g, b)`` with 0-255 components.

    Returns:
        A name such as ``"green"`` or ``"sky blue"``.
    """
    names, table = _named_colors()
    lab = _srgb_to_lab(np.array(list(rgb), dtype=np.float64))
    return names[int(np.argmin(np.linalg.norm(table - lab, axis=1)))]


def label_color_name(label_id: int) -> str:
    """Human name of :func:`label_color` (``label_color_name(5) == "orange"``).

    Args:
        label_id: A positive label id.

    Returns:
        The colour name.
    """
    return color_name(label_color(label_id))


@dataclass(frozen=True)
class LegendEntry:
    """One legend row.

    Attributes:
        label_id: The label id.
        name: Display name (from the label map, else ``"label N"``).
        color: ``(r, g, b)`` overlay colour.
        color_name: Human colour name.
    """

    label_id: int
    name: str
    color: RGB
    color_name: str

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "id": self.label_id,
            "name": self.name,
            "color": list(self.color),
            "color_name": self.color_name,
        }


def legend_entries(
    label_ids: Iterable[int], label_names: Mapping[int, str] | None = None
) -> list[LegendEntry]:
    """Legend rows for the given ids (0 skipped), sorted by id.

    Args:
        label_ids: Label ids to list.
        label_names: ``{id: name}``; missing ids are called ``"label N"``.

    Returns:
        The entries.
    """
    ids = sorted({int(i) for i in label_ids if int(i) > 0})
    return [
        LegendEntry(i, label_name(label_names, i), label_color(i), label_color_name(i)) for i in ids
    ]


def check_mask(image: MedicalImage, mask: MedicalImage | np.ndarray) -> np.ndarray:
    """Validate a label mask against an image and return its label array.

    The mask must have the image's spatial shape; for volumes where both
    carry affines they must agree within 0.01 mm (masks are not resampled).
    Values must be non-negative integers (integral floats are accepted).

    Args:
        image: The image the mask is drawn on.
        mask: A :class:`MedicalImage` (e.g. a loaded NIfTI label map) or an array.

    Returns:
        An unsigned integer array with the image's spatial shape.

    Raises:
        InputError: On a grid mismatch, multi-channel mask, or bad values.
    """
    source = mask.source if isinstance(mask, MedicalImage) else None
    array = np.asarray(mask.array if isinstance(mask, MedicalImage) else mask)
    ndim = len(image.spacing)
    if array.ndim == ndim + 1 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == ndim + 1 and array.shape[-1] > 1:
        raise InputError(
            f"mask must be a single-channel label image, not {array.shape[-1]} channels", source
        )
    if array.shape != image.spatial_shape:
        raise InputError(_grid_message(image, mask, array.shape), source)
    if (
        isinstance(mask, MedicalImage)
        and image.is_volume
        and mask.is_volume
        and not np.allclose(mask.affine, image.affine, rtol=0.0, atol=1e-2)
    ):
        raise InputError(_grid_message(image, mask, array.shape), source)
    return _integer_labels(array, source)


def _grid_message(image: MedicalImage, mask: object, shape: tuple[int, ...]) -> str:
    mask_spacing = mask.spacing if isinstance(mask, MedicalImage) else "unknown"
    return (
        f"mask grid does not match image: mask shape {tuple(shape)}, spacing "
        f"{_fmt_spacing(mask_spacing)}; image shape {image.spatial_shape}, spacing "
        f"{_fmt_spacing(image.spacing)} (masks are not resampled)"
    )


def _fmt_spacing(spacing: object) -> str:
    if isinstance(spacing, str):
        return spacing
    return "(" + ", ".join(f"{float(s):.3g}" for s in spacing) + ")"  # type: ignore[attr-defined]


def _integer_labels(array: np.ndarray, source: str | None) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind not in "uif":
        raise InputError(f"mask must hold integer label ids, not {array.dtype} data", source)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError("mask holds NaN or infinite values; expected label ids", source)
        fractional = array != np.round(array)
        if fractional.any():
            example = float(array[fractional].flat[0])
            raise InputError(
                f"mask holds non-integer values (e.g. {example:g}); expected integer label ids",
                source,
            )
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = float(array.min()), float(array.max())
    if low < 0:
        raise InputError(
            f"mask holds negative values (min {low:g}); expected label ids >= 0", source
        )
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise InputError(f"mask label ids are too large (max {high:g})", source)


def label_contours(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Boundary pixels of every labelled region.

    A labelled pixel is on the contour when a different label (or background,
    or the image edge) lies within ``width`` pixels of it (square neighbourhood),
    so contours are ``width`` pixels thick and lie inside their region.

    Args:
        labels: ``(rows, cols)`` integer label image.
        width: Contour thickness in pixels (>= 1).

    Returns:
        Boolean array, True on contour pixels.
    """
    width = max(1, int(width))
    labels = np.asarray(labels)
    padded = np.pad(labels, width, mode="constant", constant_values=0)
    low = high = padded
    for axis in (0, 1):  # separable min/max filters of size 2*width+1
        lows, highs = [low], [high]
        for shift in range(1, width + 1):
            lows += [np.roll(low, shift, axis), np.roll(low, -shift, axis)]
            highs += [np.roll(high, shift, axis), np.roll(high, -shift, axis)]
        low, high = np.minimum.reduce(lows), np.maximum.reduce(highs)
    inner = (slice(width, -width), slice(width, -width))
    return (labels > 0) & ((low[inner] != labels) | (high[inner] != labels))


def blend_labels(
    base: np.ndarray,
    labels: np.ndarray,
    *,
    alpha: float = 0.45,
    contours: bool = False,
    contour_width: int = 1,
    colors: Mapping[int, RGB] | None = None,
) -> np.ndarray:
    """Colour labelled pixels of a grey or RGB image.

    Args:
        base: ``(rows, cols)`` or ``(rows, cols, 3)`` uint8 image.
        labels: ``(rows, cols)`` label image on the same pixels.
        alpha: Opacity of filled regions (0 = invisible, 1 = opaque).
        contours: Draw only region boundaries, opaque, leaving interiors untouched.
        contour_width: Boundary thickness in pixels when ``contours``.
        colors: Id -> RGB for this image (e.g. :mod:`medm3.imaging.palettes`);
            default: :func:`label_color` of each id.

    Returns:
        ``(rows, cols, 3)`` uint8 RGB image.

    Raises:
        ValueError: If ``alpha`` is outside ``[0, 1]`` or the shapes differ.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if labels.shape != base.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {base.shape[:2]} differ")
    rgb = np.repeat(base[..., None], 3, axis=-1) if base.ndim == 2 else base[..., :3]
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    draw = label_contours(labels, contour_width) if contours else labels > 0
    lut = np.zeros((int(ids.max()) + 1, 3), dtype=np.float64)
    for i in ids:
        lut[int(i)] = colors[int(i)] if colors and int(i) in colors else label_color(int(i))
    out = rgb.astype(np.float64)
    colours = lut[labels[draw]]
    opacity = 1.0 if contours else alpha
    out[draw] = (1.0 - opacity) * out[draw] + opacity * colours
    return np.floor(out + 0.5).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType
        return ImageFont.load_default()


def draw_legend(
    image: Image.Image,
    entries: list[LegendEntry],
    *,
    font_size: int | None = None,
    background: RGB = (0, 0, 0),
) -> Image.Image:
    """Return ``image`` with a legend panel (colour swatch + name) on its right.

    Entries fill columns as tall as the image; if more than four columns
    would be needed the canvas grows downward instead.

    Args:
        image: The rendered slice (converted to RGB).
        entries: Legend rows; an empty list returns the image unchanged.
        font_size: Text height in pixels; default scales with the image height.
        background: Panel colour.

    Returns:
        A new, wider (and possibly taller) RGB image.
    """
    base = image.convert("RGB")
    if not entries:
        return base
    width, height = base.size
    size = font_size or int(np.clip(round(height / 30), 11, 24))
    font = _font(size)
    pad, line = max(4, size // 2), round(size * 1.5)
    per_column = max(1, (height - 2 * pad) // line)
    columns = min(4, -(-len(entries) // per_column))
    per_column = -(-len(entries) // columns)
    swatch = size
    scratch = ImageDraw.Draw(base)
    text_width = max(scratch.textlength(e.name, font=font) for e in entries)
    column_width = int(swatch + pad + text_width + 2 * pad)
    canvas = Image.new(
        "RGB",
        (width + pad + columns * column_width, max(height, 2 * pad + per_column * line)),
        background,
    )
    canvas.paste(base, (0, 0))
    draw = ImageDraw.Draw(canvas)
    white = (255, 255, 255)
    for n, entry in enumerate(entries):
        column, row = divmod(n, per_column)
        x = width + pad + column * column_width + pad
        y = pad + row * line + (line - swatch) // 2
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=entry.color, outline=white)
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text(
                (x + swatch + pad, y + swatch // 2), entry.name, fill=white, font=font, anchor="lm"
            )
        else:  # bitmap fonts do not support anchors
            draw.text((x + swatch + pad, y), entry.name, fill=white, font=font)
    return canvas
