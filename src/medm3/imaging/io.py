"""Reading medical images into :class:`MedicalImage` and writing NIfTI.

:func:`load_image` accepts a file, a folder (DICOM series), a ``.zip`` (DICOM
series) or a list of DICOM files. For a file, the reader is chosen from the
registry in :mod:`medm3.imaging.readers` by magic bytes and by suffix:

* content recognised and the suffix agrees (or says nothing) -> that reader;
* the suffix names one format but the content is another (a PNG renamed
  ``.nii``) -> :class:`~medm3.errors.InputError` saying so;
* content not recognised -> the reader named by the suffix, or else every
  reader that can probe unknown files; when all fail the error lists each
  attempt: ``cannot read this file: tried dicom (why), image (why)``.

Every error names the file and fits on one line, so the CLI can print it as is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import ReadLimits, resolve_limits
from medm3.imaging.modality import normalize_modality
from medm3.imaging.readers import READERS, ReadContext, Reader
from medm3.imaging.readers.base import read_head
from medm3.imaging.readers.dicom_gaps import resolve_gap_policy
from medm3.imaging.readers.dicom_series import read_dicom_files, read_dicom_folder
from medm3.imaging.sources import reference_source
from medm3.utils.atomic import atomic_path

PathLike = str | os.PathLike[str]

log = logging.getLogger("medm3.imaging")

#: What the "unsupported format" message offers.
SUPPORTED_TEXT = (
    "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), DICOM (a file, "
    "a folder or a .zip of a series), PNG/JPEG/BMP/TIFF"
)


def load_image(
    path_or_paths: PathLike | Sequence[PathLike],
    modality: str | None = None,
    *,
    series: int | str | None = None,
    limits: ReadLimits | None = None,
    allow_gaps: str | None = None,
) -> MedicalImage:
    """Read a medical image from any supported format.

    Volumes come back reoriented to RAS+ (``metadata['original_orientation']``
    keeps the original axis codes), CT in Hounsfield units, MONOCHROME1 X-rays
    inverted so higher is brighter. See :mod:`medm3.imaging.image` for the
    conventions.

    Args:
        path_or_paths: A file (NIfTI, NRRD, MetaImage, DICOM, PNG/JPEG/BMP/TIFF),
            a folder or ``.zip`` holding a DICOM series, a list of DICOM
            files forming one series, or a remote reference such as
            ``dicomweb+https://HOST/ROOT/studies/UID[/series/UID]``
            (read by the source registered for its prefix, here
            :mod:`medm3.dicomweb`; see :mod:`medm3.imaging.sources`).
        modality: Override the modality (``"CT"``, ``"MR"``, ``"XR"``, ...;
            aliases such as ``"MRI"`` or ``"CXR"`` are accepted). The result
            then has ``modality_source="caller"``.
        series: For folders/archives with several DICOM series: the index in
            the listing of the error message, a SeriesInstanceUID, or a unique
            SeriesDescription. A single file holds one series: anything but
            ``0`` is refused.
        limits: Resource limits (default: :meth:`ReadLimits.from_env`).
        allow_gaps: A DICOM stack with missing slices is refused (``"refuse"``,
            the default), cut to its largest evenly spaced run (``"largest"``)
            or filled on the regular grid with marked copies of the nearest
            slice (``"fill"``); None: ``$MEDM3_ALLOW_GAPS``, else ``"refuse"``.
            See :mod:`medm3.imaging.readers.dicom_gaps`.

    Returns:
        The image. After a gap policy acted, ``metadata['gaps']`` says what it
        did (and ``metadata['filled_slices']`` lists filled slices); the same
        note is logged as a warning on the ``medm3.imaging`` logger.

    Raises:
        InputError: For any input that cannot be read; the message names the
            file and says what is wrong.
    """
    wanted = normalize_modality(modality) if modality is not None else None
    ctx = ReadContext(
        limits=resolve_limits(limits), series=series, gaps=resolve_gap_policy(allow_gaps)
    )
    source = reference_source(path_or_paths)  # e.g. a study on a PACS (medm3.dicomweb)
    if source is not None:
        image = source.load(os.fspath(path_or_paths), ctx)  # type: ignore[arg-type]
    elif isinstance(path_or_paths, (str, os.PathLike)):
        image = _read_path(Path(path_or_paths), ctx)
    elif isinstance(path_or_paths, Sequence):
        paths = [Path(p) for p in path_or_paths]
        if not paths:
            raise InputError("no input files given")
        image = _read_path(paths[0], ctx) if len(paths) == 1 else read_dicom_files(paths, ctx)
    else:
        raise TypeError(f"expected a path or a list of paths, got {type(path_or_paths).__name__}")
    _check_loaded(image)
    if image.metadata.get("gaps"):
        log.warning("warning: %s: %s", image.source, image.metadata["gaps"]["note"])
    if wanted is not None:
        image = replace(image, modality=wanted, modality_source="caller")
    return image


def _check_loaded(image: MedicalImage) -> None:
    """Last checks on any decoded image: some data, a real-valued numeric type."""
    array = image.array
    if array.size == 0 or any(int(s) == 0 for s in array.shape):
        shape = " x ".join(str(s) for s in array.shape)
        raise InputError(f"image has a zero-length dimension (shape {shape})", image.source)
    if array.dtype.kind not in "biuf":
        raise InputError(
            f"image data type {array.dtype} is not supported (need real-valued numbers)",
            image.source,
        )


def _read_path(path: Path, ctx: ReadContext) -> MedicalImage:
    path = path.expanduser()
    if path.is_dir():
        return read_dicom_folder(path, ctx)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if not path.is_file():
        raise InputError("not a regular file", path)
    return _read_file(path, ctx)


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


def _reader_for_suffix(name: str) -> tuple[Reader, str] | None:
    lower = name.lower()
    matches = [(r, s) for r in READERS for s in r.suffixes if lower.endswith(s)]
    if not matches:
        return None
    return max(matches, key=lambda m: len(m[1]))


def _read_file(path: Path, ctx: ReadContext) -> MedicalImage:
    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", path)
    if ctx.series is not None and str(ctx.series).strip() != "0" and not _is_zip(path):
        raise InputError(
            f"series {ctx.series!r} was asked for, but a single file holds one series "
            "(series selection is for a DICOM folder or .zip)",
            path,
        )
    head = read_head(path)
    by_magic = next(((r, what) for r in READERS if (what := r.sniff(head))), None)
    by_suffix = _reader_for_suffix(path.name)
    if by_magic and by_suffix and by_magic[0] is not by_suffix[0]:
        raise InputError(
            f"the name says {by_suffix[0].label} ('{by_suffix[1]}') but the content is "
            f"{by_magic[1]}; rename the file or check that it is the right one",
            path,
        )
    if by_magic:
        return by_magic[0].read(path, ctx)
    candidates = [by_suffix[0]] if by_suffix else [r for r in READERS if r.probe]
    errors = []
    for reader in candidates:
        try:
            return reader.read(path, ctx)
        except InputError as exc:
            errors.append(f"{reader.name} ({exc.message})")
    tried = ", ".join(errors)
    if by_suffix:
        raise InputError(f"cannot read this file: tried {tried}", path)
    what = (
        "gzip-compressed data of unknown type"
        if head.gunzipped is not None
        else (
            f"unrecognised format (suffix '{path.suffix}')"
            if path.suffix
            else "unrecognised format"
        )
    )
    raise InputError(f"{what}; tried {tried}. Supported: {SUPPORTED_TEXT}", path)


def save_nifti(image: MedicalImage, path: PathLike) -> Path:
    """Write a volume (or a label map on its grid) as NIfTI, atomically.

    The affine (RAS+) is stored as both sform and qform (code 1, scanner),
    units mm. ``bool`` data is written as ``uint8``, 64-bit integers as
    ``int32`` when they fit, ``float16`` as ``float32``. Multi-channel volumes
    ``(X, Y, Z, C)`` are written as NIfTI vectors ``(X, Y, Z, 1, C)``, which
    :func:`load_image` reads back as ``(X, Y, Z, C)``.

    Args:
        image: A 3D image (``image.is_volume``).
        path: Destination ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).

    Returns:
        The written path.

    Raises:
        InputError: If ``path`` has the wrong suffix or ``image`` is 2D.
    """
    import nibabel as nib

    out = Path(path)
    if not out.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError("NIfTI output must end in .nii or .nii.gz", out)
    if not image.is_volume:
        raise InputError("save_nifti writes 3D volumes; this image is 2D", out)
    data = np.asarray(image.array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype.kind in "iu" and data.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        fits = data.size == 0 or (data.min() >= info.min and data.max() <= info.max)
        data = data.astype(np.int32 if fits else np.float64)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
    if data.ndim == 4:
        data = data[:, :, :, np.newaxis, :]
    affine = np.asarray(image.affine, dtype=np.float64)
    nii = nib.Nifti1Image(data, affine)
    nii.header.set_xyzt_units("mm")
    nii.set_sform(affine, code=1)
    nii.set_qform(affine, code=1)
    if data.ndim == 5:
        nii.header.set_intent("vector")
    with atomic_path(out) as tmp:
        nib.save(nii, str(tmp))
    return out
