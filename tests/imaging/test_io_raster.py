"""PNG/JPEG/BMP/TIFF reading, modes, and decompression-bomb protection."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medm3.errors import InputError
from medm3.imaging import load_image
from medm3.imaging.limits import ReadLimits


def crafted_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width x height`` but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_real_cxr_png(cxr_png_path: Path) -> None:
    image = load_image(cxr_png_path)
    expected = np.asarray(Image.open(cxr_png_path))
    np.testing.assert_array_equal(image.array, expected)
    assert image.array.dtype == np.uint8 and image.array.ndim == 2
    assert (image.modality, image.modality_source) == ("XR", "inferred")
    assert image.spacing == (1.0, 1.0) and image.metadata["format"] == "png"


def test_16bit_png_keeps_values(tmp_path: Path) -> None:
    data = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 20).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, data)


def test_palette_alpha_and_gray_rgb(tmp_path: Path) -> None:
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    Image.fromarray(gray).convert("P").save(tmp_path / "pal_gray.png")
    img = load_image(tmp_path / "pal_gray.png")
    assert img.array.ndim == 2
    np.testing.assert_array_equal(img.array, gray)

    rgb = np.zeros((10, 64, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[:, 32:, 2] = 150
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    colour = load_image(tmp_path / "pal.png")
    assert colour.array.shape == (10, 64, 3) and colour.modality == "OT"

    rgba = np.dstack([rgb, np.full((10, 64), 255, np.uint8)])
    rgba[:5, :, 3] = 0  # top half transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png")
    assert out.array.shape == (10, 64, 3)
    assert out.array[:5].max() == 0 and out.array[5:, 0, 0].min() == 200
    assert out.metadata["alpha"] == "composited onto black"

    Image.fromarray(np.dstack([gray] * 3)).save(tmp_path / "rgb_gray.png")
    flat = load_image(tmp_path / "rgb_gray.png")
    assert flat.array.ndim == 2 and flat.metadata["converted_to_grayscale"] is True
    assert flat.modality == "XR"


def test_jpeg_bmp_tiff(tmp_path: Path) -> None:
    gray = (np.add.outer(np.arange(40), np.arange(30)) * 3).astype(np.uint8)
    for name in ("a.jpg", "a.bmp", "a.tif"):
        Image.fromarray(gray).save(tmp_path / name)
        image = load_image(tmp_path / name)
        assert image.array.shape == (40, 30) and image.modality == "XR"
    Image.fromarray(gray.astype(np.float32) / 7).save(tmp_path / "f.tiff")
    floats = load_image(tmp_path / "f.tiff")
    assert floats.array.dtype == np.float32
    np.testing.assert_allclose(floats.array, gray / 7, rtol=1e-6)


def test_truncated_png(tmp_path: Path, cxr_png_path: Path) -> None:
    cut = tmp_path / "cut.png"
    cut.write_bytes(cxr_png_path.read_bytes()[:20_000])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        load_image(cut)
    assert "cut.png" in str(err.value)


def test_pixel_limit_checked_before_decoding(tmp_path: Path, monkeypatch) -> None:
    bomb = crafted_png(tmp_path / "bomb.png", 9000, 9000)  # 81 M pixels, < PIL's own limit
    monkeypatch.setenv("MEDM3_MAX_PIXELS", "50000000")
    with pytest.raises(InputError, match=r"declares 9000 x 9000 x 1 = 81,000,000 samples"):
        load_image(bomb)


def test_huge_declared_size_is_refused(tmp_path: Path) -> None:
    bomb = crafted_png(tmp_path / "huge.png", 60000, 60000)
    with pytest.raises(InputError, match=r"too large|decompression bomb"):
        load_image(bomb)


def test_low_limit_on_real_image(cxr_png_path: Path) -> None:
    with pytest.raises(InputError, match="MEDM3_MAX_PIXELS"):
        load_image(cxr_png_path, limits=ReadLimits(max_pixels=1000))


def test_invalid_limit_environment(monkeypatch, cxr_png_path: Path) -> None:
    monkeypatch.setenv("MEDM3_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="MEDM3_MAX_PIXELS must be a positive number"):
        load_image(cxr_png_path)
