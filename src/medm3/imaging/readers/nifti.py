"""NIfTI-1/NIfTI-2 reader (``.nii``, ``.nii.gz``) built on nibabel.

NIfTI carries no modality, so it is inferred. Header scaling
(``scl_slope``/``scl_inter``) is applied with the dtype rule of
:mod:`medm3.imaging.readers.values`. Shapes ``(X, Y)`` become ``(X, Y, 1)``;
trailing singleton dimensions are dropped; ``(X, Y, Z, 1, C)`` (a vector image,
as :func:`~medm3.imaging.io.save_nifti` writes multi-channel data) becomes
``(X, Y, Z, C)``; true 4D data (time series) is refused.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import check_pixels
from medm3.imaging.modality import infer_modality
from medm3.imaging.orientation import reorient_to_ras, voxel_sizes
from medm3.imaging.readers.base import Head, ReadContext, Reader
from medm3.imaging.readers.values import apply_rescale, native

_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}


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


def _head(path: Path) -> Head:
    """The first bytes of ``path``, decompressed too when it is gzip."""
    with open(path, "rb") as fh:
        raw = fh.read(600)
    gunzipped = None
    if raw.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as fh:
                gunzipped = fh.read(600)
        except (OSError, EOFError, zlib.error):
            gunzipped = None
    return Head(raw=raw, gunzipped=gunzipped)


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, ...]:
    """Return the shape to read the data as, or refuse 4D data."""
    dims = tuple(int(s) for s in shape)
    if len(dims) < 2:
        raise InputError(f"NIfTI image has {len(dims)} dimension(s); need 2 or 3", path)
    if len(dims) == 2:
        return (*dims, 1)
    extra = dims[3:]
    if all(s == 1 for s in extra):
        return dims[:3]
    if len(dims) == 5 and dims[3] == 1:
        return (*dims[:3], dims[4])
    shape_txt = "x".join(str(s) for s in dims)
    raise InputError(
        f"is a {len(dims)}D image (shape {shape_txt}); only 3D volumes are supported - "
        "extract one volume first (e.g. `fslroi` or nibabel's `image.slicer[..., 0]`)",
        path,
    )


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

    if sniff_nifti(_head(path)) is None:
        raise InputError(
            "no NIfTI header (the file is truncated, or is not NIfTI despite its name)", path
        )
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputError(f"not a valid NIfTI file ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
    shape = _spatial_shape(img.shape, path)
    check_pixels(int(np.prod(shape)), ctx.limits, path, " x ".join(str(s) for s in img.shape))
    try:
        stored = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:
        raise InputError(
            f"NIfTI data is truncated or corrupt ({type(exc).__name__}: {exc})", path
        ) from None
    if stored.dtype.names:  # RGB24 / RGBA32 records -> channels last
        stored = np.stack([stored[n] for n in stored.dtype.names[:3]], axis=-1)
        shape = (*shape, 3)
    stored = stored.reshape(shape)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    array = apply_rescale(native(stored), slope, inter)

    affine = np.asarray(img.affine, dtype=np.float64)
    unit = img.header.get_xyzt_units()[0]
    if unit in _UNIT_TO_MM and unit != "mm":
        affine[:3, :] *= _UNIT_TO_MM[unit]
    array, affine, original = reorient_to_ras(array, affine)
    sform, qform = int(img.header["sform_code"]), int(img.header["qform_code"])
    descrip = img.header["descrip"].tobytes().split(b"\0")[0].decode("latin-1").strip()
    metadata = {
        "format": "nifti",
        "original_orientation": original,
        "affine_source": "sform" if sform > 0 else ("qform" if qform > 0 else "none"),
    }
    if descrip:
        metadata["description"] = descrip
    return MedicalImage(
        array=array,
        spacing=voxel_sizes(affine),
        affine=affine,
        modality=infer_modality(array, is_volume=True),
        modality_source="inferred",
        source=str(path),
        metadata=metadata,
    )


READER = Reader(
    name="nifti",
    label="NIfTI",
    suffixes=(".nii", ".nii.gz"),
    sniff=sniff_nifti,
    read=read_nifti,
)
