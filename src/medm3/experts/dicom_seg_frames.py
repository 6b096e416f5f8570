"""The source series of a DICOM-SEG: its headers re-read and the label map sampled on its slices.

Used by :func:`medm3.experts.dicom_seg.write_dicom_seg` (see its module
docstring for the rules): :func:`read_series_headers` re-reads the headers of
the files of the image's series from where it was loaded, and
:func:`project_labels` maps every source slice back onto the RAS+ label map
(pixel centres through ImagePositionPatient / ImageOrientationPatient /
PixelSpacing, nearest neighbour), refusing a series that no longer matches
the loaded grid.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage
    from medm3.imaging.limits import ReadLimits

#: Source files may lie this far (in voxels) from the loaded grid.
GRID_TOLERANCE_VOXELS = 0.25
#: Patient/study attributes highdicom reads from the source (type 2: may be empty).
_TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _candidates(image: MedicalImage, limits: ReadLimits) -> Iterator[tuple[str, Any]]:
    """``(label, path or bytes)`` of every file that may belong to the series."""
    from medm3.imaging.archive import open_zip
    from medm3.imaging.readers.dicom_series import NON_DICOM_SUFFIXES

    where = Path(image.source)
    listed = image.metadata.get("source_files")
    if isinstance(listed, (list, tuple)) and listed:
        for name in listed:
            yield str(name), Path(name)
        return
    if image.metadata.get("container") == "zip":
        if not where.is_file():
            raise InputError("the DICOM archive the image was read from is gone", where)
        with open_zip(where, limits) as members:
            for m in members:
                skip = Path(m.name).suffix.lower() in NON_DICOM_SUFFIXES
                if skip and m.read(132)[128:132] != b"DICM":
                    continue
                yield f"{where}!{m.name}", m.read()
        return
    if not where.is_dir():
        raise InputError("the DICOM series folder the image was read from is gone", where)
    count = 0
    for root, dirs, names in os.walk(where):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            count += 1
            if count > limits.max_files:
                raise InputError(
                    f"folder holds more than {limits.max_files:,} files (MEDM3_MAX_FILES)", where
                )
            p = Path(root) / name
            if name.startswith(".") or p.suffix.lower() in NON_DICOM_SUFFIXES:
                try:
                    with open(p, "rb") as fh:
                        if fh.read(132)[128:132] != b"DICM":
                            continue
                except OSError:
                    continue
            yield str(p), p


def read_series_headers(image: MedicalImage, limits: ReadLimits | None = None) -> list[Any]:
    """Re-read the headers of the DICOM series ``image`` was loaded from.

    Args:
        image: A volume read from a DICOM series (see :func:`supports_dicom_seg`).
        limits: Read limits (default: from the environment).

    The files are looked for in ``metadata['source_files']`` when a reader
    recorded that list, else in the ``.zip`` (container ``zip``) or the
    folder ``image.source`` (containers ``folder`` and ``files``, searched
    recursively like the reader does).

    Returns:
        The ``pydicom.Dataset`` headers (no pixel data) of the image files
        whose SeriesInstanceUID is ``image.metadata['series_uid']``, in
        discovery order.

    Raises:
        InputError: If the folder/archive is gone or holds no file of the series.
    """
    from medm3.imaging.limits import resolve_limits
    from medm3.imaging.readers.dicom_pixels import looks_like_image, read_dataset

    uid = str(image.metadata.get("series_uid") or "")
    found = []
    for label, data in _candidates(image, resolve_limits(limits)):
        try:
            ds = read_dataset(data, label, header_only=True)
        except InputError:
            continue
        if str(ds.get("SeriesInstanceUID", "") or "").strip() == uid and looks_like_image(ds):
            found.append(ds)
    if not found:
        raise InputError(f"no file of DICOM series {uid} is left here", image.source)
    return found


# ------------------------------------------------------------------ geometry
def _slice_to_voxel(ds: Any, inverse: np.ndarray, where: Path) -> np.ndarray:
    """3x3 matrix mapping ``(col, row, 1)`` of a source slice to label-map voxel indices."""
    try:
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(
            f"a source file has no usable plane geometry ({type(exc).__name__}: {exc})", where
        ) from None
    if ipp.shape != (3,) or iop.shape != (6,):
        raise InputError("a source file has malformed ImagePosition/OrientationPatient", where)
    lps = np.zeros((4, 3))
    lps[:3, 0] = iop[:3] * col_sp  # along a row: column index
    lps[:3, 1] = iop[3:] * row_sp  # down a column: row index
    lps[:3, 2] = ipp
    lps[3, 2] = 1.0
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return (inverse @ ras)[:3]


def project_labels(
    labels: np.ndarray,
    affine: np.ndarray,
    datasets: list[Any],
    present: np.ndarray,
    where: Path,
) -> tuple[np.ndarray, list[Any]]:
    """Sample the label map on every source slice; return (frames, their datasets).

    Frames hold segment numbers ``1..K`` (``present`` renumbered), in the order
    of the returned datasets.
    """
    shape = np.asarray(labels.shape)
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    lut = np.concatenate([[0], present])
    dtype = np.uint8 if present.size < 256 else np.uint16
    frames: list[np.ndarray] = []
    used: list[Any] = []
    covered: dict[tuple[int, int], str] = {}
    for ds in datasets:
        rows, cols = int(ds.Rows), int(ds.Columns)
        m = _slice_to_voxel(ds, inverse, where)
        r = np.arange(rows, dtype=np.float64)[:, None]
        c = np.arange(cols, dtype=np.float64)[None, :]
        vox = [m[a, 0] * c + m[a, 1] * r + m[a, 2] for a in range(3)]
        idx = [np.rint(v).astype(np.int64) for v in vox]
        inside = np.ones((rows, cols), dtype=bool)
        for a in range(3):
            inside &= (idx[a] >= 0) & (idx[a] < shape[a])
        if not inside.any():
            continue  # a file of the series that was not loaded (outside the volume)
        name = str(ds.get("SOPInstanceUID", "?"))
        off = max(float(np.max(np.abs(v - i))) for v, i in zip(vox, idx, strict=True))
        if not inside.all() or off > GRID_TOLERANCE_VOXELS:
            raise InputError(
                f"source file {name} does not lie on the loaded image grid (the series "
                "changed since it was read?)",
                where,
            )
        # The slice axis: the voxel axis that stays constant across the frame.
        flat = [a for a in range(3) if np.all(idx[a] == idx[a][0, 0])]
        if len(flat) != 1:
            raise InputError(f"source file {name} is not a slice of the loaded volume", where)
        key = (flat[0], int(idx[flat[0]][0, 0]))
        if key in covered:
            raise InputError(
                f"source files {covered[key]} and {name} lie at the same slice position", where
            )
        covered[key] = name
        sampled = labels[idx[0], idx[1], idx[2]]
        frames.append(np.searchsorted(lut, sampled).astype(dtype))
        used.append(ds)
    axes = {a for a, _ in covered}
    if len(axes) != 1 or len(covered) != int(shape[next(iter(axes))]):
        n = int(shape[next(iter(axes))]) if len(axes) == 1 else "?"
        raise InputError(
            f"the source series has {len(covered)} file(s) on the loaded volume but the "
            f"volume has {n} slices (the series changed since it was read?)",
            where,
        )
    _check_headers(used, where)
    return np.stack(frames), used


def _check_headers(datasets: list[Any], where: Path) -> None:
    """Refuse sources without the UIDs a SEG must reference; fill empty type 2 attributes."""
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if any(not str(ds.get(keyword, "") or "").strip() for ds in datasets):
            raise InputError(
                f"a source file has no {keyword}; a DICOM-SEG cannot reference it", where
            )
    frames_of_reference = {str(ds.get("FrameOfReferenceUID", "") or "").strip() for ds in datasets}
    if "" in frames_of_reference:
        raise InputError(
            "the source series has no FrameOfReferenceUID, which a DICOM-SEG must share with "
            "it to be placed on the images",
            where,
        )
    if len(frames_of_reference) > 1:
        raise InputError("the source series spans several FrameOfReferenceUIDs", where)
    for ds in datasets:
        for keyword in _TYPE2_KEYWORDS:
            if keyword not in ds:
                setattr(ds, keyword, "")
