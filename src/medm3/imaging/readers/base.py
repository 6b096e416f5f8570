"""What every reader shares: the read context and the reader record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
