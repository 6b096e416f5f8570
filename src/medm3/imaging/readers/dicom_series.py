"""DICOM series from a folder, a zip archive or a list of files.

Every file is read once. Headers first (:mod:`.dicom_scan`: find the image
files, group them by SeriesInstanceUID, pick the series), then sort and
validate the geometry (:mod:`.dicom_geometry`, with the gap policy of
:mod:`.dicom_gaps`) and check the pixel limit; then the pixel data. Native
(uncompressed) grayscale pixels are read on threads straight into the final
RAS+ volume (:mod:`.dicom_volume`); other transfer syntaxes are decoded by
pydicom, slice by slice, into one preallocated buffer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError
from medm3.imaging.archive import ZIP_MAGIC, open_zip
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import ReadLimits, check_pixels
from medm3.imaging.orientation import lps_to_ras
from medm3.imaging.readers.base import Head, ReadContext, Reader
from medm3.imaging.readers.dicom_check import bytes_per_sample
from medm3.imaging.readers.dicom_file import (
    base_metadata,
    finish_volume,
    image_from_dataset,
    volume_image,
)
from medm3.imaging.readers.dicom_geometry import SliceGeometry, Stack, stack_slices
from medm3.imaging.readers.dicom_pixels import (
    declared_samples,
    decode_pixels,
    frame_count,
    rescale_of,
    to_values,
)
from medm3.imaging.readers.dicom_scan import (
    NON_DICOM_SUFFIXES,
    DicomSource,
    SeriesGroup,
    file_source,
    group_series,
    scan,
    select_series,
)
from medm3.imaging.readers.dicom_tags import fast_get
from medm3.imaging.readers.dicom_volume import (
    NativeSlices,
    PixelRef,
    plan_layout,
    read_native_volume,
)

#: Public names, including those re-exported from :mod:`.dicom_scan` for callers that import
#: them from here.
__all__ = [
    "NON_DICOM_SUFFIXES",
    "READER",
    "DicomSource",
    "SeriesGroup",
    "read_dicom_files",
    "read_dicom_folder",
    "read_dicom_zip",
    "read_group",
    "select_series",
    "sniff_zip",
]


def _geometry(src: DicomSource, ds: Any, where: str | os.PathLike[str]) -> SliceGeometry:
    ipp, iop = fast_get(ds, "ImagePositionPatient"), fast_get(ds, "ImageOrientationPatient")
    ps = fast_get(ds, "PixelSpacing")
    multi = (ipp, iop)
    if (
        any(v is None or isinstance(v, (int, float)) for v in multi)
        or len(ipp) != 3
        or len(iop) != 6
    ):
        raise InputError(
            f"{src.label} has no ImagePositionPatient/ImageOrientationPatient, so the files "
            "cannot be stacked into a volume (pass a single file instead)",
            where,
        )
    two = ps is not None and not isinstance(ps, (int, float)) and len(ps) == 2
    spacing = (float(ps[0]), float(ps[1])) if two else (1.0, 1.0)
    return SliceGeometry(
        label=src.label,
        position=(float(ipp[0]), float(ipp[1]), float(ipp[2])),
        orientation=tuple(float(v) for v in iop),
        pixel_spacing=spacing,
        rows=int(fast_get(ds, "Rows")),
        cols=int(fast_get(ds, "Columns")),
    )


def read_group(
    group: SeriesGroup,
    limits: ReadLimits,
    where: str | os.PathLike[str],
    container: str,
    gaps: str = "refuse",
) -> MedicalImage:
    """Read one series into a volume (or a 2D image when it has a single file).

    Args:
        group: The chosen series.
        limits: Limits in force.
        where: The folder/archive/first file, recorded as the image source.
        container: ``"folder"``, ``"zip"`` or ``"files"`` (``metadata['container']``).
        gaps: Gap policy (see :mod:`.dicom_gaps`).

    Returns:
        The image.

    Raises:
        InputError: On geometry problems, undecodable pixels or exceeded limits.
    """
    source = os.fspath(where)
    multi = [src for src, ds in group.items if frame_count(ds) > 1]
    if len(group.items) == 1:
        src = group.items[0][0]
        image = image_from_dataset(src.dataset(), src.label, source, limits, gaps)
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
    stack = stack_slices(geoms, where, thickness, gaps)
    per_slice, what = declared_samples(first_ds)
    check_pixels(
        per_slice * len(stack.order),
        limits,
        where,
        f"{len(stack.order)} slices x {what}",
        bytes_per_sample=bytes_per_sample(first_ds),
    )
    scales = np.array([rescale_of(group.items[i][1]) for i in stack.order]).reshape(-1, 2)
    first_ds = group.items[stack.order[0]][1]  # the first slice along the normal
    md = base_metadata(first_ds, "dicom-series")
    md["files"] = len(geoms)
    md["container"] = container
    if container == "files":  # exactly which files (derived objects such as DICOM-SEG need them)
        used = dict.fromkeys(stack.order)  # --allow-gaps largest leaves files out
        md["source_files"] = [str(Path(group.items[i][0].label).resolve()) for i in used]
    if _native_series(group):
        return _read_native(group, stack, scales, first_ds, md, source)
    stored = _decode_each(group, stack.order, limits, where)
    values = to_values(stored, first_ds, scales[:, 0], scales[:, 1], md)
    del stored  # keep at most two volume-sized arrays alive (peak memory)
    return volume_image(values, stack, first_ds, md, source)


def _native_series(group: SeriesGroup) -> bool:
    """Whether every slice can be read raw (native grayscale, one dtype, no LUT sequences)."""
    refs = group.pixels
    first = group.items[0][1]
    return (
        all(ref is not None for ref in refs)
        and len({ref.dtype for ref in refs if ref is not None}) == 1
        and "ModalityLUTSequence" not in first
        and "VOILUTSequence" not in first
    )


def _read_native(
    group: SeriesGroup,
    stack: Stack,
    scales: np.ndarray,
    first_ds: Any,
    md: dict[str, Any],
    source: str,
) -> MedicalImage:
    """Read native slices straight into the RAS+ volume (see :mod:`.dicom_volume`)."""
    rows, cols = int(first_ds.Rows), int(first_ds.Columns)
    n = len(stack.order)
    layout = plan_layout(lps_to_ras(stack.affine_lps), (cols, rows, n))
    # A filled stack repeats slices: a repeat gets its own PixelRef, so releasing an
    # archive member's bytes after one copy does not starve the next (and a slice
    # read once still frees its bytes as soon as it is copied).
    refs: list[PixelRef] = []
    seen: set[int] = set()
    for i in stack.order:
        ref = group.pixels[i]
        assert ref is not None  # _native_series checked every slice
        refs.append(replace(ref) if i in seen else ref)
        seen.add(i)
    sources = [group.items[i][0] for i in stack.order]
    paths = [None if src.in_memory else str(src.load()) for src in sources]
    labels = [src.label for src in sources]
    slices = NativeSlices(
        refs, paths, labels, (rows, cols), scales[:, 0].copy(), scales[:, 1].copy()
    )
    values = read_native_volume(slices, layout)
    array = to_values(values, first_ds, scales[:, 0], scales[:, 1], md, rescaled=True)
    return finish_volume(array, layout.affine, layout.original, stack, first_ds, md, source)


def _decode_each(
    group: SeriesGroup, order: list[int], limits: ReadLimits, where: str | os.PathLike[str]
) -> np.ndarray:
    """Decode every slice with pydicom into one preallocated ``(slices, rows, cols)`` buffer."""
    stored: np.ndarray | None = None
    for k, i in enumerate(order):
        src = group.items[i][0]
        arr = decode_pixels(src.dataset(), src.label, limits)
        if stored is None:
            stored = np.empty((len(order), *arr.shape), dtype=arr.dtype)
        if arr.shape != stored.shape[1:]:
            raise InputError(
                f"{src.label} decodes to shape {arr.shape}, expected {stored.shape[1:]}", where
            )
        if not np.can_cast(arr.dtype, stored.dtype, casting="safe"):
            stored = stored.astype(np.result_type(arr.dtype, stored.dtype))
        stored[k] = arr
    assert stored is not None
    return stored


def _read_sources(
    sources: list[DicomSource],
    ctx: ReadContext,
    where: str | os.PathLike[str],
    container: str,
    strict: bool = False,
) -> MedicalImage:
    images, skipped = scan(sources, where, strict)
    if not images:
        others = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        hint = f"; found: {others}" if others else ""
        kind = "folder" if container == "folder" else "archive"
        raise InputError(
            f"no DICOM image files in this {kind} ({len(sources)} files examined{hint})", where
        )
    group = select_series(group_series(images), ctx.series, where)
    image = read_group(group, ctx.limits, where, container, ctx.gaps)
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
    sources = [file_source(p, str(p.relative_to(folder))) for p in paths]
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
    sources = [file_source(p, str(p)) for p in paths]
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
        sources = [DicomSource(m.name, m.read, m.read, in_memory=True) for m in members]
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
