"""DICOM dataset parsing and the pixel-value pipeline shared by files and series.

Pipeline for grayscale data, in DICOM order:

1. **Modality LUT**: Rescale Slope/Intercept (-> HU for CT), or a Modality
   LUT Sequence when present. dtype rule: see :mod:`.values`.
2. **VOI**: a (non-linear) VOI LUT Sequence is applied at load
   (``metadata['voi_lut_applied'] = True``); otherwise Window Center/Width are
   stored as ``metadata['window'] = (width, level)`` (first value if several).
3. **MONOCHROME1** is inverted (``min + max - value``) so higher means
   brighter; the stored window level is inverted the same way, and
   ``metadata['photometric']`` keeps the original interpretation.

Colour data (RGB, YBR -> RGB, PALETTE COLOR -> RGB) is returned as is.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from medm3.errors import InputError
from medm3.imaging.limits import ReadLimits, check_pixels
from medm3.imaging.readers.dicom_check import bytes_per_sample
from medm3.imaging.readers.dicom_tags import fast_get
from medm3.imaging.readers.values import (
    apply_rescale,
    invert,
    invert_in_place,
    native,
)

#: Source of a DICOM dataset: a path, or a callable returning a file-like object.
DicomOpener = Callable[[], Any]


def read_dataset(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    label: str | os.PathLike[str],
    *,
    header_only: bool = False,
) -> Any:
    """Parse a DICOM file (also without preamble/file meta).

    Args:
        source: A path, the file's bytes, or a binary file object (left open,
            positioned at the Pixel Data element when ``header_only``).
        label: What to name in messages (the path, or ``zip!member``).
        header_only: Stop before the pixel data.

    Returns:
        A ``pydicom.Dataset`` with a Transfer Syntax UID set.

    Raises:
        InputError: If pydicom cannot parse it.
    """
    import pydicom

    if isinstance(source, bytes):
        fp: Any = io.BytesIO(source)
    elif hasattr(source, "read"):
        fp = source
    else:
        fp = os.fspath(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=header_only, force=True)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise InputError(f"not a readable DICOM file ({why})", label) from None
    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta and ds.original_encoding[0] is not None:
        implicit, little = ds.original_encoding
        uid = pydicom.uid
        meta.TransferSyntaxUID = (
            uid.ImplicitVRLittleEndian
            if implicit
            else (uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)
        )
    return ds


#: Modalities whose objects are never stacked as images.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "SR", "PR", "KO", "REG"})


def looks_like_image(ds: Any) -> bool:
    """True if the dataset header describes pixel data (Rows and Columns present).

    Args:
        ds: A dataset, possibly read with ``stop_before_pixels``.

    Returns:
        Whether it is an image (SR, RTSTRUCT, DICOMDIR, ... are not). Derived
        objects that carry frames but are not pictures of the patient (SEG,
        RTSTRUCT, presentation states) are not images either, so a
        segmentation written next to its series never counts as a second series.
    """
    if str(fast_get(ds, "Modality", "")).upper() in NON_IMAGE_MODALITIES:
        return False
    return "Rows" in ds and "Columns" in ds and "DirectoryRecordSequence" not in ds


def frame_count(ds: Any) -> int:
    """Number of frames declared by the dataset (1 when absent).

    Args:
        ds: A dataset.

    Returns:
        NumberOfFrames, at least 1.
    """
    try:
        return max(int(fast_get(ds, "NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def is_color(ds: Any) -> bool:
    """True for RGB/YBR/PALETTE COLOR data.

    Args:
        ds: A dataset.

    Returns:
        Whether the pixel data is colour.
    """
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    return spp > 1 or str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR"


def declared_samples(ds: Any) -> tuple[int, str]:
    """Samples the header declares (rows x cols x frames x samples per pixel).

    Args:
        ds: A dataset header.

    Returns:
        ``(count, description)`` for :func:`~medm3.imaging.limits.check_pixels`.
    """
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = frame_count(ds)
    spp = 3 if is_color(ds) else int(ds.get("SamplesPerPixel", 1) or 1)
    return rows * cols * frames * spp, f"{rows} x {cols} x {frames} frame(s) x {spp}"


def decode_pixels(ds: Any, label: str | os.PathLike[str], limits: ReadLimits) -> np.ndarray:
    """Decode the pixel data after checking its declared size.

    Args:
        ds: A fully read dataset.
        label: The file (for messages).
        limits: The limits in force (``max_pixels``).

    Returns:
        ``(rows, cols)``, ``(frames, rows, cols)`` or with a trailing RGB
        axis; PALETTE COLOR is expanded to RGB, YBR converted to RGB.

    Raises:
        InputError: If there is no pixel data, it is too large, truncated,
            or cannot be decoded (e.g. a missing codec).
    """
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = ds.get("SOPClassUID")
        what = f" ({sop.name})" if sop is not None and hasattr(sop, "name") else ""
        raise InputError(f"DICOM file has no pixel data{what}; it is not an image", label)
    count, what = declared_samples(ds)
    check_pixels(count, limits, label, what, bytes_per_sample=bytes_per_sample(ds))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
            if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                arr = apply_color_lut(arr, ds)
    except Exception as exc:
        ts = ds.file_meta.get("TransferSyntaxUID")
        ts_name = getattr(ts, "name", str(ts))
        text = str(exc).split("\n")[0].rstrip(": ")
        if "less than expected" in text or "truncat" in text.lower():
            raise InputError(f"pixel data is truncated ({text})", label) from None
        hint = ""
        if getattr(ts, "is_compressed", False):
            hint = (
                "; a codec may be missing: pip install pylibjpeg pylibjpeg-libjpeg "
                "pylibjpeg-openjpeg (or python-gdcm)"
            )
        raise InputError(
            f"cannot decode the pixel data (transfer syntax {ts_name}): {text}{hint}", label
        ) from None
    return native(np.asarray(arr))


def window_of(ds: Any) -> tuple[float, float] | None:
    """The first Window Width/Center pair of a dataset (or its functional groups).

    Args:
        ds: A dataset.

    Returns:
        ``(width, level)`` or None when absent/invalid.
    """
    src = ds
    if "WindowCenter" not in ds:
        for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            item = _first_item(ds, group, "FrameVOILUTSequence")
            if item is not None:
                src = item
                break
    center, width = src.get("WindowCenter"), src.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (w, c) if w > 0 and np.isfinite(c) else None


def _is_multi(value: Any) -> bool:
    return not isinstance(value, (str, bytes)) and hasattr(value, "__len__")


def _first_item(ds: Any, group: str, seq: str) -> Any:
    groups = ds.get(group)
    if not groups:
        return None
    inner = groups[0].get(seq)
    return inner[0] if inner else None


def to_values(
    stack: np.ndarray,
    ds: Any,
    slopes: np.ndarray | float,
    intercepts: np.ndarray | float,
    metadata: dict[str, Any],
    rescaled: bool = False,
) -> np.ndarray:
    """Run the grayscale pipeline (modality LUT, VOI, MONOCHROME1) on decoded data.

    Args:
        stack: Stored values, one slice/frame per leading index (or one 2D image).
        ds: The (first) dataset, for its LUTs, window and photometric tags.
        slopes: Rescale slope(s), one per slice or a scalar.
        intercepts: Rescale intercept(s).
        metadata: Updated with ``photometric``, ``window``, ``voi_lut_applied``,
            ``rescale`` (slope, intercept of the first slice, when not identity),
            ``bits_stored`` (value range ``0 .. 2**bits - 1``: BitsStored when no
            rescale applies, or the VOI LUT output bits) and ``inverted``.
        rescaled: ``stack`` already holds the rescaled values in the reader's
            own buffer (see :mod:`.dicom_volume`): only the metadata is
            recorded and MONOCHROME1 is inverted in place.

    Returns:
        The physical values, higher = brighter.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    metadata["photometric"] = photometric
    if is_color(ds):
        return stack
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        values = np.asarray(apply_modality_lut(stack, ds))
        metadata["modality_lut_applied"] = True
    else:
        values = stack if rescaled else apply_rescale(stack, slopes, intercepts)
        s, b = np.atleast_1d(slopes), np.atleast_1d(intercepts)
        if not (np.all(s == 1) and np.all(b == 0)):
            metadata["rescale"] = (float(s[0]), float(b[0]))
        elif ds.get("BitsStored"):
            metadata["bits_stored"] = int(ds.BitsStored)
    window = window_of(ds)
    if "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi_lut

        values = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True))
        metadata["voi_lut_applied"] = True
        metadata.pop("bits_stored", None)
        descriptor = ds.VOILUTSequence[0].get("LUTDescriptor")
        if descriptor is not None and len(descriptor) == 3 and 8 <= int(descriptor[2]) <= 16:
            metadata["bits_stored"] = int(descriptor[2])
        window = None
    if photometric == "MONOCHROME1" and rescaled:
        pivot = invert_in_place(values)
        metadata["inverted"] = True
        if window is not None:
            window = (window[0], pivot - window[1])
    elif photometric == "MONOCHROME1":
        values, pivot = invert(values)
        metadata["inverted"] = True
        if window is not None:
            window = (window[0], pivot - window[1])
    if window is not None:
        metadata["window"] = window
    return values


