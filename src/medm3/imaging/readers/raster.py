"""PNG / JPEG / BMP / TIFF reader (Pillow) for 2D images.

Mode handling: ``L`` -> uint8; 16-bit grayscale (``I;16*``) -> uint16 (values
kept); ``I`` -> uint16 when the values fit, else int32; ``F`` -> float32; ``1``
-> uint8 0/255; palette -> grayscale when the palette is gray, else RGB;
``LA``/``RGBA``/``PA`` -> alpha composited onto black (transparent = no
signal); ``CMYK``/``YCbCr``/... -> RGB. RGB whose three channels are identical
becomes grayscale. The EXIF orientation of JPEG photos is applied. Multi-page
TIFFs use the first page (``metadata['pages']`` records the count).

The size declared in the header is checked against ``max_pixels`` before the
pixel data is decoded; Pillow's own ``MAX_IMAGE_PIXELS`` guard is kept as an
extra safety net and reported the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import check_pixels
from medm3.imaging.modality import infer_modality
from medm3.imaging.orientation import affine_2d
from medm3.imaging.readers.base import Head, ReadContext, Reader

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"II+\x00", "a TIFF image"),
    (b"MM\x00+", "a TIFF image"),
    (b"BM", "a BMP image"),
)

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff"}


def sniff_raster(head: Head) -> str | None:
    """Describe ``head`` if it starts a PNG, JPEG, TIFF or BMP file.

    Args:
        head: The file's first bytes.

    Returns:
        E.g. ``"a PNG image"``, or None.
    """
    for magic, what in _MAGIC:
        if head.raw.startswith(magic):
            return what
    return None


def _composite_alpha(im: Any) -> tuple[Any, bool]:
    """Drop the alpha band, compositing onto black where it is not opaque."""
    from PIL import Image

    base_mode = "L" if im.mode in ("LA", "La") else "RGB"
    im = im.convert("LA" if base_mode == "L" else "RGBA")
    alpha = im.getchannel("A")
    if alpha.getextrema() == (255, 255):
        return im.convert(base_mode), False
    black = Image.new(base_mode, im.size, 0)
    black.paste(im.convert(base_mode), mask=alpha)
    return black, True


def _to_array(im: Any, metadata: dict[str, Any]) -> np.ndarray:
    """Convert a loaded Pillow image to a numpy array following the mode rules."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        palette = im.getpalette() or []
        rgb = np.asarray(palette, dtype=np.int32)[: (len(palette) // 3) * 3].reshape(-1, 3)
        gray = rgb.size and bool(np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]))
        im = im.convert(("LA" if gray else "RGBA") if has_alpha else ("L" if gray else "RGB"))
        mode = im.mode
    if mode in ("LA", "La", "RGBA", "RGBa"):
        im, composited = _composite_alpha(im)
        if composited:
            metadata["alpha"] = "composited onto black"
        mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.uint16)
    if mode == "I":
        arr = np.asarray(im, dtype=np.int32)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16)
        return arr
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("L", "RGB"):
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))


def read_raster(path: Path, ctx: ReadContext) -> MedicalImage:
    """Read a PNG/JPEG/BMP/TIFF (or other Pillow-readable) 2D image.

    Args:
        path: The image file.
        ctx: Read options (limits).

    Returns:
        A 2D :class:`MedicalImage` (``(rows, cols)`` or ``(rows, cols, 3)``),
        spacing ``(1.0, 1.0)``, modality inferred.

    Raises:
        InputError: If Pillow cannot read it, it is too large, or it is truncated.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputError(f"image is too large: {exc} (possible decompression bomb)", path) from None
    except UnidentifiedImageError:
        raise InputError("not an image format Pillow can read", path) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot open image ({exc})", path) from None
    with im:
        width, height = im.size
        bands = len(im.getbands())
        check_pixels(
            width * height * bands,
            ctx.limits,
            path,
            f"{width} x {height} x {bands}",
            bytes_per_sample=4 if im.mode in ("I", "F") else (2 if "16" in im.mode else 1),
        )
        fmt = im.format or ""
        # PNG/JPEG carry no physical pixel size: 1 mm is an assumption, said so.
        metadata: dict[str, Any] = {
            "format": _FORMATS.get(fmt, fmt.lower()),
            "spacing_assumed": True,
        }
        pages = int(getattr(im, "n_frames", 1) or 1)
        if pages > 1:
            metadata["pages"] = pages
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                if im.format in ("JPEG", "MPO", "TIFF"):
                    im = ImageOps.exif_transpose(im)
                metadata["mode"] = im.mode
                array = _to_array(im, metadata)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise InputError(f"image data is truncated or corrupt ({exc})", path) from None
    if array.ndim == 3 and array.shape[-1] == 3 and _channels_equal(array):
        array = np.ascontiguousarray(array[..., 0])
        metadata["converted_to_grayscale"] = True
    return MedicalImage(
        array=array,
        spacing=(1.0, 1.0),
        affine=affine_2d(1.0, 1.0),
        modality=infer_modality(array, is_volume=False),
        modality_source="inferred",
        source=str(path),
        metadata=metadata,
    )


def _channels_equal(array: np.ndarray) -> bool:
    return bool(np.array_equal(array[..., 0], array[..., 1])) and bool(
        np.array_equal(array[..., 1], array[..., 2])
    )


READER = Reader(
    name="image",
    label="PNG/JPEG/BMP/TIFF",
    suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"),
    sniff=sniff_raster,
    read=read_raster,
    probe=True,
)
