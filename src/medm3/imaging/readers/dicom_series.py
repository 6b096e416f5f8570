"""DICOM series from a folder, a zip archive or a list of files.

Two passes: headers first (``stop_before_pixels``) to find the image files,
group them by SeriesInstanceUID, pick the series, sort and validate the
geometry and check the pixel limit; then the pixel data, slice by slice.

Series selection: when several series are present and ``series`` is None an
:class:`~medm3.errors.InputError` lists them as ``[index] UID 'description'
(N files)``, ordered by SeriesNumber then UID. ``series`` may be that index
(an int, or a string of digits as the CLI passes it), a SeriesInstanceUID, or
a SeriesDescription (case-insensitive) that names exactly one series.

Files that are not DICOM (README, thumbnails) and DICOM files without pixel
data (SR, RTSTRUCT, DICOMDIR) are skipped in folders and archives; in an
explicit list of files a non-DICOM file is an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError
from medm3.imaging.archive import ZIP_MAGIC, open_zip
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import ReadLimits, check_pixels
from medm3.imaging.readers.base import Head, ReadContext, Reader
from medm3.imaging.readers.dicom_check import bytes_per_sample
from medm3.imaging.readers.dicom_file import base_metadata, image_from_dataset, volume_image
from medm3.imaging.readers.dicom_geometry import SliceGeometry, stack_slices
from medm3.imaging.readers.dicom_pixels import (
    declared_samples,
    decode_pixels,
    frame_count,
    looks_like_image,
    read_dataset,
    rescale_of,
    to_values,
)

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
    """

    label: str
    load: Callable[[], str | bytes]
    head: Callable[[int], bytes]

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

    def describe(self, index: int) -> str:
        """One-line description ``[index] UID 'description' (N files)``."""
        n = len(self.items)
        desc = f" '{self.description}'" if self.description else ""
        return f"[{index}] {self.uid or '(no SeriesInstanceUID)'}{desc} ({n} file{'s' * (n != 1)})"


def _file_source(path: Path, label: str) -> DicomSource:
    def head(n: int) -> bytes:
        with open(path, "rb") as fh:
            return fh.read(n)

    return DicomSource(label=label, load=lambda: str(path), head=head)


def _scan(
    sources: Sequence[DicomSource], where: str | os.PathLike[str], strict: bool
) -> tuple[list[tuple[DicomSource, Any]], list[str]]:
    """Parse the headers of DICOM image files; return them and the skipped labels."""
    images: list[tuple[DicomSource, Any]] = []
    skipped: list[str] = []
    for src in sources:
        suffix = Path(src.label).suffix.lower()
        try:
            preamble = src.head(132)[128:132] == b"DICM"
        except OSError as exc:
            raise InputError(f"cannot read {src.label}: {exc.strerror or exc}", where) from None
        if not preamble and (suffix in NON_DICOM_SUFFIXES or Path(src.label).name.startswith(".")):
            if strict:
                raise InputError("not a DICOM file", src.label)
            skipped.append(src.label)
            continue
        try:
            ds = src.dataset(header_only=True)
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
            images.append((src, ds))
        else:
            skipped.append(src.label)
    return images, skipped


def _group(images: list[tuple[DicomSource, Any]]) -> list[SeriesGroup]:
    groups: dict[str, SeriesGroup] = {}
    for src, ds in images:
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if uid not in groups:
            try:
                number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") is not None else None
            except (TypeError, ValueError):
                number = None
            desc = str(ds.get("SeriesDescription", "") or "").strip()
            groups[uid] = SeriesGroup(uid=uid, description=desc, number=number)
        groups[uid].items.append((src, ds))
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


def _geometry(src: DicomSource, ds: Any, where: str | os.PathLike[str]) -> SliceGeometry:
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    ps = ds.get("PixelSpacing")
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        raise InputError(
            f"{src.label} has no ImagePositionPatient/ImageOrientationPatient, so the files "
            "cannot be stacked into a volume (pass a single file instead)",
            where,
        )
    spacing = (float(ps[0]), float(ps[1])) if ps is not None and len(ps) == 2 else (1.0, 1.0)
    return SliceGeometry(
        label=src.label,
        position=(float(ipp[0]), float(ipp[1]), float(ipp[2])),
        orientation=tuple(float(v) for v in iop),
        pixel_spacing=spacing,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
    )


