"""Generators of hostile inputs for the CLI corpus (nothing binary is committed).

Every generator takes a folder and writes one input into it, returning its path.
They are deterministic and small on disk; the "bombs" are small files that
*declare* or *decompress to* far more than they hold (a NIfTI header declaring
2 GB, a gzip stream of 256 MiB of zeros, a zip member that inflates 400x).

:data:`GENERATORS` maps a name to its generator; :func:`make` builds one input
once per folder (cached by name), so many cases can share a bomb.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Raw size of the gzip / zip bombs (decompressed bytes).
BOMB_BYTES = 256 << 20


def _write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``; the path (every byte-built input ends here)."""
    path.write_bytes(data)
    return path


def _link(path: Path, target: str | Path) -> Path:
    """Make ``path`` a symbolic link to ``target``; the path."""
    path.symlink_to(target)
    return path


# ---------------------------------------------------------------- NIfTI
def _nifti_header(
    shape: tuple[int, ...],
    datatype: int = 4,
    bitpix: int = 16,
    pixdim: tuple[float, ...] = (1.0, 1.0, 1.0),
    sform: np.ndarray | None = None,
    intent: int = 0,
) -> bytes:
    """A NIfTI-1 single-file header (348 bytes + 4 extension bytes), little endian."""
    hdr = bytearray(352)
    struct.pack_into("<i", hdr, 0, 348)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    struct.pack_into("<8h", hdr, 40, *dims)
    struct.pack_into("<h", hdr, 68, intent)
    struct.pack_into("<h", hdr, 70, datatype)
    struct.pack_into("<h", hdr, 72, bitpix)
    pix = [1.0, *pixdim] + [1.0] * (7 - len(pixdim))
    struct.pack_into("<8f", hdr, 76, *pix)
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    if sform is not None:
        struct.pack_into("<h", hdr, 254, 1)  # sform_code
        struct.pack_into("<4f", hdr, 280, *sform[0])
        struct.pack_into("<4f", hdr, 296, *sform[1])
        struct.pack_into("<4f", hdr, 312, *sform[2])
    hdr[344:348] = b"n+1\0"
    return bytes(hdr)


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def nifti_ok(folder: Path) -> Path:
    """A small, valid CT-like volume."""
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(16, 16, 8)).astype(np.int16)
    return _write_nifti(folder / "ok.nii.gz", data, np.diag([1.0, 1.0, 2.0, 1.0]))


def nifti_singular_affine(folder: Path) -> Path:
    """A volume whose sform (and qform) is all zeros: no orientation at all."""
    path = folder / "singular.nii"
    data = np.zeros((8, 8, 4), np.int16).tobytes()
    path.write_bytes(
        _nifti_header((8, 8, 4), pixdim=(0.0, 0.0, 0.0), sform=np.zeros((3, 4))) + data
    )
    return path


def nifti_collinear_affine(folder: Path) -> Path:
    """A volume whose affine maps two voxel axes onto one direction."""
    sform = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    path = folder / "collinear.nii"
    data = np.zeros((8, 8, 4), np.int16).tobytes()
    path.write_bytes(_nifti_header((8, 8, 4), sform=sform) + data)
    return path


