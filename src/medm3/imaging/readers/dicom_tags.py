"""Cheap access to the few header values a series scan needs from every file.

pydicom keeps the elements of a parsed header raw until first access, then
converts them (character sets, ``DSfloat`` objects, multi-value wrappers), which
costs tens of microseconds per element: a 1,500-file series spends most of its
scan there. :func:`fast_get` reads the common simple cases (little-endian
unsigned shorts, IS/DS numbers, ASCII text without backslashes) straight from
the raw bytes and asks pydicom for everything else, so values are the same as
``ds.get`` returns, as plain Python numbers and strings.
"""

from __future__ import annotations

from typing import Any

_TEXT = frozenset({"CS", "UI", "LO", "SH"})
_TAGS: dict[str, int] = {}


def _tag(keyword: str) -> int | None:
    tag = _TAGS.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword

        tag = tag_for_keyword(keyword)
        if tag is None:
            return None
        _TAGS[keyword] = tag
    return tag


def fast_get(ds: Any, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)`` without pydicom's conversion cost where possible.

    Args:
        ds: A pydicom dataset.
        keyword: A DICOM keyword (e.g. ``"ImagePositionPatient"``).
        default: Returned when the element is absent or empty.

    Returns:
        An ``int`` (US, IS), ``float`` or list of floats (DS), ``str`` (CS, UI,
        LO, SH), or whatever ``ds.get`` returns for other elements.
    """
    from pydicom.datadict import dictionary_VR

    tag = _tag(keyword)
    raw = ds._dict.get(tag) if tag is not None else None
    if raw is None or not getattr(raw, "is_raw", False) or not raw.is_little_endian:
        return ds.get(keyword, default)
    value = raw.value
    vr = raw.VR or dictionary_VR(tag)
    if not value:
        return ds.get(keyword, default)
    try:
        if vr == "US" and len(value) == 2:
            return int.from_bytes(value, "little")
        if vr in ("IS", "DS") and value.isascii():
            parts = [p.strip(b" \x00") for p in value.split(b"\\")]
            if vr == "IS" and len(parts) == 1:
                return int(parts[0])
            if vr == "DS":
                numbers = [float(p) for p in parts]
                return numbers[0] if len(numbers) == 1 else numbers
        if vr in _TEXT and value.isascii() and b"\\" not in value:
            return value.decode("ascii").strip(" \x00")
    except ValueError:
        pass
    return ds.get(keyword, default)
