"""Images for VLM backends: metadata-free PNG encoding, data URLs and size limits.

Everything that leaves the process (HTTP backends, saved conversations) goes
through :func:`to_png_bytes`: the pixels are copied into a fresh image, so no
text chunk (``tEXt``/``iTXt``/``zTXt``), EXIF, XMP, ICC profile, DPI or
timestamp of the source image can carry identifying data along. The PNG holds
only ``IHDR``, ``IDAT`` and ``IEND`` chunks (:func:`png_chunk_types` checks it).

Pixels themselves are not inspected: text burned into the pixels (DICOM
overlays, scanned labels) must be handled by the imaging / de-identification
layer before an image becomes an :class:`~medm3.vlm.base.ImagePart`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import zlib
from typing import TYPE_CHECKING

from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_SIDE",
    "MAX_DECODE_PIXELS",
    "clean_image",
    "fit_within",
    "from_data_url",
    "png_chunk_types",
    "to_data_url",
    "to_png_bytes",
]

DEFAULT_MAX_SIDE = 2048
"""Longest side sent to HTTP backends by default (OpenAI's high-detail limit)."""

MAX_DECODE_PIXELS = 64 * 1024 * 1024
"""Largest image :func:`from_data_url` accepts (decompression-bomb guard)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)$", re.S
)
_KEEP_MODES = {"L", "RGB", "RGBA", "LA"}


def clean_image(image: Image.Image) -> Image.Image:
    """Return a copy of ``image`` holding only its pixels (no ``info``, EXIF, ICC, palette).

    Palette, CMYK, YCbCr, 16-bit and float images are converted to RGB (or RGBA
    when they have transparency); L, LA, RGB and RGBA keep their mode.

    Args:
        image: Any PIL image.

    Returns:
        A new image with empty ``info``.
    """
    from PIL import Image

    if image.mode not in _KEEP_MODES:
        has_alpha = image.mode in ("PA", "RGBa", "La") or "transparency" in image.info
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            image = _scale_to_8bit(image)
        else:
            image = image.convert("RGBA" if has_alpha else "RGB")
    return Image.frombytes(image.mode, image.size, image.tobytes())


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Min-max scale a 16-bit / 32-bit / float grayscale image to 8 bits."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image, dtype=np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def fit_within(
    image: Image.Image, max_side: int | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Downscale ``image`` (aspect ratio kept) so both limits hold; never upscales.

    Args:
        image: The image.
        max_side: Largest allowed width or height (``None``: no limit).
        max_pixels: Largest allowed width * height (``None``: no limit).

    Returns:
        ``image`` itself when it already fits, else a resized copy (Lanczos).
    """
    from PIL import Image

    w, h = image.size
    scale = 1.0
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
    if max_pixels is not None and w * h * scale * scale > max_pixels:
        scale = min(scale, (max_pixels / (w * h)) ** 0.5)
    if scale >= 1.0:
        return image
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def to_png_bytes(
    image: Image.Image,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int | None = None,
) -> bytes:
    """Encode ``image`` as a PNG without any metadata.

    Args:
        image: Any PIL image.
        max_side: Downscale so the longest side is at most this (``None``: keep).
        max_pixels: Downscale so width * height is at most this (``None``: keep).

    Returns:
        PNG bytes whose only chunks are IHDR, IDAT(s) and IEND.
    """
    clean = fit_within(clean_image(image), max_side, max_pixels)
    buffer = io.BytesIO()
    # A fresh image has empty info, so Pillow writes no text/EXIF/ICC/pHYs chunks.
    clean.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def to_data_url(
    image: Image.Image,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int | None = None,
) -> str:
    """Encode ``image`` as a metadata-free ``data:image/png;base64,...`` URL.

    See :func:`to_png_bytes` for what is (not) written.

    Args:
        image: Any PIL image.
        max_side: Downscale so the longest side is at most this (``None``: keep).
        max_pixels: Downscale so width * height is at most this (``None``: keep).

    Returns:
        The data URL.
    """
    data = to_png_bytes(image, max_side=max_side, max_pixels=max_pixels)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def from_data_url(url: str, *, max_pixels: int = MAX_DECODE_PIXELS) -> Image.Image:
    """Decode a base64 image data URL (PNG, JPEG, ...) into a clean RGB image.

    Args:
        url: ``data:image/<type>;base64,<data>``.
        max_pixels: Refuse images larger than this (checked before decoding pixels).

    Returns:
        An RGB image without metadata.

    Raises:
        InputError: Not a base64 image data URL, undecodable, or too large.
    """
    from PIL import Image, UnidentifiedImageError

    match = _DATA_URL.match(url.strip())
    if match is None or ";base64" not in match.group("params"):
        raise InputError("not a base64 data URL (expected 'data:image/...;base64,...')")
    mime = match.group("mime") or ""
    if not mime.startswith("image/"):
        raise InputError(f"data URL holds '{mime or 'unknown'}', not an image")
    try:
        data = base64.b64decode(match.group("data"), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"data URL is not valid base64: {exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(f"image in data URL is too large ({w}x{h} > {max_pixels} pixels)")
            img.load()
            return clean_image(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot decode the image in the data URL: {exc}") from None


def png_chunk_types(data: bytes) -> list[str]:
    """List the chunk types of a PNG, in order (e.g. ``["IHDR", "IDAT", "IEND"]``).

    CRCs are verified, so a test can trust that nothing hides between chunks.

    Args:
        data: PNG file bytes.

    Returns:
        The four-letter chunk types.

    Raises:
        InputError: Not a PNG, a truncated chunk, a bad CRC or bytes after IEND.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise InputError("not a PNG (bad signature)")
    pos, types = len(_PNG_SIGNATURE), []
    while pos < len(data):
        if pos + 12 > len(data):
            raise InputError("truncated PNG chunk")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise InputError("truncated PNG chunk")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) & 0xFFFFFFFF != crc:
            raise InputError(f"bad CRC in PNG chunk {ctype!r}")
        types.append(ctype.decode("latin-1"))
        pos = end
        if ctype == b"IEND":
            if pos != len(data):
                raise InputError("bytes after the PNG IEND chunk")
            break
    return types