def nifti_nonfinite_affine(folder: Path) -> Path:
    """A volume whose sform holds NaN."""
    sform = np.array([[np.nan, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    return _write(
        folder / "nanaffine.nii", _nifti_header((8, 8, 4), sform=sform) + bytes(8 * 8 * 4 * 2)
    )


def nifti_zero_dim(folder: Path) -> Path:
    """A volume with a zero-length axis (8 x 0 x 4)."""
    return _write(folder / "zerodim.nii", _nifti_header((8, 0, 4)))


def nifti_complex(folder: Path) -> Path:
    """A complex64 volume (MR raw data)."""
    return _write_nifti(folder / "complex.nii", np.ones((8, 8, 4), np.complex64))


def nifti_5d(folder: Path) -> Path:
    """A 5-D volume (8 x 8 x 4 x 2 x 3) that is not a vector image."""
    return _write_nifti(folder / "five_d.nii.gz", np.zeros((8, 8, 4, 2, 3), np.float32))


def nifti_5d_unit_time(folder: Path) -> Path:
    """A 5-D volume (8 x 8 x 4 x 1 x 5) without the vector intent."""
    return _write_nifti(folder / "five_d_t1.nii.gz", np.zeros((8, 8, 4, 1, 5), np.float32))


def nifti_4d(folder: Path) -> Path:
    """A 4-D time series."""
    return _write_nifti(folder / "four_d.nii.gz", np.zeros((8, 8, 4, 3), np.int16))


def nifti_all_nan(folder: Path) -> Path:
    """A float volume holding only NaN."""
    return _write_nifti(folder / "nan.nii.gz", np.full((8, 8, 4), np.nan, np.float32))


def nifti_some_nan(folder: Path) -> Path:
    """A float volume with NaN and inf among finite values."""
    data = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    data[0] = np.nan
    data[1, 0, 0] = np.inf
    return _write_nifti(folder / "somenan.nii.gz", data)


def nifti_declares_huge(folder: Path) -> Path:
    """A 4 KB ``.nii`` whose header declares 1024 x 1024 x 1000 int16 (2 GB)."""
    return _write(folder / "huge_decl.nii", _nifti_header((1024, 1024, 1000)) + bytes(4096))


def nifti_declares_huge_gz(folder: Path) -> Path:
    """A tiny ``.nii.gz`` whose header declares 1024 x 1024 x 1000 int16 (2 GB)."""
    return _write(
        folder / "huge_decl.nii.gz", gzip.compress(_nifti_header((1024, 1024, 1000)) + bytes(4096))
    )


def nifti_declares_float64_huge(folder: Path) -> Path:
    """Declares 700 x 700 x 700 float64 (1.9 GB): under the sample limit, over the byte one."""
    return _write(
        folder / "f64_decl.nii",
        _nifti_header((700, 700, 700), datatype=64, bitpix=64) + bytes(4096),
    )


def nifti_gzip_bomb(folder: Path) -> Path:
    """A ``.nii.gz`` that inflates to 256 MiB (a valid header, then zeros): ratio ~1000:1."""
    path = folder / "bomb.nii.gz"
    n = BOMB_BYTES // 2
    side = round(n ** (1 / 3))
    shape = (side, side, n // (side * side))
    header = _nifti_header(shape)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(8 << 20)
    with open(path, "wb") as fh:
        fh.write(comp.compress(header))
        left = shape[0] * shape[1] * shape[2] * 2
        while left > 0:
            fh.write(comp.compress(chunk[: min(left, len(chunk))]))
            left -= len(chunk)
        fh.write(comp.flush())
    return path


def nifti_truncated(folder: Path) -> Path:
    """A valid header whose data stops after 100 bytes of 2 KB."""
    return _write(folder / "truncated.nii", _nifti_header((16, 16, 4)) + bytes(100))


def nifti_truncated_gz(folder: Path) -> Path:
    """A ``.nii.gz`` cut in the middle of its gzip stream."""
    raw = (folder / "ok.nii.gz").read_bytes() if (folder / "ok.nii.gz").exists() else None
    if raw is None:
        raw = nifti_ok(folder).read_bytes()
    return _write(folder / "truncated.nii.gz", raw[: len(raw) // 2])


def nifti_header_only(folder: Path) -> Path:
    """Just the 348-byte header."""
    return _write(folder / "header_only.nii", _nifti_header((16, 16, 4))[:348])


def nifti_garbage(folder: Path) -> Path:
    """Random bytes named ``.nii``."""
    return _write(folder / "garbage.nii", np.random.default_rng(1).bytes(2048))


def nifti_negative_dim(folder: Path) -> Path:
    """A header declaring a negative axis length."""
    return _write(folder / "negdim.nii", _nifti_header((16, -16, 4)) + bytes(2048))


def nifti_bad_datatype(folder: Path) -> Path:
    """A header with an unknown datatype code."""
    return _write(
        folder / "baddtype.nii", _nifti_header((8, 8, 4), datatype=999, bitpix=16) + bytes(512)
    )


def gzip_garbage_nii(folder: Path) -> Path:
    """A gzip stream of text named ``.nii.gz``."""
    return _write(folder / "text.nii.gz", gzip.compress(b"hello, this is not an image\n" * 100))


# ---------------------------------------------------------------- DICOM
def _dicom_bytes(rows: int = 16, cols: int = 16, *, pixels: bool = True, **tags: object) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["hostile", str(rows)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["hostile-study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["hostile-series"])
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "12345"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelSpacing = [0.7, 0.7]
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixels:
        n = rows * cols * int(tags.get("NumberOfFrames", 1))  # type: ignore[call-overload]
        ds.PixelData = (
            (np.arange(min(n, 4096), dtype=np.int16) % 500)
            .tobytes()[: n * 2]
            .ljust(min(n, 4096) * 2, b"\0")
        )
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_ok(folder: Path) -> Path:
    """A valid 16 x 16 CT slice."""
    return _write(folder / "ok.dcm", _dicom_bytes())


def dicom_truncated(folder: Path) -> Path:
    """A CT slice cut in the middle of its pixel data."""
    return _write(folder / "truncated.dcm", _dicom_bytes(64, 64)[:-3000])


def dicom_truncated_header(folder: Path) -> Path:
    """A CT slice cut inside its header (after the preamble and some elements)."""
    return _write(folder / "truncated_header.dcm", _dicom_bytes()[:300])


def dicom_preamble_only(folder: Path) -> Path:
    """128 zero bytes and ``DICM``, nothing else."""
    return _write(folder / "preamble.dcm", bytes(128) + b"DICM")


def dicom_no_pixels(folder: Path) -> Path:
    """An image header (Rows/Columns) without pixel data."""
    return _write(folder / "nopixels.dcm", _dicom_bytes(pixels=False))


def _dicom_edited(rows: int = 16, cols: int = 16, **changes: object) -> bytes:
    """A valid slice (``rows`` x ``cols`` of pixel data) whose header is then changed to lie."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(_dicom_bytes(rows, cols)))
    for key, value in changes.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_declares_huge(folder: Path) -> Path:
    """65535 x 65535 x 1000 frames declared; 512 bytes of pixel data."""
    data = _dicom_edited(Rows=65535, Columns=65535, NumberOfFrames=1000)
    return _write(folder / "huge_decl.dcm", data)


def dicom_declares_huge_single(folder: Path) -> Path:
    """One frame of 65535 x 65535 declared (8.6 GB decoded); 512 bytes of pixel data."""
    return _write(folder / "huge_single.dcm", _dicom_edited(Rows=65535, Columns=65535))


def dicom_huge_element(folder: Path) -> Path:
    """A valid slice followed by an element declaring a 4 GB value (10 bytes present)."""
    data = _dicom_bytes() + struct.pack("<HH2sHI", 0x0009, 0x0010, b"OB", 0, 0xFFFFFFF0)
    return _write(folder / "huge_element.dcm", data + b"x" * 10)


def dicom_zero_rows(folder: Path) -> Path:
    """Rows = 0."""
    return _write(folder / "zerorows.dcm", _dicom_edited(Rows=0))


def _zip_one_member(name: bytes, data: bytes, crc: int, size: int) -> bytes:
    """A zip archive of one deflated member, written by hand so that it may lie.

    Args:
        name: The member's name.
        data: Its raw deflate stream.
        crc: The CRC-32 the headers give.
        size: The uncompressed size the headers declare (true or not).
    """
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0
    )
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        *(0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size, len(name)),
        *(0, 0, 0, 0, 0, 0),  # extra, comment, disk, attributes, local header offset 0
    )
    cd = central + name
    cd_offset = len(local) + len(name) + len(data)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), cd_offset, 0)
    return local + name + data + cd + end


def dicom_zip_bomb(folder: Path) -> Path:
    """A zip whose one member is a DICOM slice followed by 256 MiB of zero bytes."""
    head = _dicom_bytes()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(head)
    parts = [comp.compress(head)]
    chunk = bytes(8 << 20)
    for _ in range(BOMB_BYTES // len(chunk)):
        parts.append(comp.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    parts.append(comp.flush())
    archive = _zip_one_member(b"series/slice.dcm", b"".join(parts), crc, len(head) + BOMB_BYTES)
    return _write(folder / "bomb.zip", archive)


def dicom_zip_lying_size(folder: Path) -> Path:
    """A zip whose member declares 1 KB but inflates to 64 MiB (header lies)."""
    payload = _dicom_bytes() + bytes(64 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = comp.compress(payload) + comp.flush()
    archive = _zip_one_member(b"slice.dcm", data, zlib.crc32(payload), 1024)
    return _write(folder / "liar.zip", archive)


def zip_many_members(folder: Path) -> Path:
    """A zip with 1,001 empty members (over the member limit the cases set: 1,000)."""
    path = folder / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(1_001):
            zf.writestr(f"m{i}.dcm", b"")
    return path


def zip_traversal(folder: Path) -> Path:
    """A zip with a ``../`` member name."""
    path = folder / "traversal.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../../evil.dcm", _dicom_bytes())
    return path


def zip_absolute(folder: Path) -> Path:
    """A zip with an absolute member name."""
    path = folder / "absolute.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("/tmp/evil.dcm", _dicom_bytes())
    return path


def zip_truncated(folder: Path) -> Path:
    """A valid zip cut in half (no central directory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.dcm", _dicom_bytes(64, 64))
    return _write(folder / "truncated.zip", buf.getvalue()[: len(buf.getvalue()) // 2])


def zip_empty(folder: Path) -> Path:
    """A zip with no members."""
    path = folder / "empty.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    return path


def zip_not_dicom(folder: Path) -> Path:
    """A zip of text files."""
    path = folder / "text.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return path


def zip_truncated_dicom(folder: Path) -> Path:
    """A zip holding a truncated DICOM slice."""
    path = folder / "trunc_member.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.dcm", _dicom_bytes(64, 64)[:-3000])
    return path


def dicom_folder_truncated(folder: Path) -> Path:
    """A folder holding one good and one truncated slice."""
    sub = folder / "dicom_trunc_folder"
    sub.mkdir()
    (sub / "a.dcm").write_bytes(_dicom_bytes())
    (sub / "b.dcm").write_bytes(_dicom_bytes(64, 64)[:-3000])
    return sub


# ---------------------------------------------------------------- rasters and others
def _png_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * min(height, 4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_ok(folder: Path) -> Path:
    """A small gray PNG."""
    from PIL import Image

    path = folder / "ok.png"
    Image.fromarray((np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)).save(path)
    return path


def png_bomb(folder: Path) -> Path:
    """A PNG header declaring 100,000 x 100,000 pixels."""
    return _write(folder / "bomb.png", _png_bytes(100_000, 100_000))


def png_truncated(folder: Path) -> Path:
    """A PNG cut in its pixel data."""
    from PIL import Image

    buf = io.BytesIO()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(buf, format="PNG")
    return _write(folder / "truncated.png", buf.getvalue()[: len(buf.getvalue()) // 2])


def jpeg_corrupt(folder: Path) -> Path:
    """A JPEG header followed by garbage."""
    from PIL import Image

    buf = io.BytesIO()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="JPEG")
    raw = bytearray(buf.getvalue())
    return _write(folder / "corrupt.jpg", bytes(raw[:200]) + rng.bytes(300))


def tiff_bomb(folder: Path) -> Path:
    """A TIFF declaring 200,000 x 200,000 pixels."""
    path = folder / "bomb.tif"
    entries = [
        (256, 4, 1, 200_000),
        (257, 4, 1, 200_000),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 4, 1, 200_000),
        (279, 4, 1, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + 16) + bytes(16) + ifd)
    return path


def _nrrd_shorts(side: int, payload: int) -> bytes:
    """A raw NRRD header declaring ``side``^3 shorts, then ``payload`` zero bytes."""
    header = f"NRRD0004\ntype: short\ndimension: 3\nsizes: {side} {side} {side}\n"
    return (header + "encoding: raw\nendian: little\n\n").encode() + bytes(payload)


def nrrd_declares_huge(folder: Path) -> Path:
    """An NRRD header declaring 4096^3 shorts, 16 bytes of data."""
    return _write(folder / "huge.nrrd", _nrrd_shorts(4096, 16))


def mha_declares_huge(folder: Path) -> Path:
    """A MetaImage header declaring 4096^3 doubles."""
    return _write(
        folder / "huge.mha",
        b"ObjectType = Image\nNDims = 3\nDimSize = 4096 4096 4096\n"
        b"ElementType = MET_DOUBLE\nElementDataFile = LOCAL\n" + bytes(16),
    )


def nrrd_truncated(folder: Path) -> Path:
    """An NRRD declaring 64^3 shorts holding 100 bytes."""
    return _write(folder / "truncated.nrrd", _nrrd_shorts(64, 100))


def empty_file(folder: Path) -> Path:
    """A 0-byte ``.nii.gz``."""
    return _write(folder / "empty.nii.gz", b"")


def text_as_dcm(folder: Path) -> Path:
    """A text file named ``.dcm``."""
    path = folder / "text.dcm"
    path.write_text("not a dicom file\n" * 20)
    return path


def png_named_nii(folder: Path) -> Path:
    """A PNG renamed ``.nii``."""
    return _write(folder / "png.nii", png_ok(folder).read_bytes())


def symlink_passwd(folder: Path) -> Path:
    """A link named ``.png`` pointing at ``/etc/passwd``."""
    return _link(folder / "passwd.png", "/etc/passwd")


def symlink_dangling(folder: Path) -> Path:
    """A broken link."""
    return _link(folder / "dangling.nii.gz", folder / "does-not-exist.nii.gz")


def symlink_loop(folder: Path) -> Path:
    """A link pointing at itself."""
    path = folder / "loop.nii"
    return _link(path, path)


def fifo(folder: Path) -> Path:
    """A named pipe (reading it would block)."""
    path = folder / "pipe.nii"
    os.mkfifo(path)
    return path


def directory_empty(folder: Path) -> Path:
    """An empty folder."""
    path = folder / "empty_dir"
    path.mkdir()
    return path


def unreadable_file(folder: Path) -> Path:
    """A file without read permission (meaningful only when not root)."""
    path = _write(folder / "noperm.nii", nifti_ok(folder).read_bytes())
    path.chmod(0)
    return path


def missing(folder: Path) -> Path:
    """A path that does not exist."""
    return folder / "missing.nii.gz"


def readonly_dir(folder: Path) -> Path:
    """A folder whose permission bits forbid writing (meaningful only when not root)."""
    path = folder / "readonly"
    path.mkdir()
    path.chmod(0o555)
    return path


#: Every generator by name.
GENERATORS: dict[str, Callable[[Path], Path]] = {
    name: fn
    for name, fn in dict(globals()).items()
    if callable(fn)
    and not name.startswith("_")
    and getattr(fn, "__module__", None) == __name__
    and name not in ("make",)
}


def make(name: str, folder: Path) -> Path:
    """Build input ``name`` in ``folder`` (once; later calls return the same path).

    Args:
        name: A key of :data:`GENERATORS`.
        folder: Where to write it (shared by the cases of one session).

    Returns:
        The input's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / f".made-{name}"
    if done.exists():
        return Path(done.read_text())
    path = GENERATORS[name](folder)
    done.write_text(str(path))
    return path
