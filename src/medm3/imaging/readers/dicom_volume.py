"""Fast decoding of an uncompressed DICOM series straight into its RAS+ volume.

The series reader parses every header once; for files whose pixel data is
native little-endian grayscale it also records where the pixel bytes start
(:class:`PixelRef`). This module then reads those bytes, in threads (file reads
and NumPy copies release the GIL), a few slices at a time: unused high bits are
cleared, the rescale to physical values runs on the small block (in place for
16-bit data), and the block is copied into one preallocated buffer laid out so
that the final RAS+ array is a *view* of it: the flips of the reorientation are
applied by that copy and the axis permutation is a transpose, so no
volume-sized copy or temporary is ever made.

Series with compressed or otherwise unusual pixel data take the generic
per-file pydicom path in :mod:`.dicom_series`.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from medm3.errors import InputError
from medm3.imaging.readers.dicom_tags import fast_get

#: Transfer syntaxes whose pixel data is stored as is, little endian.
NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def workers() -> int:
    """Threads used to read and convert slices (``MEDM3_IO_THREADS``, default cores, max 8)."""
    env = os.environ.get("MEDM3_IO_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class PixelRef:
    """Where a file's native pixel bytes are.

    Attributes:
        offset: Byte offset of the pixel values in the file (or in ``data``).
        nbytes: Length of the Pixel Data value.
        dtype: Stored sample type (little endian).
        bits_stored: BitsStored (unused high bits are cleared like pydicom does).
        data: The whole file's bytes when it came from an archive, else None.
    """

    offset: int
    nbytes: int
    dtype: np.dtype
    bits_stored: int
    data: bytes | None = None


def locate_pixels(fh: BinaryIO, ds: Any, data: bytes | None) -> PixelRef | None:
    """Find the native pixel bytes right after a header parsed with ``stop_before_pixels``.

    Args:
        fh: The file object pydicom parsed; positioned at the Pixel Data element.
        ds: The parsed header.
        data: The file's bytes when ``fh`` reads an in-memory copy.

    Returns:
        A :class:`PixelRef`, or None when the fast path does not apply
        (compressed, big endian, colour, float, palette or odd bit depths).
    """
    try:
        ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
        bits = int(fast_get(ds, "BitsAllocated", 0) or 0)
        stored = int(fast_get(ds, "BitsStored", bits) or bits)
        signed = int(fast_get(ds, "PixelRepresentation", 0) or 0) == 1
        rows, cols = int(fast_get(ds, "Rows")), int(fast_get(ds, "Columns"))
        photometric = str(fast_get(ds, "PhotometricInterpretation", "")).upper()
        single = int(fast_get(ds, "NumberOfFrames", 1) or 1) == 1
        spp = int(fast_get(ds, "SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if (
        ts not in NATIVE_LE
        or bits not in (8, 16, 32)
        or not 0 < stored <= bits
        or spp != 1
        or photometric not in ("MONOCHROME1", "MONOCHROME2")
        or not single
    ):
        return None
    start = fh.tell()
    head = fh.read(12)
    if len(head) < 8 or head[:4] != _PIXEL_DATA_TAG:
        return None
    if ts == "1.2.840.10008.1.2":  # implicit VR: tag, 4-byte length
        (length,), header = struct.unpack("<I", head[4:8]), 8
    elif head[4:6] in (b"OW", b"OB") and len(head) == 12:
        (length,), header = struct.unpack("<I", head[8:12]), 12
    else:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    if length == 0xFFFFFFFF or length < rows * cols * dtype.itemsize:
        return None
    return PixelRef(start + header, length, dtype, stored, data)


@dataclass(frozen=True)
class Layout:
    """How sorted slices map onto the buffer whose transpose is the RAS+ array.

    Attributes:
        flip: Whether (slice, row, column) buffer axes are reversed.
        perm: ``array = buffer.transpose(perm)``.
        affine: The RAS affine of that array.
        original: Axis codes of the (column, row, slice) voxel axes.
    """

    flip: tuple[bool, bool, bool]
    perm: tuple[int, int, int]
    affine: np.ndarray
    original: str


def plan_layout(affine_ras: np.ndarray, shape_crs: tuple[int, int, int]) -> Layout:
    """Work out the flips and the transpose that make (column, row, slice) voxels RAS+.

    Same result as :func:`medm3.imaging.orientation.reorient_to_ras` (nibabel's
    closest canonical orientation) without moving any data.

    Args:
        affine_ras: Voxel ``(column, row, slice)`` -> RAS mm.
        shape_crs: ``(cols, rows, slices)``.

    Returns:
        The layout.
    """
    import nibabel as nib

    from medm3.imaging.orientation import axis_codes

    ornt = nib.orientations.io_orientation(affine_ras)
    perm = [0, 0, 0]
    flip_crs = [False, False, False]
    for voxel_axis, (target, direction) in enumerate(ornt):
        perm[int(target)] = 2 - voxel_axis  # buffer axes are (slice, row, column)
        flip_crs[voxel_axis] = direction < 0
    affine = affine_ras @ nib.orientations.inv_ornt_aff(ornt, shape_crs)
    flip = (flip_crs[2], flip_crs[1], flip_crs[0])
    return Layout(flip, (perm[0], perm[1], perm[2]), affine, axis_codes(affine_ras))


#: Slices read and converted per task.
BLOCK = 8


@dataclass(frozen=True)
class NativeSlices:
    """The sorted native slices of one series and how to rescale them.

    Attributes:
        refs: One :class:`PixelRef` per slice, sorted along the normal (same dtype).
        paths: The file of each slice (None when ``ref.data`` holds it).
        labels: Names for messages.
        shape: ``(rows, cols)``.
        slopes: Rescale slope per slice.
        intercepts: Rescale intercept per slice.
    """

    refs: Sequence[PixelRef]
    paths: Sequence[str | None]
    labels: Sequence[str]
    shape: tuple[int, int]
    slopes: np.ndarray
    intercepts: np.ndarray


def read_native_volume(slices: NativeSlices, layout: Layout) -> np.ndarray:
    """Read sorted native slices into the RAS+ array, rescaled.

    The array is a transposed view of a slice-major buffer (for an axial
    series it is Fortran-ordered, like SimpleITK's and nibabel's arrays): the
    reorientation flips happen while each slice is copied and no volume-sized
    transpose is ever made. Strides are all positive (``torch.from_numpy``
    takes it as is).

    Args:
        slices: The slices, their files and rescale values.
        layout: From :func:`plan_layout`.

    Returns:
        The physical values with the dtype rule of :mod:`.values`.

    Raises:
        InputError: If a file is shorter than its pixel data claims.
    """
    from medm3.imaging.readers.values import scaled_dtype

    refs, slopes, intercepts = slices.refs, slices.slopes, slices.intercepts
    stored = refs[0].dtype
    identity = bool(np.all(slopes == 1.0) and np.all(intercepts == 0.0))
    optimistic = False
    if identity:
        out: type | np.dtype = stored
    else:
        bits = min(ref.bits_stored for ref in refs)
        signed = stored.kind == "i"
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        out = scaled_dtype(stored, lo, hi, slopes, intercepts)
        integral = bool(
            np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts))
        )
        if out != np.int16 and integral and stored.kind in "iu":
            out, optimistic = np.int16, True  # checked against the real range below
    array, ranges = _fill(slices, layout, np.dtype(out), release=not optimistic)
    if optimistic:
        lo, hi = ranges[:, 0].min(), ranges[:, 1].max()
        if scaled_dtype(stored, lo, hi, slopes, intercepts) != np.int16:
            del array  # rare: values outside int16; read again as float32
            array, _ = _fill(slices, layout, np.dtype(np.float32), release=True)
    return array


def _fill(
    slices: NativeSlices, layout: Layout, out_dtype: np.dtype, release: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the files: read, clear unused bits, rescale, transpose into place.

    ``release`` drops each archive member's bytes once copied (no second pass).
    """
    from medm3.imaging.readers.values import rescale_block

    refs, paths, labels, shape = slices.refs, slices.paths, slices.labels, slices.shape
    slopes, intercepts = slices.slopes, slices.intercepts
    n = len(refs)
    dtype = refs[0].dtype
    buffer = np.empty((n, *shape), dtype=out_dtype)  # slice-major: each slice lands in one piece
    view = buffer[tuple(slice(None, None, -1) if f else slice(None) for f in layout.flip)]
    ranges = np.zeros((n, 2), dtype=np.float64)
    local = threading.local()

    def one(block: int) -> None:
        k0, k1 = block * BLOCK, min(n, (block + 1) * BLOCK)
        scratch = getattr(local, "buf", None)
        if scratch is None:
            scratch = local.buf = np.empty((BLOCK, *shape), dtype=dtype)
        for j, k in enumerate(range(k0, k1)):
            _read_slice(refs[k], paths[k], labels[k], scratch[j], release)
            if refs[k].bits_stored < dtype.itemsize * 8:  # clear unused high bits like pydicom
                shift = dtype.itemsize * 8 - refs[k].bits_stored
                np.left_shift(scratch[j], shift, out=scratch[j])
                np.right_shift(scratch[j], shift, out=scratch[j])
            ranges[k] = (scratch[j].min(), scratch[j].max())
        view[k0:k1] = rescale_block(scratch[: k1 - k0], slopes[k0:k1], intercepts[k0:k1], out_dtype)

    run_threads(one, (n + BLOCK - 1) // BLOCK)
    return buffer.transpose(layout.perm), ranges


def _read_slice(
    ref: PixelRef, path: str | None, label: str, target: np.ndarray, release: bool
) -> None:
    nbytes = target.nbytes
    if ref.data is not None:
        raw = memoryview(ref.data)[ref.offset : ref.offset + nbytes]
        if len(raw) < nbytes:
            _short(label)
        target[...] = np.frombuffer(raw, dtype=target.dtype).reshape(target.shape)
        del raw
        if release:
            ref.data = None  # the member's bytes go as soon as they are copied
    else:
        _read_into(path, ref.offset, target, label)


def run_threads(fn: Callable[[int], None], n: int) -> None:
    """Call ``fn(0) .. fn(n - 1)`` on a few threads; re-raise the first error.

    Args:
        fn: Work for one index.
        n: Number of indices.
    """
    count = min(workers(), n)
    if count <= 1:
        for k in range(n):
            fn(k)
        return
    with ThreadPoolExecutor(count, thread_name_prefix="medm3-dicom") as pool:
        for future in [pool.submit(_chunk, fn, range(i, n, count)) for i in range(count)]:
            future.result()


def _chunk(fn: Callable[[int], None], indices: range) -> None:
    for k in indices:
        fn(k)


def _read_into(path: str | None, offset: int, target: np.ndarray, label: str) -> None:
    view = memoryview(target).cast("B")
    assert path is not None
    try:
        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            got = 0
            while got < len(view):
                n = fh.readinto(view[got:])
                if not n:
                    _short(label)
                got += n
    except OSError as exc:
        raise InputError(f"cannot read the pixel data: {exc.strerror or exc}", label) from None


def _short(label: str) -> None:
    raise InputError("pixel data is truncated (the file is shorter than its header says)", label)
