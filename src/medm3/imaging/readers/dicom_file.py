"""Single DICOM files: 2D images (X-rays, one CT/MR slice) and multi-frame volumes.

A single-frame file becomes a 2D image in display order (a lone CT slice keeps
its HU values). A multi-frame file with per-frame geometry (Enhanced CT/MR
functional groups, or RT Dose ``GridFrameOffsetVector``) becomes a RAS+
volume; other multi-frame files (cine loops) are refused with a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import ReadLimits
from medm3.imaging.modality import dicom_modality, infer_modality
from medm3.imaging.orientation import affine_2d, lps_to_ras, reorient_to_ras, voxel_sizes
from medm3.imaging.readers.base import Head, ReadContext, Reader
from medm3.imaging.readers.dicom_check import truncation_problem
from medm3.imaging.readers.dicom_gaps import gap_metadata
from medm3.imaging.readers.dicom_geometry import SliceGeometry, Stack, stack_slices
from medm3.imaging.readers.dicom_pixels import (
    decode_pixels,
    frame_count,
    read_dataset,
    rescale_of,
    shared_group,
    to_values,
)


def sniff_dicom(head: Head) -> str | None:
    """Describe ``head`` if it has the DICOM preamble (``DICM`` at byte 128).

    Args:
        head: The file's first bytes.

    Returns:
        ``"a DICOM file"`` or None.
    """
    return "a DICOM file" if head.raw[128:132] == b"DICM" else None


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def base_metadata(ds: Any, fmt: str) -> dict[str, Any]:
    """Metadata every DICOM image carries.

    Args:
        ds: The (first) dataset.
        fmt: ``"dicom"`` or ``"dicom-series"``.

    Returns:
        ``format``, ``series_description``, ``series_uid``, ``modality_tag``
        (the raw DICOM Modality value) where present.
    """
    md: dict[str, Any] = {"format": fmt}
    for key, keyword in (
        ("series_description", "SeriesDescription"),
        ("series_uid", "SeriesInstanceUID"),
        ("modality_tag", "Modality"),
        ("body_part", "BodyPartExamined"),
    ):
        text = _text(ds, keyword)
        if text is not None:
            md[key] = text
    return md


def modality_of(ds: Any, array: np.ndarray, is_volume: bool) -> tuple[str, str]:
    """Modality code and its source: the DICOM tag, else inferred.

    Args:
        ds: The (first) dataset.
        array: The final pixel values (for inference).
        is_volume: Whether ``array`` is a volume.

    Returns:
        ``(code, "dicom" | "inferred")``.
    """
    code = dicom_modality(_text(ds, "Modality"))
    if code is not None:
        return code, "dicom"
    return infer_modality(array, is_volume), "inferred"


def volume_image(
    values: np.ndarray, stack: Stack, ds: Any, metadata: dict[str, Any], source: str
) -> MedicalImage:
    """Turn sorted slices ``(n, rows, cols[, 3])`` into a RAS+ :class:`MedicalImage`.

    Args:
        values: Physical values, already in ``stack.order``.
        stack: Geometry from :func:`stack_slices`.
        ds: The first dataset (modality tag).
        metadata: Metadata so far; ``original_orientation`` and
            ``slice_spacing`` are added.
        source: What to record as the image source.

    Returns:
        The volume.
    """
    axes = (2, 1, 0) if values.ndim == 3 else (2, 1, 0, 3)
    # One copy only: the transpose is a view, reorient_to_ras makes the data contiguous.
    array, affine, original = reorient_to_ras(
        values.transpose(axes), lps_to_ras(stack.affine_lps), source
    )
    del values
    return finish_volume(array, affine, original, stack, ds, metadata, source)


def finish_volume(
    array: np.ndarray,
    affine: np.ndarray,
    original: str,
    stack: Stack,
    ds: Any,
    metadata: dict[str, Any],
    source: str,
) -> MedicalImage:
    """Wrap a RAS+ volume built from a stack: geometry, modality and gap metadata.

    Args:
        array: The RAS+ voxel values.
        affine: Their RAS affine.
        original: Axis codes of the stacked (column, row, slice) voxels.
        stack: Geometry from :func:`stack_slices` (its gap report is recorded).
        ds: The first dataset (modality tag).
        metadata: Metadata so far; ``original_orientation``, ``slice_spacing``
            and, after a gap policy, ``gaps`` / ``filled_slices`` are added.
        source: What to record as the image source.

    Returns:
        The volume.
    """
    metadata["original_orientation"] = original
    metadata["slice_spacing"] = round(float(stack.slice_spacing), 6)
    if stack.gaps is not None:
        metadata.update(gap_metadata(stack.gaps, lps_to_ras(stack.affine_lps), len(stack.order)))
    modality, modality_source = modality_of(ds, array, True)
    return MedicalImage(
        array=array,
        spacing=voxel_sizes(affine),
        affine=affine,
        modality=modality,
        modality_source=modality_source,  # type: ignore[arg-type]
        source=source,
        metadata=metadata,
    )


def _fg(item: Any, shared: Any, seq: str, keyword: str) -> Any:
    for holder in (item, shared):
        if holder is not None and holder.get(seq):
            value = holder.get(seq)[0].get(keyword)
            if value is not None:
                return value
    return None


def frame_geometries(ds: Any) -> list[SliceGeometry] | None:
    """Per-frame plane geometry of a multi-frame dataset, or None when absent.

    Args:
        ds: A multi-frame dataset.

    Returns:
        One :class:`SliceGeometry` per frame, or None.
    """
    n = frame_count(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = shared_group(ds)
    if per and len(per) == n:
        geoms = []
        for i, item in enumerate(per):
            ipp = _fg(item, shared, "PlanePositionSequence", "ImagePositionPatient")
            iop = _fg(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
            ps = _fg(item, shared, "PixelMeasuresSequence", "PixelSpacing")
            if ipp is None or iop is None or ps is None:
                return None
            geoms.append(_geometry(f"frame {i + 1}", ipp, iop, ps, rows, cols))
        return geoms
    offsets = ds.get("GridFrameOffsetVector")
    ipp = ds.get("ImagePositionPatient")
    iop = ds.get("ImageOrientationPatient")
    ps = ds.get("PixelSpacing")
    if offsets is None or ipp is None or iop is None or ps is None or len(offsets) != n:
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    origin = np.asarray(ipp, dtype=np.float64)
    return [
        _geometry(f"frame {i + 1}", origin + float(off) * normal, iop, ps, rows, cols)
        for i, off in enumerate(offsets)
    ]


def _geometry(label: str, ipp: Any, iop: Any, ps: Any, rows: int, cols: int) -> SliceGeometry:
    return SliceGeometry(
        label=label,
        position=tuple(float(v) for v in ipp),  # type: ignore[arg-type]
        orientation=tuple(float(v) for v in iop),
        pixel_spacing=(float(ps[0]), float(ps[1])),
        rows=rows,
        cols=cols,
    )


def _pixel_spacing_2d(ds: Any) -> tuple[tuple[float, float], str]:
    candidates = [
        ("PixelSpacing", ds.get("PixelSpacing")),
        ("PixelSpacing", _fg(None, shared_group(ds), "PixelMeasuresSequence", "PixelSpacing")),
        ("ImagerPixelSpacing", ds.get("ImagerPixelSpacing")),
    ]
    for name, value in candidates:
        try:
            if value is not None and float(value[0]) > 0 and float(value[1]) > 0:
                return (float(value[0]), float(value[1])), name
        except (TypeError, ValueError, IndexError):
            continue
    return (1.0, 1.0), "default"


def image_from_dataset(
    ds: Any, label: str | os.PathLike[str], source: str, limits: ReadLimits, gaps: str = "refuse"
) -> MedicalImage:
    """Build a :class:`MedicalImage` from one fully read DICOM dataset.

    Args:
        ds: The dataset (pixel data included).
        label: The file (or ``zip!member``) for messages.
        source: What to record as the image source.
        limits: Limits in force.
        gaps: Gap policy for multi-frame volumes (see :mod:`.dicom_gaps`).

    Returns:
        A 2D image, or a RAS+ volume for multi-frame data with geometry.

    Raises:
        InputError: If the pixels cannot be decoded or a multi-frame file has
            no per-frame geometry.
    """
    n = frame_count(ds)
    if n > 1:
        geoms = frame_geometries(ds)
        if geoms is None:
            raise InputError(
                f"multi-frame DICOM ({n} frames) without per-frame geometry (e.g. a cine "
                "loop); only single images and multi-frame volumes with plane positions "
                "are supported",
                label,
            )
        stack = stack_slices(geoms, label, gaps=gaps)
        frames = decode_pixels(ds, label, limits)
        per = ds.get("PerFrameFunctionalGroupsSequence")
        scales = np.asarray([rescale_of(ds, per[i] if per else None) for i in range(n)])
        md = base_metadata(ds, "dicom")
        md["frames"] = n
        scales = scales[stack.order]
        values = to_values(frames[stack.order], ds, scales[:, 0], scales[:, 1], md)
        return volume_image(values, stack, ds, md, source)
    arr = decode_pixels(ds, label, limits)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    slope, intercept = rescale_of(ds, per[0] if per else None)
    md = base_metadata(ds, "dicom")
    values = to_values(arr, ds, slope, intercept, md)
    spacing, spacing_source = _pixel_spacing_2d(ds)
    md["spacing_source"] = spacing_source
    if spacing_source == "default":
        md["spacing_assumed"] = True
    given = ds.get("PatientOrientation") or []
    given = str(given).split("\\") if isinstance(given, str) else given
    orientation = [str(v).strip().upper() for v in given]
    if len(orientation) == 2 and all(orientation):
        md["patient_orientation"] = orientation
    for key, keyword in (
        ("image_position", "ImagePositionPatient"),
        ("image_orientation", "ImageOrientationPatient"),
    ):
        if ds.get(keyword) is not None:
            md[key] = [float(v) for v in ds.get(keyword)]
    modality, modality_source = modality_of(ds, values, False)
    return MedicalImage(
        array=values,
        spacing=spacing,
        affine=affine_2d(*spacing),
        modality=modality,
        modality_source=modality_source,  # type: ignore[arg-type]
        source=source,
        metadata=md,
    )


def _has_preamble(path: Path) -> bool:
    """Whether the file has ``DICM`` at byte 128 (so it is DICOM, and a short read is damage)."""
    with open(path, "rb") as fh:
        return sniff_dicom(Head(raw=fh.read(132))) is not None


def _starts_like_dicom(path: Path) -> bool:
    """For files without preamble: does the first element belong to group 0002 or 0008?

    Parsing arbitrary bytes as DICOM can make pydicom believe in a 4 GB element;
    a raw DICOM stream starts with the file meta (0002) or identification (0008) group.
    """
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and (
        int.from_bytes(head, "little") in (0x0002, 0x0008) or int.from_bytes(head, "big") == 0x0008
    )


def read_dicom_file(path: Path, ctx: ReadContext) -> MedicalImage:
    """Read one DICOM file (with or without the 128-byte preamble).

    Args:
        path: The file.
        ctx: Read options (limits).

    Returns:
        See :func:`image_from_dataset`.

    Raises:
        InputError: If it is not DICOM, truncated, not an image, or unreadable.
    """
    preamble = _has_preamble(path)
    if not preamble and not _starts_like_dicom(path):
        raise InputError("not a DICOM file", path)
    ds = read_dataset(path, path)
    problem = truncation_problem(ds, path.stat().st_size) if preamble else None
    if problem is not None:
        raise InputError(f"DICOM file is truncated or corrupt: {problem}", path)
    if "Rows" not in ds or "Columns" not in ds:
        sop = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        if sop is None and "Modality" not in ds:
            raise InputError("not a DICOM file", path)
        name = getattr(sop, "name", None)
        raise InputError(f"DICOM file is not an image{f' ({name})' if name else ''}", path)
    return image_from_dataset(ds, path, str(path), ctx.limits, ctx.gaps)


READER = Reader(
    name="dicom",
    label="DICOM",
    suffixes=(".dcm", ".dicom", ".dic", ".ima"),
    sniff=sniff_dicom,
    read=read_dicom_file,
    probe=True,
)
