"""Resource limits applied while reading images (decompression-bomb protection).

Every reader checks the number of pixels an image declares in its header
*before* decoding any pixel data, and archives are checked member by member
before anything is decompressed. The defaults suit clinical data (a
512 x 512 x 4000 CT fits easily); each limit can be overridden per call with a
:class:`ReadLimits` instance or globally with an environment variable:

==========================  ==============================  ===============
field                       environment variable            default
==========================  ==============================  ===============
``max_pixels``              ``MEDM3_MAX_PIXELS``            1,073,741,824
``max_files``               ``MEDM3_MAX_FILES``             20,000
``max_members``             ``MEDM3_MAX_ZIP_MEMBERS``       20,000
``max_member_bytes``        ``MEDM3_MAX_ZIP_MEMBER_BYTES``  2 GiB
``max_total_bytes``         ``MEDM3_MAX_ZIP_TOTAL_BYTES``   8 GiB
``max_ratio``               ``MEDM3_MAX_ZIP_RATIO``         200
==========================  ==============================  ===============

``max_pixels`` counts every sample (pixels x frames x channels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from medm3.errors import InputError

#: field name -> environment variable that overrides it.
ENV_VARS: dict[str, str] = {
    "max_pixels": "MEDM3_MAX_PIXELS",
    "max_files": "MEDM3_MAX_FILES",
    "max_members": "MEDM3_MAX_ZIP_MEMBERS",
    "max_member_bytes": "MEDM3_MAX_ZIP_MEMBER_BYTES",
    "max_total_bytes": "MEDM3_MAX_ZIP_TOTAL_BYTES",
    "max_ratio": "MEDM3_MAX_ZIP_RATIO",
}

#: Members smaller than this are never rejected for their compression ratio
#: (tiny files compress well without being bombs).
RATIO_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class ReadLimits:
    """Limits on what a read may allocate or decompress.

    Attributes:
        max_pixels: Most samples (pixels x frames x channels) one image may
            declare; checked from the header before pixel data is decoded.
        max_files: Most files examined in a folder given as a DICOM series.
        max_members: Most members a zip archive may hold.
        max_member_bytes: Largest uncompressed size of one archive member.
        max_total_bytes: Largest total uncompressed size of an archive.
        max_ratio: Largest uncompressed/compressed size ratio of an archive
            member (members under 1 MiB are exempt).
    """

    max_pixels: int = 1 << 30
    max_files: int = 20_000
    max_members: int = 20_000
    max_member_bytes: int = 2 << 30
    max_total_bytes: int = 8 << 30
    max_ratio: float = 200.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ReadLimits.{f.name} must be a positive number, got {value!r}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ReadLimits:
        """Defaults, overridden by ``MEDM3_*`` environment variables, then by ``overrides``.

        Args:
            environ: Environment to read (default: ``os.environ``).
            **overrides: Field values that win over the environment.

        Returns:
            The limits to use.

        Raises:
            InputError: If an environment variable is not a positive number.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                text = raw.replace("_", "")
                number = float(text) if name == "max_ratio" else int(text)
            except ValueError:
                number = -1
            if number <= 0:
                raise InputError(
                    f"environment variable {var} must be a positive number, got {raw!r}"
                )
            values[name] = number
        values.update(overrides)
        return replace(cls(), **values)


def resolve_limits(limits: ReadLimits | None) -> ReadLimits:
    """The limits a read uses: ``limits`` if given, else defaults + environment.

    Args:
        limits: Limits chosen by the caller, or None.

    Returns:
        A :class:`ReadLimits`.
    """
    return limits if limits is not None else ReadLimits.from_env()


def check_pixels(count: int, limits: ReadLimits, path: str | os.PathLike[str], what: str) -> None:
    """Refuse an image whose header declares more samples than ``limits.max_pixels``.

    Args:
        count: Number of samples the header declares.
        limits: The limits in force.
        path: The file the image comes from (for the message).
        what: How the size was computed, e.g. ``"1024 x 1024 pixels"``.

    Raises:
        InputError: If ``count`` exceeds the limit (nothing has been decoded yet).
    """
    if count > limits.max_pixels:
        raise InputError(
            f"image declares {what} = {count:,} samples, more than the limit of "
            f"{limits.max_pixels:,} (possible decompression bomb; raise MEDM3_MAX_PIXELS "
            "if the file is genuine)",
            path,
        )
