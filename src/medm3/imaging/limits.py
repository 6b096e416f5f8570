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
``max_bytes``               ``MEDM3_MAX_IMAGE_BYTES``       4 GiB
``max_gzip_ratio``          ``MEDM3_MAX_GZIP_RATIO``        500
==========================  ==============================  ===============

``max_pixels`` counts every sample (pixels x frames x channels); ``max_bytes``
counts the memory the decoded array needs (samples x bytes per sample, the
larger of the stored and the returned data type). Both are checked from the
header, before any pixel data is read. Files that hold less data than their
header declares are refused before anything is allocated, and gzip streams
(``.nii.gz``) are decompressed with a cap: at most the declared size is read,
and past :data:`GZIP_RATIO_MIN_BYTES` a stream that inflates more than
``max_gzip_ratio`` times is refused (a nearly constant volume that large is a
bomb more often than an image; nibabel writes at most ~230:1).
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
    "max_bytes": "MEDM3_MAX_IMAGE_BYTES",
    "max_gzip_ratio": "MEDM3_MAX_GZIP_RATIO",
}

#: Fields read as floats from the environment (the others are integers).
_FLOAT_FIELDS = frozenset({"max_ratio", "max_gzip_ratio"})

#: Members smaller than this are never rejected for their compression ratio
#: (tiny files compress well without being bombs).
RATIO_MIN_BYTES = 1 << 20

#: gzip streams are checked against ``max_gzip_ratio`` only past this many
#: decompressed bytes (small, very compressible label maps are common).
GZIP_RATIO_MIN_BYTES = 64 << 20


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
        max_bytes: Most bytes the decoded array of one image may occupy;
            checked from the header before pixel data is decoded.
        max_gzip_ratio: Largest decompressed/compressed ratio of a gzip
            stream (``.nii.gz``), checked once more than
            :data:`GZIP_RATIO_MIN_BYTES` have been decompressed.
    """

    max_pixels: int = 1 << 30
    max_files: int = 20_000
    max_members: int = 20_000
    max_member_bytes: int = 2 << 30
    max_total_bytes: int = 8 << 30
    max_ratio: float = 200.0
    max_bytes: int = 4 << 30
    max_gzip_ratio: float = 500.0

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
                number = float(text) if name in _FLOAT_FIELDS else int(text)
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


def check_pixels(
    count: int,
    limits: ReadLimits,
    path: str | os.PathLike[str],
    what: str,
    *,
    bytes_per_sample: int = 1,
) -> None:
    """Refuse an image whose header declares too many samples or bytes.

    Args:
        count: Number of samples the header declares.
        limits: The limits in force.
        path: The file the image comes from (for the message).
        what: How the size was computed, e.g. ``"1024 x 1024 pixels"``.
        bytes_per_sample: Bytes one decoded sample occupies (the larger of the
            stored and the returned data type); checked against ``max_bytes``.

    Raises:
        InputError: If a dimension is zero or negative, or ``count`` or the
            decoded size exceeds a limit (nothing has been decoded yet).
    """
    if count <= 0:
        raise InputError(f"image declares {what} = no samples (a zero-length dimension)", path)
    nbytes = count * max(1, int(bytes_per_sample))
    if nbytes > limits.max_bytes:
        raise InputError(
            f"image declares {what} = {count:,} samples of {bytes_per_sample} byte(s): "
            f"{_human(nbytes)} decoded, more than the limit of {_human(limits.max_bytes)} "
            "(possible decompression bomb; raise MEDM3_MAX_IMAGE_BYTES if the file is genuine)",
            path,
        )
    if count > limits.max_pixels:
        raise InputError(
            f"image declares {what} = {count:,} samples, more than the limit of "
            f"{limits.max_pixels:,} (possible decompression bomb; raise MEDM3_MAX_PIXELS "
            "if the file is genuine)",
            path,
        )


def check_data_size(
    available: int, needed: int, path: str | os.PathLike[str], what: str = "the header"
) -> None:
    """Refuse a file that holds less pixel data than its header declares.

    Called before the data is read, so a small file declaring a huge image is
    refused without allocating anything.

    Args:
        available: Bytes of pixel data the file can provide.
        needed: Bytes the header declares.
        path: The file (for the message).
        what: What declared the size.

    Raises:
        InputError: If ``available < needed``.
    """
    if available < needed:
        raise InputError(
            f"data is truncated or corrupt: {what} declares {needed:,} bytes but the file holds "
            f"{max(available, 0):,}",
            path,
        )


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:,.1f} GiB"  # pragma: no cover


def read_gzip_capped(
    path: str | os.PathLike[str], size: int, limits: ReadLimits, chunk: int = 1 << 16
) -> bytearray:
    """Decompress the first ``size`` bytes of a gzip file, refusing bombs on the way.

    Decompression is streamed: memory grows only with the data actually
    produced, never past ``size`` (so a header declaring more than the stream
    holds costs nothing), and once :data:`GZIP_RATIO_MIN_BYTES` are out the
    ratio to the compressed bytes consumed so far is checked against
    ``limits.max_gzip_ratio``.

    Args:
        path: The ``.gz`` file.
        size: Bytes wanted (e.g. NIfTI ``vox_offset`` + declared data size).
        limits: The limits in force.
        chunk: Compressed bytes fed per step.

    Returns:
        Exactly ``size`` decompressed bytes.

    Raises:
        InputError: If the stream is corrupt, ends before ``size`` bytes
            (truncated), or inflates more than the ratio allows.
    """
    import zlib

    out = bytearray()
    decomp = zlib.decompressobj(31)  # gzip wrapper
    consumed = 0
    try:
        with open(path, "rb") as fh:
            while len(out) < size:
                data = decomp.unconsumed_tail or fh.read(chunk)
                if not decomp.unconsumed_tail:
                    consumed += len(data)
                if not data:
                    break
                out += decomp.decompress(data, min(size - len(out), 8 << 20))
                if decomp.eof and len(out) < size:
                    rest = decomp.unused_data  # concatenated gzip members (cat a.gz b.gz)
                    if not rest.startswith(b"\x1f\x8b"):
                        break
                    decomp = zlib.decompressobj(31)
                    out += decomp.decompress(rest, min(size - len(out), 8 << 20))
                produced = len(out)
                if produced > GZIP_RATIO_MIN_BYTES and produced > consumed * limits.max_gzip_ratio:
                    raise InputError(
                        f"gzip stream inflates more than {limits.max_gzip_ratio:g}:1 "
                        f"({_human(produced)} from {_human(consumed)} so far; possible "
                        "decompression bomb; raise MEDM3_MAX_GZIP_RATIO if the file is genuine)",
                        path,
                    )
    except zlib.error as exc:
        raise InputError(f"gzip data is corrupt ({exc})", path) from None
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", path) from None
    check_data_size(len(out), size, path, "the header (data offset + voxel data, uncompressed)")
    return out
