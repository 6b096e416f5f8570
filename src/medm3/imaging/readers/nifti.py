"""NIfTI-1/NIfTI-2 reader (``.nii``, ``.nii.gz``) built on nibabel.

NIfTI carries no modality, so it is inferred. Header scaling
(``scl_slope``/``scl_inter``) is applied with the dtype rule of
:mod:`medm3.imaging.readers.values`. Shapes ``(X, Y)`` become ``(X, Y, 1)``;
trailing singleton dimensions are dropped; ``(X, Y, Z, 1, C)`` (a vector image,
as :func:`~medm3.imaging.io.save_nifti` writes multi-channel data) becomes
``(X, Y, Z, C)``; true 4D/5D data (time series) is refused, as are complex
data and zero-length dimensions.

Resource limits (:mod:`medm3.imaging.limits`) are applied from the header
before any data is read: the declared samples and decoded bytes, the data the
file really holds (a 4 KB file declaring 2 GB is refused as truncated without
allocating), and for ``.nii.gz`` a capped, streamed decompression with a ratio
check (:func:`~medm3.imaging.limits.read_gzip_capped`).
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import (
    ReadLimits,
    check_data_size,
    check_pixels,
    read_gzip_capped,
)
from medm3.imaging.orientation import check_affine, reorient_to_ras
from medm3.imaging.readers.base import Head, ReadContext, Reader, file_volume, read_head
from medm3.imaging.readers.values import apply_rescale, native

_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}
#: NIfTI intent code of vector-valued voxels (what save_nifti writes for channels).
_INTENT_VECTOR = 1007


def _nifti_kind(data: bytes | None) -> str | None:
    if data is None or len(data) < 348:
        return None
    for fmt in ("<i", ">i"):
        size = struct.unpack(fmt, data[:4])[0]
        if size == 348 and data[344:347] in (b"n+1", b"ni1"):
            return "a NIfTI-1 image"
        if size == 540 and data[4:7] in (b"n+2", b"ni2"):
            return "a NIfTI-2 image"
    return None


def sniff_nifti(head: Head) -> str | None:
    """Describe ``head`` if it is a NIfTI header (plain or gzip-compressed).

    Args:
        head: The file's first bytes.

    Returns:
        ``"a NIfTI-1 image"`` / ``"a NIfTI-2 image"`` or None.
    """
    return _nifti_kind(head.raw) or _nifti_kind(head.gunzipped)


def _spatial_shape(shape: tuple[int, ...], path: Path, intent: int = 0) -> tuple[int, ...]:
    """Return the shape to read the data as, or refuse 4D/5D data."""
    dims = tuple(int(s) for s in shape)
    if len(dims) < 2:
        raise InputError(f"NIfTI image has {len(dims)} dimension(s); need 2 or 3", path)
    if any(s <= 0 for s in dims):
        shape_txt = "x".join(str(s) for s in dims)
        raise InputError(
            f"NIfTI header declares a zero-length or negative dimension (shape {shape_txt})",
            path,
        )
    if len(dims) == 2:
        return (*dims, 1)
    extra = dims[3:]
    if all(s == 1 for s in extra):
        return dims[:3]
    if len(dims) == 5 and dims[3] == 1 and intent == _INTENT_VECTOR:
        return (*dims[:3], dims[4])
    shape_txt = "x".join(str(s) for s in dims)
    raise InputError(
        f"is a {len(dims)}D image (shape {shape_txt}); only 3D volumes are supported - "
        "extract one volume first (e.g. `fslroi` or nibabel's `image.slicer[..., 0]`)",
        path,
    )


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Keep nibabel's header-fix log lines (``setting 0 dims to 1``) off stderr."""
    logger = logging.getLogger("nibabel")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_header(img: Any, shape: tuple[int, ...], limits: ReadLimits, path: Path) -> np.dtype:
    """Limits from the header alone: dtype, samples and decoded bytes."""
    dtype = np.dtype(img.header.get_data_dtype())
    if dtype.kind == "c":
        raise InputError(
            f"complex-valued NIfTI data ({dtype.name}) is not supported; save the magnitude "
            "(or real part) as a real-valued volume",
            path,
        )
    channels = 3 if dtype.names else 1
    if not dtype.names and dtype.kind not in "biuf":
        raise InputError(f"unsupported NIfTI data type {dtype}", path)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled = (slope not in (None, 0, 1) and np.isfinite(slope)) or (
        inter not in (None, 0) and np.isfinite(inter)
    )
    per_sample = max(dtype.itemsize // channels, 4 if scaled else 1)
    check_pixels(
        int(np.prod(shape)) * channels,
        limits,
        path,
        " x ".join(str(s) for s in img.shape),
        bytes_per_sample=per_sample,
    )
    return dtype


def _read_stored(img: Any, dtype: np.dtype, path: Path, gz: bool, limits: ReadLimits) -> Any:
    """The stored (unscaled) voxel values, after checking the file holds them."""
    offset = int(img.dataobj.offset)
    count = int(np.prod(img.shape))
    needed = offset + count * dtype.itemsize
    if gz:
        buffer = read_gzip_capped(path, needed, limits)
        flat = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
        return flat.reshape(img.shape, order="F")
    check_data_size(path.stat().st_size, needed, path, "the header (data offset + voxel data)")
    try:
        return np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:
        raise InputError(
            f"NIfTI data is truncated or corrupt ({type(exc).__name__}: {exc})", path
        ) from None


def _affine_mm(img: Any, path: Path) -> np.ndarray:
    """The voxel -> RAS-mm affine, checked (finite, non-singular) before any data is read."""
    try:
        affine = np.array(img.affine, dtype=np.float64)
    except Exception as exc:
        raise InputError(
            f"the NIfTI header's affine is unusable ({type(exc).__name__}: {exc})", path
        ) from None
    unit = img.header.get_xyzt_units()[0]
    if unit in _UNIT_TO_MM and unit != "mm":
        affine[:3, :] *= _UNIT_TO_MM[unit]
    check_affine(affine, path)
    return affine


def read_nifti(path: Path, ctx: ReadContext) -> MedicalImage:
    """Read a NIfTI file into a RAS+ :class:`MedicalImage`.

    Args:
        path: The ``.nii`` / ``.nii.gz`` file.
        ctx: Read options (limits).

    Returns:
        The volume, reoriented to RAS+, modality inferred.

    Raises:
        InputError: If the file is not valid NIfTI, is 4D, too large or truncated.
    """
    import nibabel as nib

    head = read_head(path, 600, 600)
    if sniff_nifti(head) is None:
        raise InputError(
            "no NIfTI header (the file is truncated, or is not NIfTI despite its name)", path
        )
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
            intent = int(img.header["intent_code"])
    except Exception as exc:
        raise InputError(f"not a valid NIfTI file ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
    shape = _spatial_shape(img.shape, path, intent)
    dtype = _check_header(img, shape, ctx.limits, path)
    affine = _affine_mm(img, path)
    gz = head.raw.startswith(b"\x1f\x8b")
    stored = _read_stored(img, dtype, path, gz, ctx.limits)
    if stored.dtype.names:  # RGB24 / RGBA32 records -> channels last
        stored = np.stack([stored[n] for n in stored.dtype.names[:3]], axis=-1)
        shape = (*shape, 3)
    stored = stored.reshape(shape)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    array = apply_rescale(native(stored), slope, inter)

    array, affine, original = reorient_to_ras(array, affine, path)
    sform, qform = int(img.header["sform_code"]), int(img.header["qform_code"])
    descrip = img.header["descrip"].tobytes().split(b"\0")[0].decode("latin-1").strip()
    metadata = {
        "format": "nifti",
        "original_orientation": original,
        "affine_source": "sform" if sform > 0 else ("qform" if qform > 0 else "none"),
    }
    if descrip:
        metadata["description"] = descrip
    return file_volume(array, affine, path, metadata)


READER = Reader(
    name="nifti",
    label="NIfTI",
    suffixes=(".nii", ".nii.gz"),
    sniff=sniff_nifti,
    read=read_nifti,
)
