"""De-identify DICOM files, folders and zip archives, writing outputs atomically.

* A file gives a file.
* A folder is walked recursively; the output mirrors its tree (or, with ``rename``,
  uses ``<Study UID>/<Series UID>/<SOP Instance UID>.dcm`` built from the new UIDs).
  Links to files are followed; links to folders are not (they are listed as skipped).
* A ``.zip`` archive is read member by member; members with an absolute path or a
  ``..`` component are rejected (path traversal). Its directory is checked against
  :class:`~medm3.imaging.limits.ReadLimits` (members, sizes, compression ratio: the
  checks of :mod:`medm3.imaging.archive`) before anything is decompressed.
* Only the first bytes of a file are read to decide whether it is DICOM; files larger
  than ``max_member_bytes`` are refused before being read.
* Where the input is a folder or a zip, an output path ending in ``.zip`` gets a zip
  archive, any other a folder.

Only files with the DICOM ``DICM`` marker at byte 128 are processed; other files
(including DICOMDIR indexes, which hold patient names and would point to renamed
files) are skipped, not copied, and listed in the summary. A file with the marker that
cannot be read, or that is truncated, stops the run with an
:class:`~medm3.errors.InputError` naming it.

Nothing partial is ever left behind: a file goes to a temporary file renamed into
place, a folder to a temporary folder renamed at the end, a zip to a temporary archive.

File and folder names are copied as they are when mirroring; they can themselves hold
PHI (patient names, IDs, UIDs). Use ``rename=True`` when they might.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.dataset import Dataset

from medm3.errors import InputError
from medm3.imaging.archive import check_members
from medm3.imaging.deid.engine import DeidReport, deidentify_dataset
from medm3.imaging.deid.keys import resolve_key
from medm3.imaging.limits import ReadLimits, resolve_limits
from medm3.imaging.readers.dicom_check import truncation_problem
from medm3.utils.atomic import atomic_write_bytes

_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

PathLike = str | os.PathLike[str]


@dataclass
class FileResult:
    """One de-identified file.

    Attributes:
        source: Input path (``archive.zip:member`` for zip members).
        output: Output path relative to the output root (the file itself for a file).
        report: What was done to it.
    """

    source: str
    output: str
    report: DeidReport


@dataclass
class DeidSummary:
    """What :func:`deidentify_path` did.

    Attributes:
        output: The output file, folder or zip archive.
        files: The de-identified files.
        skipped: ``(input path, reason)`` of each file not processed (and not copied).
        random_key: True when a random key was used: the new UIDs and pseudonyms match
            no other run.
    """

    output: Path
    files: list[FileResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    random_key: bool = False

    @property
    def warnings(self) -> list[str]:
        """Every warning of every file, prefixed with the file's input path."""
        return [f"{f.source}: {w}" for f in self.files for w in f.report.warnings]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _has_dicm_marker(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_dicom_file(path: PathLike) -> bool:
    """Tell whether a file starts like a DICOM Part 10 file (``DICM`` at byte 128).

    Args:
        path: File to check.

    Returns:
        True when the marker is present; False otherwise or when unreadable.
    """
    try:
        with open(path, "rb") as fh:
            return _has_dicm_marker(fh.read(132))
    except OSError:
        return False


def _read(source: str | io.BytesIO, name: str) -> Dataset:
    try:
        ds = pydicom.dcmread(source)
    except Exception as exc:
        raise InputError(f"cannot read DICOM file: {_one_line(exc)}", name) from exc
    size = len(source.getbuffer()) if isinstance(source, io.BytesIO) else os.path.getsize(source)
    problem = truncation_problem(ds, size)
    if problem is not None:
        raise InputError(f"DICOM file is truncated or corrupt: {problem}", name)
    return ds


def _is_dicomdir(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    return meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS


def _encode(ds: Dataset, name: str) -> bytes:
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    except Exception as exc:
        raise InputError(f"cannot write the de-identified file: {_one_line(exc)}", name) from exc
    return buffer.getvalue()


def _check_output(dst: Path, overwrite: bool, want_dir: bool) -> None:
    if not (dst.exists() or dst.is_symlink()):
        return
    if not overwrite:
        raise InputError("output already exists (use --overwrite to replace it)", dst)
    if dst.is_dir() != want_dir or dst.is_symlink():
        kind = "a folder" if dst.is_dir() else "a file"
        raise InputError(f"output exists and is {kind}; refusing to replace it", dst)


def deidentify_file(
    src: PathLike,
    dst: PathLike,
    *,
    key: str | bytes | None = None,
    overwrite: bool = False,
    limits: ReadLimits | None = None,
) -> DeidReport:
    """De-identify one DICOM file into ``dst`` (written atomically).

    Args:
        src: Input DICOM Part 10 file.
        dst: Output file; must not exist unless ``overwrite``.
        key: Secret key (see :func:`deidentify_dataset`); None reads ``$MEDM3_DEID_KEY``,
            else uses a random key.
        overwrite: Replace an existing output file.
        limits: Size limit (``max_member_bytes``; default: from the environment).

    Returns:
        The :class:`DeidReport` of the file.

    Raises:
        InputError: ``src`` is missing, not DICOM or unreadable, or ``dst`` exists.
    """
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.is_file():
        raise InputError("no such file", src_path)
    if not is_dicom_file(src_path):
        raise InputError("not a DICOM file (no DICM marker at byte 128)", src_path)
    if src_path.resolve() == dst_path.resolve():
        raise InputError("the output must differ from the input", dst_path)
    _check_output(dst_path, overwrite, want_dir=False)
    max_bytes = resolve_limits(limits).max_member_bytes
    if src_path.stat().st_size > max_bytes:
        raise InputError(
            f"file is {src_path.stat().st_size:,} bytes, more than the limit of {max_bytes:,} "
            "(MEDM3_MAX_ZIP_MEMBER_BYTES)",
            src_path,
        )
    ds = _read(str(src_path), str(src_path))
    if _is_dicomdir(ds):
        raise InputError("DICOMDIR indexes are not de-identified; regenerate them", src_path)
    report = deidentify_dataset(ds, key=key)
    encoded = _encode(ds, str(src_path))
    with _output_errors(dst_path):
        atomic_write_bytes(dst_path, encoded)
    return report


# --- inputs: (relative name, display name, reader) of every file ---------------------

_Entry = tuple[str, str, Callable[[], bytes] | None]  # reader None: skipped link


def _read_limited(path: Path, limits: ReadLimits) -> bytes:
    """A file's bytes: only its first 132 when it is not DICOM; refused when too large."""
    with open(path, "rb") as fh:
        head = fh.read(132)
        if not _has_dicm_marker(head):
            return head
        size = os.fstat(fh.fileno()).st_size
        if size > limits.max_member_bytes:
            raise InputError(
                f"file is {size:,} bytes, more than the limit of {limits.max_member_bytes:,} "
                "(MEDM3_MAX_ZIP_MEMBER_BYTES)",
                path,
            )
        return head + fh.read()


def _folder_entries(root: Path, limits: ReadLimits) -> Iterator[_Entry]:
    count = 0
    for folder, dirs, files in os.walk(root):
        links = [d for d in dirs if Path(folder, d).is_symlink()]
        dirs[:] = sorted(d for d in dirs if d not in links)  # os.walk does not follow them
        for name in sorted([*files, *links]):
            count += 1
            if count > limits.max_files:
                raise InputError(
                    f"folder holds more than {limits.max_files:,} files (MEDM3_MAX_FILES)", root
                )
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            reader = (lambda p=path: _read_limited(p, limits)) if path.is_file() else None
            yield rel, str(path), reader


def _safe_member(name: str, archive: Path) -> str:
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise InputError(f"unsafe path in zip archive: {name!r}", archive)
    return "/".join(p for p in parts if p not in ("", "."))


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """A member's bytes: only its first 132 when it is not DICOM (never past its declared size)."""
    with archive.open(member) as fh:
        head = fh.read(132)
        return head + fh.read() if _has_dicm_marker(head) else head


def _zip_entries(archive: zipfile.ZipFile, path: Path, limits: ReadLimits) -> list[_Entry]:
    # Members, sizes and compression ratios are checked (as for `m3 info`) before any work.
    members = check_members(archive.infolist(), limits, path)
    names = [_safe_member(m.filename, path) for m in members]
    return [
        (name, f"{path}:{m.filename}", (lambda m=m: _read_member(archive, m)))
        for name, m in zip(names, members, strict=True)
    ]


# --- outputs: a folder or a zip archive, both committed at the end ---------------------


@contextlib.contextmanager
def _output_errors(path: PathLike) -> Iterator[None]:
    """Report a failure to write the output (disk full, permissions) as one clear line."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot write the output: {_one_line(exc)}", path) from exc


def _partial_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(6)}.partial")


class _FolderSink:
    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _partial_name(final)
        self.tmp.mkdir()  # unlike mkdtemp, honours the umask like the files inside

    def write(self, rel: str, data: bytes) -> None:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def commit(self) -> None:
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.{os.getpid()}.old")
            os.rename(self.final, old)
        os.rename(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class _ZipSink:
    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _partial_name(final)
        self.archive = zipfile.ZipFile(self.tmp, "x", compression=zipfile.ZIP_DEFLATED)

    def write(self, rel: str, data: bytes) -> None:
        self.archive.writestr(rel, data)

    def commit(self) -> None:
        self.archive.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        self.archive.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _uid_name(ds: Dataset) -> str:
    parts = [str(ds.get(k) or "unknown") for k in ("StudyInstanceUID", "SeriesInstanceUID")]
    return "/".join([*parts, f"{ds.get('SOPInstanceUID') or 'unknown'}.dcm"])


def _run(
    entries: list[_Entry],
    sink: _FolderSink | _ZipSink,
    summary: DeidSummary,
    key: bytes,
    rename: bool,
) -> None:
    written: set[str] = set()
    for rel, shown, reader in entries:
        if reader is None:
            summary.skipped.append((shown, "link to a folder, or broken link (not followed)"))
            continue
        try:
            data = reader()
        except InputError:
            raise
        except Exception as exc:  # I/O error, corrupt, encrypted or unsupported zip member
            raise InputError(f"cannot read file: {_one_line(exc)}", shown) from exc
        if not _has_dicm_marker(data[:132]):
            summary.skipped.append((shown, "not DICOM (no DICM marker)"))
            continue
        ds = _read(io.BytesIO(data), shown)
        if _is_dicomdir(ds):
            summary.skipped.append((shown, "DICOMDIR index (holds PHI; regenerate it)"))
            continue
        report = deidentify_dataset(ds, key=key)
        out = _uid_name(ds) if rename else rel
        if out in written:
            summary.skipped.append((shown, f"duplicate output name {out}"))
            continue
        encoded = _encode(ds, shown)
        with _output_errors(out):
            sink.write(out, encoded)
        written.add(out)
        summary.files.append(FileResult(shown, out, report))


def deidentify_path(
    src: PathLike,
    dst: PathLike,
    *,
    key: str | bytes | None = None,
    overwrite: bool = False,
    rename: bool = False,
    limits: ReadLimits | None = None,
) -> DeidSummary:
    """De-identify a DICOM file, a folder (recursively) or a zip archive of DICOM files.

    One key is used for the whole run, so files of one study keep one Study Instance
    UID, files of one series one Series Instance UID, and references between files stay
    valid. See the module docstring for the output layout.

    Args:
        src: Input file, folder or ``.zip`` archive.
        dst: Output path; must not exist unless ``overwrite``, must differ from ``src``
            and must not be inside a ``src`` folder (nor contain ``src``).
        key: Secret key; None reads ``$MEDM3_DEID_KEY``, else draws a random key (then
            the run's UIDs and pseudonyms match no other run).
        overwrite: Replace an existing output of the same kind (file or folder).
        rename: Name outputs ``<Study UID>/<Series UID>/<SOP Instance UID>.dcm`` (new
            UIDs) instead of copying input names, which may hold PHI. Folder and zip
            inputs only.
        limits: Archive and file limits (default: :meth:`ReadLimits.from_env`).

    Returns:
        A :class:`DeidSummary` listing processed and skipped files and their warnings.

    Raises:
        InputError: Missing or unusable input, unreadable DICOM file, unsafe zip member,
            no DICOM file found, or an output that exists or overlaps the input.
    """
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.exists():
        broken = " (broken link)" if src_path.is_symlink() else ""
        raise InputError(f"no such file or folder{broken}", src_path)
    key_bytes, random_key = resolve_key(key)
    read_limits = resolve_limits(limits)
    summary = DeidSummary(output=dst_path, random_key=random_key)
    if src_path.is_file() and is_dicom_file(src_path):
        report = deidentify_file(
            src_path, dst_path, key=key_bytes, overwrite=overwrite, limits=read_limits
        )
        report.random_key = random_key
        summary.files.append(FileResult(str(src_path), str(dst_path), report))
        return summary
    is_zip = src_path.is_file() and zipfile.is_zipfile(src_path)
    if not (src_path.is_dir() or is_zip):
        raise InputError("not a DICOM file (no DICM marker at byte 128), folder or zip", src_path)
    _check_apart(src_path, dst_path)
    want_zip = dst_path.suffix.lower() == ".zip"
    _check_output(dst_path, overwrite, want_dir=not want_zip)
    with contextlib.ExitStack() as stack:
        entries = _entries(src_path, is_zip, read_limits, stack)
        with _output_errors(dst_path):
            sink = _ZipSink(dst_path) if want_zip else _FolderSink(dst_path)
        _run_all_or_nothing(entries, sink, summary, key_bytes, rename, src_path)
    for result in summary.files:
        result.report.random_key = random_key
    return summary


def _check_apart(src_path: Path, dst_path: Path) -> None:
    """Refuse an output that is the input, lies inside the input folder or contains it."""
    src_real, dst_real = src_path.resolve(), dst_path.resolve()
    if src_real == dst_real:
        raise InputError("the output must differ from the input", dst_path)
    if src_path.is_dir() and dst_real.is_relative_to(src_real):
        raise InputError("the output must not be inside the input folder", dst_path)
    if src_real.is_relative_to(dst_real):
        raise InputError("the output must not contain the input", dst_path)


def _entries(
    src_path: Path, is_zip: bool, limits: ReadLimits, stack: contextlib.ExitStack
) -> list[_Entry]:
    """The input's entries: zip members (the archive stays open in ``stack``) or folder files."""
    if not is_zip:
        return list(_folder_entries(src_path, limits))
    try:
        archive = stack.enter_context(zipfile.ZipFile(src_path))
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"cannot read zip archive: {_one_line(exc)}", src_path) from exc
    return list(_zip_entries(archive, src_path, limits))


def _run_all_or_nothing(
    entries: list[_Entry],
    sink: _FolderSink | _ZipSink,
    summary: DeidSummary,
    key: bytes,
    rename: bool,
    src_path: Path,
) -> None:
    """De-identify every entry into ``sink`` and commit it; on any failure leave nothing."""
    try:
        _run(entries, sink, summary, key, rename)
        if not summary.files:
            raise InputError("no DICOM file found", src_path)
        with _output_errors(summary.output):
            sink.commit()
    except BaseException:
        sink.abort()
        raise
