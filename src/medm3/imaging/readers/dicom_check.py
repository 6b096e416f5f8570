"""Detecting truncated DICOM files, which pydicom reads without complaint.

pydicom stops quietly at the end of a file: a value cut short is kept short,
and an element header cut in the middle is dropped. A truncated file then
looks like a valid one missing its last elements ("not an image", or a
544-byte de-identified copy). :func:`truncation_problem` inspects the last
element as read from the file, before anything converts it, and says what is
missing.
"""

from __future__ import annotations

from typing import Any

#: Value length meaning "undefined" (sequences and encapsulated pixel data).
_UNDEFINED = 0xFFFFFFFF
#: Bytes of the smallest data element header (tag + VR/length).
_MIN_HEADER = 8


def truncation_problem(ds: Any, file_size: int | None) -> str | None:
    """Why ``ds`` (just read with ``pydicom.dcmread``) looks truncated, or None.

    Call it right after reading the whole file (not with ``stop_before_pixels``)
    and before the dataset is modified.

    Args:
        ds: The dataset.
        file_size: Size of the file or buffer it was read from, if known.

    Returns:
        A short phrase, e.g. ``"PixelData declares 8192 bytes but only 5192
        are present"``, or None when nothing is missing.
    """
    from pydicom.dataelem import RawDataElement

    tags = list(ds.keys())
    if not tags:
        return "no data elements after the file meta information"
    raw = ds.get_item(tags[-1])
    if not isinstance(raw, RawDataElement) or raw.length == _UNDEFINED:
        return None
    have = len(raw.value) if raw.value is not None else 0
    name = _keyword(tags[-1])
    if have < raw.length:
        return f"{name} declares {raw.length:,} bytes but only {have:,} are present"
    if file_size is not None and raw.value_tell is not None:
        left = file_size - (raw.value_tell + raw.length)
        if 0 < left < _MIN_HEADER:
            return f"the file ends inside the data element after {name}"
    return None


def _keyword(tag: Any) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or str(tag)


def bytes_per_sample(ds: Any) -> int:
    """Bytes one decoded sample of ``ds`` occupies (from BitsAllocated; 2 when unusable).

    Rescaled data may become float32, so the result is at least 4 when the
    dataset has a non-identity Rescale Slope/Intercept.

    Args:
        ds: A dataset header.

    Returns:
        Bytes per sample for :func:`~medm3.imaging.limits.check_pixels`.
    """
    try:
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        bits = 16
    stored = max(1, (bits + 7) // 8)
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
    scaled = slope != 1.0 or intercept != 0.0
    return max(stored, 4) if scaled and not float(slope).is_integer() else stored
