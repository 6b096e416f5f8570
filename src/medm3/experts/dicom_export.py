"""Pieces the DICOM-SEG and DICOM SR writers share (:mod:`.dicom_seg`, :mod:`.dicom_sr`).

highdicom is imported only when a writer needs it (the ``experts`` extra).
"""

from __future__ import annotations

import re
from typing import Any

from medm3.errors import MissingDependencyError


def require_highdicom(what: str) -> Any:
    """Import highdicom, or say which extra installs it.

    Args:
        what: What needs it, for the message (``"DICOM-SEG export"``).

    Raises:
        MissingDependencyError: highdicom is not installed.
    """
    try:
        import highdicom
    except ImportError:
        raise MissingDependencyError("highdicom", "experts", what) from None
    return highdicom


def long_string(text: str) -> str:
    """A value fit for a LO element: no backslash/control characters, at most 64 characters."""
    clean = re.sub(r"[\\\x00-\x1f\x7f]", " ", str(text)).strip()
    return clean[:64] or "unnamed"


def derived_series_number(source: Any, offset: int) -> int:
    """Series number of an object derived from ``source``: its SeriesNumber + ``offset``.

    ``offset`` alone when the source has none; capped to the IS range.
    """
    try:
        number = int(source.get("SeriesNumber")) + offset
    except (TypeError, ValueError):
        number = offset
    return min(number, 2**31 - 1)


def algorithm_version(expert_version: str | None) -> str:
    """``medm3 <version>``, plus ``, weights <expert_version>`` when known."""
    from medm3 import __version__

    return f"medm3 {__version__}" + (f", weights {expert_version}" if expert_version else "")
