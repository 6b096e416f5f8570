"""What an upload is, and whether it may be read: type sniffing and bomb checks.

An upload's kind comes from its first bytes (NIfTI-1/2, gzipped or not; a
single DICOM file; a zip holding DICOM files; PNG; JPEG), never from its name.
Before anything is decompressed or decoded, the sizes the file declares are
checked: zip members against :class:`~medm3.imaging.limits.ReadLimits`
(uncompressed sizes, compression ratio), a NIfTI header's voxel bytes against
the server's decoded-image cap. Bombs get HTTP 413.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from medm3.errors import MedM3Error
from medm3.serve.errors import APIError, UnsupportedMediaError, bad_request, from_medm3_error

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.limits import ReadLimits

log = logging.getLogger("medm3.serve")

#: What uploads may be (for messages).
ACCEPTED_TEXT = "NIfTI (.nii, .nii.gz), a DICOM file, a zip of DICOM files, PNG or JPEG"

_NIFTI1_MAGIC = (b"n+1\x00",)
_NIFTI2_MAGIC = (b"n+2\x00",)


def _is_nifti(head: bytes) -> bool:
    return head[344:348] in _NIFTI1_MAGIC or head[4:8] in _NIFTI2_MAGIC


def _gunzip_head(head: bytes) -> bytes:
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1024)
    except zlib.error:
        return b""


def _zip_has_dicom(path: Path, limits: ReadLimits | None = None) -> bool:
    from medm3.imaging.archive import check_members, is_unsafe_name

    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if any(is_unsafe_name(i.filename) for i in infos):
                raise bad_request("the zip archive has member names outside its folder")
            if limits is not None:  # declared sizes and ratios, before decompressing anything
                try:
                    check_members(archive.infolist(), limits, "upload")
                except MedM3Error as exc:
                    raise from_medm3_error(exc) from None
            for info in infos[:64]:
                if info.flag_bits & 0x1:
                    raise bad_request("encrypted zip archives are not accepted")
                with archive.open(info) as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        return True
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        raise bad_request(f"cannot read the zip archive: {exc}") from None
    return False


def nifti_declared_bytes(head: bytes) -> int:
    """Bytes of the voxels a NIfTI-1/2 header declares (0 when it cannot be read)."""
    import numpy as np

    try:
        import nibabel as nib

        cls = nib.Nifti2Header if head[4:8] in _NIFTI2_MAGIC else nib.Nifti1Header
        size = 540 if cls is nib.Nifti2Header else 348
        header = cls.from_fileobj(io.BytesIO(head[:size]), check=False)
        dims = header["dim"]
        ndim = int(dims[0])
        if not 0 < ndim <= 7:
            return 0
        samples = int(np.prod([max(int(d), 0) for d in dims[1 : ndim + 1]], dtype=object))
        return samples * max(int(header["bitpix"]) // 8, 1)
    except Exception:  # the reader reports a broken header with its own message
        return 0


def sniff(path: Path, limits: ReadLimits | None = None, max_image_bytes: int | None = None) -> str:
    """Detect the kind of an uploaded file from its content.

    Args:
        path: The received file.
        limits: Read limits; zip members are checked against them (declared
            sizes and compression ratios) before anything is decompressed.
        max_image_bytes: Largest voxel data a NIfTI header may declare.

    Returns:
        A key of :data:`STORED_NAMES`.

    Raises:
        APIError: HTTP 415 for anything else, 400 for an unusable zip, 413 for
            a file declaring more than the limits.
    """
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    kind = None
    if _is_nifti(head):
        kind, header = "nifti", head
    elif head.startswith(b"\x1f\x8b"):
        header = _gunzip_head(head)
        kind = "nifti_gz" if _is_nifti(header) else None
    if kind is not None:
        declared = nifti_declared_bytes(header)
        if max_image_bytes is not None and declared > max_image_bytes:
            raise APIError(
                413,
                f"the NIfTI header declares {declared:,} bytes of voxels, more than the "
                f"server's limit of {max_image_bytes:,}",
                code="image_too_large",
            )
        return kind
    if head.startswith(b"PK\x03\x04"):
        if _zip_has_dicom(path, limits):
            return "dicom_zip"
        raise UnsupportedMediaError("the zip archive holds no DICOM file (DICM marker)")
    raise UnsupportedMediaError(f"unsupported file type; accepted: {ACCEPTED_TEXT}")


def read_error(exc: BaseException) -> BaseException:
    """What to raise when reading an upload failed: an :class:`APIError` as it is, a
    :class:`MedM3Error` as its HTTP error, any other exception of a reader as
    :func:`unreadable` (bad input, not a server error); ``KeyboardInterrupt`` and the
    like unchanged."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, MedM3Error):
        return from_medm3_error(exc)
    if isinstance(exc, Exception):
        return unreadable(exc)
    return exc


def unreadable(exc: Exception) -> APIError:
    """HTTP 400 for a scan a reader failed on with an unexpected error (logged in one line)."""
    log.warning("unreadable upload: %s: %s", type(exc).__name__, str(exc).splitlines()[:1])
    return bad_request(f"the file cannot be read as an image ({type(exc).__name__})", param="file")


def server_limits(max_image_bytes: int) -> ReadLimits:
    """The environment's read limits, tightened to the server's decoded-image cap
    (samples are counted at 4 bytes: readers work in float32)."""
    from medm3.imaging.limits import ReadLimits

    base = ReadLimits.from_env()
    tighter = {
        "max_pixels": max(min(base.max_pixels, max_image_bytes // 4), 1),
        "max_member_bytes": max(min(base.max_member_bytes, max_image_bytes), 1),
        "max_total_bytes": max(min(base.max_total_bytes, max_image_bytes), 1),
    }
    if "max_bytes" in {f.name for f in dataclasses.fields(ReadLimits)}:  # decoded-bytes limit
        tighter["max_bytes"] = max(min(base.max_bytes, max_image_bytes), 1)  # type: ignore[attr-defined]
    return ReadLimits.from_env(**tighter)
