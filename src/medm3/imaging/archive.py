"""Safe, in-memory reading of zip archives (a zipped DICOM series).

Nothing is extracted to disk. Before any member is decompressed the whole
central directory is checked against :class:`~medm3.imaging.limits.ReadLimits`:
member names that would escape a folder (``../x``, ``/etc/x``, ``C:\\x``) reject
the archive, as do encrypted members, too many members, too large members or
totals (as declared), and suspicious compression ratios. Decompression itself
never yields more than the declared size (``zipfile`` stops there and checks
the CRC), so a lying header cannot inflate memory use either.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from medm3.errors import InputError
from medm3.imaging.limits import RATIO_MIN_BYTES, ReadLimits

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class ArchiveMember:
    """One regular file inside an open archive.

    Attributes:
        name: The member's name inside the archive.
        size: Its declared uncompressed size in bytes.
    """

    name: str
    size: int
    _zip: zipfile.ZipFile
    _info: zipfile.ZipInfo

    def read(self, max_bytes: int | None = None) -> bytes:
        """Decompress the member (or only its first ``max_bytes``) into memory.

        Args:
            max_bytes: Read at most this many bytes (e.g. to sniff a header).

        Returns:
            The member's bytes.

        Raises:
            InputError: If the member is corrupt.
        """
        try:
            with self._zip.open(self._info) as fh:
                return fh.read(-1 if max_bytes is None else max_bytes)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
            raise InputError(
                f"corrupt archive member '{self.name}': {exc}", self._zip.filename
            ) from None

    @property
    def display(self) -> str:
        """``archive.zip!member`` for messages."""
        return f"{self._zip.filename}!{self.name}"


def is_unsafe_name(name: str) -> bool:
    """True if extracting ``name`` could write outside the target folder.

    Args:
        name: A member name from the archive's directory.

    Returns:
        Whether the name is absolute, has a drive letter or a ``..`` component.
    """
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return any(part == ".." for part in norm.split("/"))


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def check_members(
    infos: list[zipfile.ZipInfo], limits: ReadLimits, path: str | os.PathLike[str]
) -> list[zipfile.ZipInfo]:
    """Validate an archive directory and return its regular-file members.

    Args:
        infos: ``ZipFile.infolist()``.
        limits: The limits in force.
        path: The archive (for messages).

    Returns:
        The members that are regular files (folders and symlinks dropped).

    Raises:
        InputError: On an unsafe name, an encrypted member or an exceeded limit.
    """
    files = []
    total = 0
    for info in infos:
        if is_unsafe_name(info.filename):
            raise InputError(
                f"archive member '{info.filename}' has an unsafe path (absolute or '..'); "
                "refusing the archive",
                path,
            )
        if info.is_dir() or _is_symlink(info):
            continue
        if info.flag_bits & 0x1:
            raise InputError(f"archive member '{info.filename}' is encrypted", path)
        files.append(info)
        if len(files) > limits.max_members:
            raise InputError(
                f"archive has more than {limits.max_members:,} members "
                "(raise MEDM3_MAX_ZIP_MEMBERS if genuine)",
                path,
            )
        if info.file_size > limits.max_member_bytes:
            raise InputError(
                f"archive member '{info.filename}' declares {info.file_size:,} bytes "
                f"uncompressed, more than the limit of {limits.max_member_bytes:,} "
                "(MEDM3_MAX_ZIP_MEMBER_BYTES)",
                path,
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_MIN_BYTES and ratio > limits.max_ratio:
            raise InputError(
                f"archive member '{info.filename}' has a suspicious compression ratio "
                f"({ratio:.0f}:1 > {limits.max_ratio:g}:1, possible zip bomb; "
                "MEDM3_MAX_ZIP_RATIO)",
                path,
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise InputError(
                f"archive declares more than {limits.max_total_bytes:,} bytes uncompressed "
                "in total (MEDM3_MAX_ZIP_TOTAL_BYTES)",
                path,
            )
    return files


@contextmanager
def open_zip(path: str | os.PathLike[str], limits: ReadLimits) -> Iterator[list[ArchiveMember]]:
    """Open a zip archive, validate it, and yield its regular-file members.

    Args:
        path: The ``.zip`` file.
        limits: The limits in force.

    Yields:
        The members (read them with :meth:`ArchiveMember.read` while the
        context is open).

    Raises:
        InputError: If the file is not a valid zip or fails a check.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(f"not a valid zip archive ({exc})", path) from None
    with zf:
        infos = check_members(zf.infolist(), limits, path)
        yield [ArchiveMember(i.filename, i.file_size, zf, i) for i in infos]
