"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) reader via SimpleITK.

ITK works in LPS; the affine is converted to RAS and the volume reoriented to
RAS+. The header is read first so the pixel limit is checked before any data
is decoded. 2D files become 2D images; modality is inferred.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.limits import check_pixels
from medm3.imaging.modality import infer_modality
from medm3.imaging.orientation import affine_2d, lps_to_ras, reorient_to_ras
from medm3.imaging.readers.base import Head, ReadContext, Reader, file_volume
from medm3.imaging.readers.values import native


def sniff_itk(head: Head) -> str | None:
    """Describe ``head`` if it starts an NRRD or MetaImage header.

    Args:
        head: The file's first bytes.

    Returns:
        ``"an NRRD image"``, ``"a MetaImage"`` or None.
    """
    if head.raw.startswith(b"NRRD000"):
        return "an NRRD image"
    text = head.raw[:1024]
    if text.startswith((b"ObjectType", b"NDims")) and b"NDims" in text:
        return "a MetaImage"
    return None


def read_itk(path: Path, ctx: ReadContext) -> MedicalImage:
    """Read an NRRD or MetaImage file.

    Args:
        path: The file (for ``.nhdr``/``.mhd`` the data file must sit beside it).
        ctx: Read options (limits).

    Returns:
        A RAS+ volume, or a 2D image for 2D files.

    Raises:
        InputError: If SimpleITK cannot read it, it is 4D, or it is too large.
    """
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # keep ITK's C++ warnings off stderr
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"not a readable NRRD/MetaImage file ({_short(exc)})", path) from None
    size = tuple(int(s) for s in reader.GetSize())
    comps = int(reader.GetNumberOfComponents())
    if len(size) > 3 and any(s != 1 for s in size[3:]):
        dims = "x".join(str(s) for s in size)
        raise InputError(
            f"is a {len(size)}D image (size {dims}); only 2D and 3D images are supported", path
        )
    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    check_pixels(
        int(np.prod(size)) * comps,
        ctx.limits,
        path,
        " x ".join(map(str, size)),
        bytes_per_sample=int(bits.group(1)) // 8 if bits else 8,
    )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"image data is truncated or corrupt ({_short(exc)})", path) from None
    zyx = native(sitk.GetArrayFromImage(image))
    dim = image.GetDimension()
    spacing = tuple(float(s) for s in image.GetSpacing())
    fmt = "nrrd" if path.name.lower().endswith((".nrrd", ".nhdr")) else "metaimage"
    if dim == 2:
        return MedicalImage(
            array=zyx,
            spacing=(spacing[1], spacing[0]),
            affine=affine_2d(spacing[1], spacing[0]),
            modality=infer_modality(zyx, is_volume=False),
            modality_source="inferred",
            source=str(path),
            metadata={"format": fmt},
        )
    if dim > 3:
        zyx = zyx.reshape(zyx.shape[dim - 3 :])  # drop leading singleton axes
    spatial = zyx.ndim if comps == 1 else zyx.ndim - 1
    order = tuple(reversed(range(spatial))) + tuple(range(spatial, zyx.ndim))
    array = np.ascontiguousarray(zyx.transpose(order))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(spacing[:3])
    lps[:3, 3] = np.asarray(image.GetOrigin()[:3], dtype=np.float64)
    array, affine, original = reorient_to_ras(array, lps_to_ras(lps), path)
    return file_volume(array, affine, path, {"format": fmt, "original_orientation": original})


def _short(exc: Exception) -> str:
    """The last meaningful line of a SimpleITK exception."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


READER = Reader(
    name="nrrd",
    label="NRRD/MetaImage",
    suffixes=(".nrrd", ".nhdr", ".mha", ".mhd"),
    sniff=sniff_itk,
    read=read_itk,
    probe=True,
)
