"""What every reader shares: the read context, the reader record, file heads, file volumes."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import ReadLimits


@dataclass(frozen=True)
class ReadContext:
    """Options that travel with one :func:`~medm3.imaging.io.load_image` call.

    Attributes:
        limits: Resource limits in force.
        series: Which DICOM series to read from a folder/zip holding several
            (index or SeriesInstanceUID); None when not chosen.
        gaps: What to do with a DICOM stack that has missing slices:
            ``refuse``, ``largest`` or ``fill`` (see
            :mod:`medm3.imaging.readers.dicom_gaps`).
    """

    limits: ReadLimits
    series: int | str | None = None
    gaps: str = "refuse"


@dataclass(frozen=True)
class Head:
    """The first bytes of a file, for magic-byte checks.

    Attributes:
        raw: The file's first bytes.
        gunzipped: The first decompressed bytes when the file is gzip, else None.
    """

    raw: bytes
    gunzipped: bytes | None = None


@dataclass(frozen=True)
class Reader:
    """One file format in the readers registry.

    Attributes:
        name: Short name used in messages, e.g. ``"nifti"``.
        label: Human name of the format, e.g. ``"NIfTI"``.
        suffixes: Lower-case file-name suffixes that claim this format.
        sniff: Magic-byte check: returns a description of the content
            (e.g. ``"a PNG image"``) when ``Head`` matches, else None.
        read: Reads one file into a :class:`MedicalImage`; raises
            :class:`~medm3.errors.InputError` when it cannot.
        probe: Whether to try this reader on files nobody recognises.
    """

    name: str
    label: str
    suffixes: tuple[str, ...]
    sniff: Callable[[Head], str | None]
    read: Callable[[Path, ReadContext], MedicalImage]
    probe: bool = False


def read_head(path: Path, raw_bytes: int = 4096, gunzipped_bytes: int = 1024) -> Head:
    """The first bytes of ``path``, and of its decompressed content when it is gzip.

    Args:
        path: The file.
        raw_bytes: Bytes to read as stored.
        gunzipped_bytes: Bytes to decompress when the file starts like gzip
            (a corrupt stream gives ``gunzipped=None``).

    Returns:
        The :class:`Head`.

    Raises:
        InputError: If the file cannot be opened.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(raw_bytes)
    except OSError as exc:
        raise InputError(f"cannot open the file ({exc.strerror or exc})", path) from None
    gunzipped = None
    if raw.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as fh:
                gunzipped = fh.read(gunzipped_bytes)
        except (OSError, EOFError, zlib.error):
            gunzipped = None
    return Head(raw=raw, gunzipped=gunzipped)


def file_volume(
    array: np.ndarray, affine: np.ndarray, path: Path, metadata: dict[str, Any]
) -> MedicalImage:
    """A RAS+ volume read from a format without a modality tag (NIfTI, NRRD, MetaImage).

    Args:
        array: The RAS+ voxel values.
        affine: Their RAS affine.
        path: The file (recorded as the source).
        metadata: Format facts (``format``, ``original_orientation`` ...).

    Returns:
        The image, its modality inferred from the values.
    """
    from medm3.imaging.modality import infer_modality
    from medm3.imaging.orientation import voxel_sizes

    return MedicalImage(
        array=array,
        spacing=voxel_sizes(affine),
        affine=affine,
        modality=infer_modality(array, is_volume=True),
        modality_source="inferred",
        source=str(path),
        metadata=metadata,
    )
