"""Generators of the hostile server inputs: every payload is built here, none is committed.

Bombs are built by streaming zeros through a compressor, so a payload that
decompresses to hundreds of MiB costs a few hundred KiB of memory to make.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

_ZEROS = bytes(1 << 20)


# ------------------------------------------------------------------ images
def png(width: int = 32, height: int = 24, value: int = 128) -> bytes:
    """A small grey PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), value).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width x height`` but holds one tiny compressed row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg(width: int = 32, height: int = 24) -> bytes:
    """A small JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 90).save(buf, format="JPEG")
    return buf.getvalue()


def nifti(
    data: np.ndarray | None = None,
    *,
    singular: bool = False,
    compress: bool = True,
) -> bytes:
    """A NIfTI-1 image (gzipped unless ``compress`` is False); ``singular``: its only
    orientation (sform) is an all-zero, non-invertible matrix."""
    import nibabel as nib

    if data is None:
        data = np.arange(16 * 16 * 8, dtype=np.int16).reshape(16, 16, 8)
    img = nib.Nifti1Image(data, np.eye(4))
    if singular:
        header = img.header
        for row in ("srow_x", "srow_y", "srow_z"):
            header[row] = 0
        header["sform_code"], header["qform_code"] = 1, 0
        header["pixdim"][1:4] = 0
    raw = img.header.binaryblock + b"\x00" * 4 + np.asarray(data).tobytes(order="F")
    return gzip.compress(raw, 1) if compress else raw


def nifti_header(shape: tuple[int, ...], dtype: Any = np.int16) -> bytes:
    """The 352 bytes of a NIfTI-1 header (with extension flag) declaring ``shape``."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    header.set_qform(np.eye(4), 1)
    return header.binaryblock + b"\x00\x00\x00\x00"


def nifti_declaring(shape: tuple[int, ...], dtype: Any = np.int16, voxels: int = 4096) -> bytes:
    """A small .nii.gz whose header declares ``shape`` but holds only ``voxels`` bytes."""
    return gzip.compress(nifti_header(shape, dtype) + bytes(voxels))


def gzip_bomb_nifti(shape: tuple[int, ...], dtype: Any = np.int16) -> bytes:
    """A .nii.gz that really holds all the voxels ``shape`` declares (zeros, gzip ~1000:1)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [comp.compress(nifti_header(shape, dtype))]
    left = size
    while left > 0:
        n = min(left, len(_ZEROS))
        out.append(comp.compress(_ZEROS[:n]))
        left -= n
    out.append(comp.flush())
    return b"".join(out)


def dicom(rows: int = 16, cols: int = 16, *, declared: tuple[int, int] | None = None) -> bytes:
    """A small CT DICOM file with fake identifying values (``declared``: Rows/Columns
    written in the header instead of the real ones)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "HOSTILE-1"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = declared or (rows, cols)
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [1.0, 1.0]
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.full((rows, cols), 1000, dtype=np.int16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# ---------------------------------------------------------------- archives
def zip_of(members: dict[str, bytes], *, deflate: bool = True) -> bytes:
    """A zip archive of ``members``."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_bomb(padding_mib: int = 256, *, lie_about_size: bool = False) -> bytes:
    """A zip whose one member is a DICOM file followed by ``padding_mib`` MiB of zeros,
    deflated (the issue's reproduction, scaled); ``lie_about_size`` writes a small
    uncompressed size in the directory instead of the real one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("series/IM0001.dcm")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            fh.write(dicom())
            for _ in range(padding_mib):
                fh.write(_ZEROS)
    data = bytearray(buf.getvalue())
    if lie_about_size:  # central directory: uncompressed size field of the one member
        at = data.rfind(b"PK\x01\x02")
        data[at + 24 : at + 28] = struct.pack("<I", 4096)
    return bytes(data)


def zip_many(count: int) -> bytes:
    """A zip of ``count`` tiny members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"m{i}.txt", b"x")
    return buf.getvalue()


def zip_symlink() -> bytes:
    """A zip whose member is a symbolic link to ``/etc/passwd``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(info, "/etc/passwd")
        zf.writestr("IM1.dcm", dicom())
    return buf.getvalue()


def zip_encrypted_flag() -> bytes:
    """A zip whose DICOM member has the 'encrypted' flag set."""
    data = bytearray(zip_of({"IM1.dcm": dicom()}, deflate=False))
    data[6] |= 1  # local header flag bits
    at = data.rfind(b"PK\x01\x02")
    data[at + 8] |= 1  # central directory flag bits
    return bytes(data)


# --------------------------------------------------------------- requests
def multipart(
    file: tuple[str, bytes] | None,
    fields: dict[str, str] | None = None,
    *,
    boundary: str = "hostile-boundary-7d3f",
    extra_files: int = 0,
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its content type."""
    parts: list[bytes] = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode("utf-8", "surrogatepass")
            + b"\r\n"
        )
    files = [file] * (1 + extra_files) if file is not None else []
    for filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(head.encode("utf-8", "surrogatepass") + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def chat_body(content: Any = "What is shown?", **extra: Any) -> bytes:
    """A chat completion request (``content`` of the one user message)."""
    body = {"model": "mock", "messages": [{"role": "user", "content": content}], **extra}
    return json.dumps(body).encode()


def data_url(data: bytes, mime: str = "image/png") -> str:
    """A base64 data URL."""
    import base64

    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_part(url: str) -> dict[str, Any]:
    """An ``image_url`` content part."""
    return {"type": "image_url", "image_url": {"url": url}}