def rescale_of(ds: Any, frame_item: Any = None) -> tuple[float, float]:
    """Rescale slope and intercept of a dataset or of one frame's functional groups.

    Args:
        ds: A dataset.
        frame_item: The frame's PerFrameFunctionalGroupsSequence item, if any.

    Returns:
        ``(slope, intercept)``, ``(1, 0)`` when absent. RT Dose Grid Scaling
        counts as a slope.
    """
    src = ds
    for holder in (frame_item, shared_group(ds)):
        if holder is not None and holder.get("PixelValueTransformationSequence"):
            src = holder.PixelValueTransformationSequence[0]
            break
    try:
        slope = float(fast_get(src, "RescaleSlope", 1) or 1)
        intercept = float(fast_get(src, "RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
    if "DoseGridScaling" in ds:
        slope *= float(ds.DoseGridScaling)
    return slope, intercept


def shared_group(ds: Any) -> Any:
    """The SharedFunctionalGroupsSequence item of an enhanced dataset, or None.

    Args:
        ds: A dataset.

    Returns:
        The first (only) item, or None.
    """
    if "SharedFunctionalGroupsSequence" not in ds:
        return None
    seq = ds.get("SharedFunctionalGroupsSequence")
    return seq[0] if seq else None


def label_of(path: str | os.PathLike[str]) -> str:
    """File name used in messages about one slice.

    Args:
        path: A file path or ``zip!member`` string.

    Returns:
        The last path component.
    """
    return Path(os.fspath(path).split("!")[-1]).name
