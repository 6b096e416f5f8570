"""Uploaded scans and every path the server reads or serves, confined to the data folder.

Layout of the data folder:

* ``files/<file id>/<image.nii.gz | image.dcm | series.zip | image.png | image.jpg>``:
  uploads, renamed from their detected type (the client's file name is kept in
  the database for display only, never used as a path);
* ``library/``: scans an operator placed there; the web UI lists them and
  registers one as a file when it is opened;
* ``outputs/<session or run id>/``: expert overlays, label maps, results, traces;
* ``state/<session id>/``: images of the agent's conversation state;
* ``tmp/``: uploads being received.

Uploads are streamed to ``tmp/`` with a hard size cap, sniffed by magic bytes
(NIfTI-1/2, gzipped or not; a single DICOM file; a zip holding DICOM files;
PNG; JPEG) -- anything else is refused --, de-identified when they hold DICOM
and ``deid`` is on (the original bytes are deleted), and read once with
:func:`medm3.imaging.load_image` so a broken scan is refused at upload time.

:func:`FileStore.resolve` is the only way a request's reference becomes a
path: ids must match a strict pattern and the resolved path (symlinks
followed) must lie inside the data folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.serve.errors import APIError, PayloadTooLargeError, bad_request, not_found
from medm3.serve.sniff import read_error, server_limits, sniff
from medm3.serve.store import FileRecord, Store

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage

log = logging.getLogger("medm3.serve")

FILE_ID_RE = re.compile(r"^file-[0-9a-f]{24}$")
#: Ids of sessions (client-chosen ones too) and expert runs: safe as one path component.
OWNER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

#: Stored file name per detected kind.
STORED_NAMES = {
    "nifti": "image.nii",
    "nifti_gz": "image.nii.gz",
    "dicom": "image.dcm",
    "dicom_zip": "series.zip",
    "png": "image.png",
    "jpeg": "image.jpg",
}
#: Suffixes of scans listed from ``library/``.
LIBRARY_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".zip", ".png", ".jpg", ".jpeg")
_CHUNK = 1 << 20


def new_id(prefix: str) -> str:
    """A fresh id such as ``file-3f2a...`` (24 hex digits)."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def display_name(filename: str | None) -> str:
    """A client file name reduced to a harmless display string (no folders, <= 200 chars)."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip() or "upload"
    return name[:200]


def image_facts(image: MedicalImage) -> dict[str, Any]:
    """What clients need to know about a scan (no server paths, no DICOM text)."""
    from medm3.imaging.slicing import num_slices

    facts: dict[str, Any] = {
        "modality": image.modality,
        "modality_inferred": image.modality_inferred,
        "kind": "volume" if image.is_volume else "2d",
        "shape": [int(s) for s in image.array.shape],
        "spacing_mm": [round(float(s), 6) for s in image.spacing],
    }
    if image.is_volume:
        facts["slices"] = {
            p: num_slices(image.spatial_shape, p) for p in ("axial", "coronal", "sagittal")
        }
    return facts


class FileStore:
    """Uploads, reads and path checks under one data folder.

    Args:
        data_dir: The data folder.
        store: The database.
        max_bytes: Upload cap.
        deid: De-identify DICOM on arrival.
        deid_key: Key of the pseudonyms (``None``: ``$MEDM3_DEID_KEY`` or random).
        image_cache: Loaded images kept in memory.
        max_image_bytes: Largest decoded image (checked from headers before reading).
    """

    def __init__(
        self,
        data_dir: Path,
        store: Store,
        *,
        max_bytes: int,
        deid: bool = True,
        deid_key: str | None = None,
        image_cache: int = 4,
        max_image_bytes: int = 1 << 30,
    ) -> None:
        self.root = data_dir.resolve()
        self.store = store
        self.max_bytes = max_bytes
        self.deid = deid
        self.deid_key = deid_key
        self.max_image_bytes = max_image_bytes
        self.limits = server_limits(max_image_bytes)
        for sub in ("files", "library", "outputs", "state", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.clean_tmp()
        self._cache: OrderedDict[str, MedicalImage] = OrderedDict()
        self._cache_size = image_cache
        self._lock = threading.Lock()
        # Ingest (sniff, de-identify, read) at most two uploads at a time: bounded memory.
        self._ingest_slots = threading.BoundedSemaphore(2)

    # ----------------------------------------------------------------- paths
    def inside(self, path: Path) -> Path:
        """``path`` resolved; it must lie inside the data folder.

        Raises:
            APIError: HTTP 404 when it does not (nothing is said about what is there).
        """
        real = path.resolve()
        if not real.is_relative_to(self.root):
            raise not_found("no such file", code="file_not_found")
        return real

    def relative(self, path: str | os.PathLike[str]) -> str:
        """A path inside the data folder, relative to it, with ``/`` separators."""
        return self.inside(Path(path)).relative_to(self.root).as_posix()

    def record(self, file_id: str, *, param: str | None = None) -> FileRecord:
        """The record of ``file_id``.

        Raises:
            APIError: 400 for a malformed id, 404 for an unknown one.
        """
        if not isinstance(file_id, str) or not FILE_ID_RE.match(file_id):
            raise bad_request(f"invalid file id {str(file_id)[:80]!r}", param=param)
        rec = self.store.get_file(file_id)
        if rec is None:
            raise not_found(f"no file with id {file_id}", code="file_not_found", param=param)
        return rec

    def resolve(self, file_id: str, *, param: str | None = None) -> Path:
        """The stored path of ``file_id``, checked to be inside the data folder and present."""
        rec = self.record(file_id, param=param)
        path = self.inside(self.root / rec.path)
        if not path.exists():
            raise not_found(f"the content of {file_id} is gone", code="file_not_found")
        return path

    def output_path(self, owner: str, relative: str) -> Path:
        """A file of ``outputs/<owner>/``, checked (404 for anything outside or missing)."""
        if not OWNER_ID_RE.match(owner):
            raise not_found("no such output", code="output_not_found")
        parts = relative.replace("\\", "/").split("/")
        if not relative or any(p in ("", ".", "..") for p in parts):
            raise not_found("no such output", code="output_not_found")
        folder = self.inside(self.root / "outputs" / owner)
        path = self.inside(folder / Path(*parts))
        if not path.is_relative_to(folder) or not path.is_file():
            raise not_found("no such output", code="output_not_found")
        return path

    def output_dir(self, owner: str) -> Path:
        """``outputs/<owner>/`` (not created)."""
        if not OWNER_ID_RE.match(owner):
            raise bad_request(f"invalid id {owner[:80]!r}")
        return self.root / "outputs" / owner

    # ---------------------------------------------------------------- ingest
    def clean_tmp(self) -> int:
        """Remove what ``tmp/`` holds (partial uploads of a previous run); returns the count."""
        removed = 0
        for path in (self.root / "tmp").iterdir():
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed += 1
        return removed

    def tmp_path(self) -> Path:
        """A fresh path in ``tmp/`` for an incoming upload."""
        return self.root / "tmp" / uuid.uuid4().hex

    def ingest_bytes(self, data: bytes, filename: str, purpose: str) -> FileRecord:
        """Store bytes (a data URL's image) as an upload; identical PNG/JPEG bytes are
        stored once (clients resend the same image with every request)."""
        if len(data) > self.max_bytes:
            raise PayloadTooLargeError(self.max_bytes)
        same = self.store.find_file_by_sha(hashlib.sha256(data).hexdigest())
        if same is not None and same.kind in ("png", "jpeg"):
            with contextlib.suppress(APIError):
                self.resolve(same.id)
                return same
        tmp = self.tmp_path()
        tmp.write_bytes(data)
        return self.ingest(tmp, filename, purpose)

    def ingest_copy(self, src: Path, filename: str, purpose: str) -> FileRecord:
        """Store a copy of a local file (the web UI's uploads, which Gradio received)."""
        if src.stat().st_size > self.max_bytes:
            raise PayloadTooLargeError(self.max_bytes)
        tmp = self.tmp_path()
        shutil.copyfile(src, tmp)
        return self.ingest(tmp, filename, purpose)

    def ingest(self, tmp: Path, filename: str, purpose: str) -> FileRecord:
        """Sniff, de-identify, check and record a received file (``tmp`` is consumed).

        Raises:
            APIError: 415 for an unsupported type, 400 for an unreadable scan.
        """
        file_id = new_id("file")
        folder = self.root / "files" / file_id
        with self._ingest_slots:
            try:
                kind = sniff(tmp, self.limits, self.max_image_bytes)
                folder.mkdir(parents=True)
                final = folder / STORED_NAMES[kind]
                meta: dict[str, Any] = {}
                deidentified = False
                if kind in ("dicom", "dicom_zip") and self.deid:
                    meta["deid"] = self._deidentify(tmp, final)
                    deidentified = True
                else:
                    os.replace(tmp, final)
                image = self._load(final)
                if image.array.size == 0:
                    raise bad_request("the image is empty (a dimension of length 0)", param="file")
                meta.update(image_facts(image))
            except BaseException as exc:  # a reader failing on hostile content: bad input
                shutil.rmtree(folder, ignore_errors=True)
                raise read_error(exc) from None
            finally:
                tmp.unlink(missing_ok=True)
        record = FileRecord(
            id=file_id,
            filename=display_name(filename),
            kind="nifti" if kind == "nifti_gz" else kind,
            bytes=final.stat().st_size,
            sha256=_sha256(final),
            path=final.relative_to(self.root).as_posix(),
            purpose=purpose,
            deidentified=deidentified,
            meta=meta,
        )
        self.store.add_file(record)
        self._remember(file_id, image)
        return record

    def ingest_reference(
        self, reference: str, series: int | str | None, purpose: str, *, root: str | None
    ) -> FileRecord:
        """Retrieve a DICOMweb series and store it like an uploaded zip of its files
        (see :func:`medm3.serve.references.ingest_reference`)."""
        from medm3.serve.references import ingest_reference

        return ingest_reference(self, reference, series, purpose, root=root)

    def _deidentify(self, src: Path, dst: Path) -> dict[str, Any]:
        from medm3.imaging.deid import deidentify_path

        if dst.suffix == ".zip":
            # zip input: keep members apart from the zip itself for deidentify_path
            staged = src.with_suffix(".zip")
            os.replace(src, staged)
            src = staged
        import inspect

        extra = {"limits": self.limits}
        if "limits" not in inspect.signature(deidentify_path).parameters:
            extra = {}  # readers without archive limits: sniff() checked the zip already
        try:
            summary = deidentify_path(
                src, dst, key=self.deid_key, rename=dst.suffix == ".zip", **extra
            )
        finally:
            src.unlink(missing_ok=True)
        reports = [f.report for f in summary.files]
        return {
            "files": len(summary.files),
            "skipped": len(summary.skipped),
            "burned_in_risk": any(r.burned_in_risk for r in reports),
            "warnings": sorted({w for r in reports for w in r.warnings})[:20],
        }

    def register_library(self, relative: str) -> FileRecord:
        """Register a scan of ``library/`` as a file (once; later calls return the record).

        Library scans are used in place: they are not copied nor de-identified.

        Raises:
            APIError: 404 when ``relative`` is not a scan inside ``library/``.
        """
        library = self.inside(self.root / "library")
        parts = relative.replace("\\", "/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise not_found("no such library scan", code="file_not_found")
        path = self.inside(library / Path(*parts))
        if not path.is_relative_to(library) or not path.is_file():
            raise not_found("no such library scan", code="file_not_found")
        rel = path.relative_to(self.root).as_posix()
        existing = self.store.find_file_by_path(rel)
        if existing is not None:
            return existing
        try:
            kind = sniff(path, self.limits, self.max_image_bytes)
            image = self._load(path)
        except Exception as exc:
            raise read_error(exc) from None
        record = FileRecord(
            id=new_id("file"),
            filename=display_name(path.name),
            kind="nifti" if kind == "nifti_gz" else kind,
            bytes=path.stat().st_size,
            sha256=_sha256(path),
            path=rel,
            purpose="library",
            meta=image_facts(image),
        )
        self.store.add_file(record)
        self._remember(record.id, image)
        return record

    def library(self) -> list[str]:
        """Scans in ``library/`` (relative names), sorted; links leading outside are skipped."""
        library = self.root / "library"
        found: list[str] = []
        for path in sorted(library.rglob("*")):
            name = path.name.lower()
            if not name.endswith(LIBRARY_SUFFIXES):
                continue
            with contextlib.suppress(APIError, OSError):
                if self.inside(path).is_file():
                    found.append(path.relative_to(library).as_posix())
            if len(found) >= 500:
                break
        return found

    def delete(self, file_id: str) -> None:
        """Remove an upload's record and content (library scans are left in place)."""
        self.record(file_id)
        self.store.delete_file(file_id)
        with self._lock:
            self._cache.pop(file_id, None)
        folder = self.root / "files" / file_id
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ read
    def _load(self, path: Path) -> MedicalImage:
        """Read a scan (``source`` stays the stored path: the PHI guard of remote
        backends re-reads DICOM headers from it)."""
        from medm3.imaging.io import load_image

        return load_image(path, limits=self.limits)

    def _remember(self, file_id: str, image: MedicalImage) -> None:
        with self._lock:
            self._cache[file_id] = image
            self._cache.move_to_end(file_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def image(self, file_id: str, *, param: str | None = None) -> MedicalImage:
        """The loaded image of ``file_id`` (kept in a small cache).

        Raises:
            APIError: Unknown file (404), unreadable scan (400).
        """
        with self._lock:
            if file_id in self._cache:
                self._cache.move_to_end(file_id)
                return self._cache[file_id]
        path = self.resolve(file_id, param=param)
        try:
            image = self._load(path)
        except Exception as exc:
            raise read_error(exc) from None
        self._remember(file_id, image)
        return image


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