def read_group(
    group: SeriesGroup, limits: ReadLimits, where: str | os.PathLike[str], container: str
) -> MedicalImage:
    """Read one series into a volume (or a 2D image when it has a single file).

    Args:
        group: The chosen series.
        limits: Limits in force.
        where: The folder/archive/first file, recorded as the image source.
        container: ``"folder"``, ``"zip"`` or ``"files"`` (``metadata['container']``).

    Returns:
        The image.

    Raises:
        InputError: On geometry problems, undecodable pixels or exceeded limits.
    """
    source = os.fspath(where)
    multi = [src for src, ds in group.items if frame_count(ds) > 1]
    if len(group.items) == 1:
        src = group.items[0][0]
        image = image_from_dataset(src.dataset(), src.label, source, limits)
        image.metadata["container"] = container
        return image
    if multi:
        raise InputError(
            f"series {group.uid} mixes {len(group.items)} files including multi-frame "
            f"file {multi[0].label}; pass the multi-frame file on its own",
            where,
        )
    geoms = [_geometry(src, ds, where) for src, ds in group.items]
    first_ds = group.items[0][1]
    try:
        thickness = float(first_ds.get("SliceThickness") or 0)
    except (TypeError, ValueError):
        thickness = 0.0
    stack = stack_slices(geoms, where, thickness)
    per_slice, what = declared_samples(first_ds)
    check_pixels(
        per_slice * len(geoms),
        limits,
        where,
        f"{len(geoms)} slices x {what}",
        bytes_per_sample=bytes_per_sample(first_ds),
    )
    stored: np.ndarray | None = None
    scales = np.zeros((len(geoms), 2))
    ds_first_full = None
    for k, i in enumerate(stack.order):
        src = group.items[i][0]
        ds = src.dataset()
        arr = decode_pixels(ds, src.label, limits)
        if stored is None:
            ds_first_full = ds
            stored = np.empty((len(geoms), *arr.shape), dtype=arr.dtype)
        if arr.shape != stored.shape[1:]:
            raise InputError(
                f"{src.label} decodes to shape {arr.shape}, expected {stored.shape[1:]}", where
            )
        if not np.can_cast(arr.dtype, stored.dtype, casting="safe"):
            stored = stored.astype(np.result_type(arr.dtype, stored.dtype))
        stored[k] = arr
        scales[k] = rescale_of(ds)
    assert stored is not None and ds_first_full is not None
    md = base_metadata(ds_first_full, "dicom-series")
    md["files"] = len(geoms)
    md["container"] = container
    if container == "files":  # exactly which files (derived objects such as DICOM-SEG need them)
        md["source_files"] = [str(Path(src.label).resolve()) for src, _ in group.items]
    values = to_values(stored, ds_first_full, scales[:, 0], scales[:, 1], md)
    del stored  # keep at most two volume-sized arrays alive (peak memory)
    return volume_image(values, stack, ds_first_full, md, source)


def _read_sources(
    sources: list[DicomSource],
    ctx: ReadContext,
    where: str | os.PathLike[str],
    container: str,
    strict: bool = False,
) -> MedicalImage:
    images, skipped = _scan(sources, where, strict)
    if not images:
        others = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        hint = f"; found: {others}" if others else ""
        kind = "folder" if container == "folder" else "archive"
        raise InputError(
            f"no DICOM image files in this {kind} ({len(sources)} files examined{hint})", where
        )
    group = select_series(_group(images), ctx.series, where)
    image = read_group(group, ctx.limits, where, container)
    if skipped:
        image.metadata["skipped_files"] = len(skipped)
    return image


def read_dicom_folder(folder: Path, ctx: ReadContext) -> MedicalImage:
    """Read the DICOM series in a folder (searched recursively).

    Args:
        folder: The folder.
        ctx: Read options (limits, series choice).

    Returns:
        The chosen series as a RAS+ volume (a 2D image if it has one file).

    Raises:
        InputError: If there is no DICOM image, several series and no choice,
            too many files, or a geometry/pixel problem.
    """
    paths: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            paths.append(Path(root) / name)
            if len(paths) > ctx.limits.max_files:
                raise InputError(
                    f"folder holds more than {ctx.limits.max_files:,} files (MEDM3_MAX_FILES)",
                    folder,
                )
    sources = [_file_source(p, str(p.relative_to(folder))) for p in paths]
    if not sources:
        raise InputError("folder is empty", folder)
    return _read_sources(sources, ctx, folder, "folder")


def read_dicom_files(paths: Sequence[Path], ctx: ReadContext) -> MedicalImage:
    """Read a DICOM series given as a list of files.

    Args:
        paths: The files (any order).
        ctx: Read options.

    Returns:
        The series (see :func:`read_dicom_folder`).

    Raises:
        InputError: If a file is missing or not DICOM, or on geometry problems.
    """
    for p in paths:
        if not p.is_file():
            raise InputError("no such file" if not p.exists() else "not a file", p)
    parents = {p.resolve().parent for p in paths}
    if len(parents) == 1:
        where = parents.pop()
    else:
        where = Path(os.path.commonpath([str(p.resolve()) for p in paths]))
    sources = [_file_source(p, str(p)) for p in paths]
    return _read_sources(sources, ctx, where, "files", strict=True)


def read_dicom_zip(path: Path, ctx: ReadContext) -> MedicalImage:
    """Read a zipped DICOM series in memory (nothing is extracted to disk).

    Args:
        path: The ``.zip`` file.
        ctx: Read options (limits, series choice).

    Returns:
        The chosen series.

    Raises:
        InputError: On unsafe/oversized archives (see :mod:`medm3.imaging.archive`)
            or any series problem.
    """
    with open_zip(path, ctx.limits) as members:
        sources = [DicomSource(m.name, m.read, m.read) for m in members]
        if not sources:
            raise InputError("zip archive is empty", path)
        return _read_sources(sources, ctx, path, "zip")


def sniff_zip(head: Head) -> str | None:
    """Describe ``head`` if it starts a zip archive.

    Args:
        head: The file's first bytes.

    Returns:
        ``"a zip archive"`` or None.
    """
    return "a zip archive" if head.raw.startswith(ZIP_MAGIC) else None


READER = Reader(
    name="zip",
    label="zipped DICOM series",
    suffixes=(".zip",),
    sniff=sniff_zip,
    read=read_dicom_zip,
)
