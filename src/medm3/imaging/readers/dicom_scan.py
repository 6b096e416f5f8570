"""Finding the DICOM series among files: header scan, grouping by series, choosing one.

Headers are parsed once (``stop_before_pixels``); files that are not DICOM
(README, thumbnails) and DICOM files without pixel data (SR, RTSTRUCT,
DICOMDIR) are skipped in folders and archives, and are an error in an explicit
list of files. For native pixel data the header scan also records where the
pixels start (:func:`~.dicom_volume.locate_pixels`), so the series reader never
parses a file twice.

Series selection: when several series are present and ``series`` is None an
:class:`~medm3.errors.InputError` lists them as ``[index] UID 'description'
(N files)``, ordered by SeriesNumber then UID. ``series`` may be that index
(an int, or a string of digits as the CLI passes it), a SeriesInstanceUID, or
a SeriesDescription (case-insensitive) that names exactly one series.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from medm3.errors import InputError
from medm3.imaging.readers.dicom_pixels import looks_like_image, read_dataset
from medm3.imaging.readers.dicom_tags import fast_get
from medm3.imaging.readers.dicom_volume import PixelRef, locate_pixels

#: Suffixes never probed as DICOM inside folders/archives.
NON_DICOM_SUFFIXES = frozenset(
    {
        *(".txt", ".md", ".json", ".xml", ".html", ".htm", ".pdf", ".csv", ".tsv", ".py"),
        *(".nii", ".gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip", ".ini", ".log", ".db"),
        *(".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".exe", ".ds_store"),
    }
)


@dataclass(frozen=True)
class DicomSource:
    """One candidate DICOM file.

    Attributes:
        label: Name used in messages (path relative to the folder, or member name).
        load: Returns the file's path or its bytes (an archive member).
        head: Returns the first ``n`` bytes.
        in_memory: ``load`` decompresses the whole member (an archive): the
            scan calls it once and keeps the bytes of image files.
    """

    label: str
    load: Callable[[], str | bytes]
    head: Callable[[int], bytes]
    in_memory: bool = False

    def dataset(self, header_only: bool = False) -> Any:
        """Parse the file.

        Args:
            header_only: Stop before the pixel data.

        Returns:
            A ``pydicom.Dataset``.
        """
        return read_dataset(self.load(), self.label, header_only=header_only)


@dataclass
class SeriesGroup:
    """The image files of one SeriesInstanceUID."""

    uid: str
    description: str
    number: int | None
    items: list[tuple[DicomSource, Any]] = field(default_factory=list)
    pixels: list[PixelRef | None] = field(default_factory=list)

    def describe(self, index: int) -> str:
        """One-line description ``[index] UID 'description' (N files)``."""
        n = len(self.items)
        desc = f" '{self.description}'" if self.description else ""
        return f"[{index}] {self.uid or '(no SeriesInstanceUID)'}{desc} ({n} file{'s' * (n != 1)})"


def file_source(path: Path, label: str) -> DicomSource:
    """A :class:`DicomSource` reading a file on disk (``label`` names it in messages)."""

    def head(n: int) -> bytes:
        with open(path, "rb") as fh:
            return fh.read(n)

    return DicomSource(label=label, load=lambda: str(path), head=head)


Scanned = tuple[DicomSource, Any, "PixelRef | None"]


def scan(
    sources: Sequence[DicomSource], where: str | os.PathLike[str], strict: bool
) -> tuple[list[Scanned], list[str]]:
    """Parse the headers of DICOM image files; return them and the skipped labels.

    Args:
        sources: The candidate files.
        where: The folder/archive (for messages).
        strict: A file that is not DICOM is an error (an explicit list of files)
            instead of being skipped (folders, archives).

    Returns:
        ``(source, header, native pixel location or None)`` of each image file,
        and the labels of the files skipped.

    Raises:
        InputError: A file cannot be read, or (``strict``) is not DICOM.
    """
    images: list[Scanned] = []
    skipped: list[str] = []
    for src in sources:
        suffix = Path(src.label).suffix.lower()
        unlikely = suffix in NON_DICOM_SUFFIXES or Path(src.label).name.startswith(".")
        try:
            if unlikely and src.head(132)[128:132] != b"DICM":  # never decompress a README
                if strict:
                    raise InputError("not a DICOM file", src.label)
                skipped.append(src.label)
                continue
            fh, data = _open(src)
        except OSError as exc:
            raise InputError(f"cannot read {src.label}: {exc.strerror or exc}", where) from None
        with fh:
            preamble = fh.read(132)[128:132] == b"DICM"
            fh.seek(0)
            try:
                ds = read_dataset(fh, src.label, header_only=True)
            except InputError:
                if preamble or strict:
                    raise
                skipped.append(src.label)
                continue
            if not preamble and not ("SOPClassUID" in ds or "Modality" in ds):
                if strict:
                    raise InputError("not a DICOM file", src.label)
                skipped.append(src.label)
                continue
            if looks_like_image(ds):
                images.append((src, ds, locate_pixels(fh, ds, data)))
                ds.buffer = None  # the header is parsed; do not pin the member's bytes twice
            else:
                skipped.append(src.label)
    return images, skipped


def _open(src: DicomSource) -> tuple[BinaryIO, bytes | None]:
    """Open a source once: the file itself, or an archive member decompressed once."""
    if src.in_memory:
        data = src.load()
        assert isinstance(data, bytes)
        return io.BytesIO(data), data
    return open(src.load(), "rb"), None


def group_series(images: list[Scanned]) -> list[SeriesGroup]:
    """Group scanned image files by SeriesInstanceUID, ordered by SeriesNumber then UID."""
    groups: dict[str, SeriesGroup] = {}
    for src, ds, ref in images:
        uid = str(fast_get(ds, "SeriesInstanceUID", "") or "").strip()
        if uid not in groups:
            try:
                value = fast_get(ds, "SeriesNumber")
                number = int(value) if value is not None else None
            except (TypeError, ValueError):
                number = None
            desc = str(fast_get(ds, "SeriesDescription", "") or "").strip()
            groups[uid] = SeriesGroup(uid=uid, description=desc, number=number)
        groups[uid].items.append((src, ds))
        groups[uid].pixels.append(ref)
    return sorted(groups.values(), key=lambda g: (g.number is None, g.number or 0, g.uid))


def select_series(
    groups: list[SeriesGroup], series: int | str | None, where: str | os.PathLike[str]
) -> SeriesGroup:
    """Pick one series by index, UID or description (see the module docstring).

    Args:
        groups: The series found, in listing order.
        series: The caller's choice, or None.
        where: The folder/archive (for messages).

    Returns:
        The chosen series.

    Raises:
        InputError: If the choice is ambiguous or matches nothing; the message
            lists every series.
    """
    listing = "; ".join(g.describe(i) for i, g in enumerate(groups))
    if series is None:
        if len(groups) == 1:
            return groups[0]
        raise InputError(
            f"holds {len(groups)} DICOM series; choose one with series=INDEX or "
            f"series=SeriesInstanceUID (CLI: --series): {listing}",
            where,
        )
    choice = str(series).strip()
    if isinstance(series, int) or choice.isdigit():
        index = int(choice)
        if 0 <= index < len(groups):
            return groups[index]
    else:
        for g in groups:
            if g.uid == choice:
                return g
        named = [g for g in groups if g.description and g.description.lower() == choice.lower()]
        if len(named) == 1:
            return named[0]
    raise InputError(f"no DICOM series {choice!r} here; available: {listing}", where)
