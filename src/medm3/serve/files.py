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
import io
import logging
import os
import re
import shutil
import threading
import uuid
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import MedM3Error
from medm3.serve.errors import (
    APIError,
    PayloadTooLargeError,
    UnsupportedMediaError,
    bad_request,
    from_medm3_error,
    not_found,
)
from medm3.serve.store import FileRecord, Store

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage
    from medm3.imaging.limits import ReadLimits

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
ACCEPTED_TEXT = "NIfTI (.nii, .nii.gz), a DICOM file, a zip of DICOM files, PNG or JPEG"

_NIFTI1_MAGIC = (b"n+1\x00",)
_NIFTI2_MAGIC = (b"n+2\x00",)
_CHUNK = 1 << 20


def new_id(prefix: str) -> str:
    """A fresh id such as ``file-3f2a...`` (24 hex digits)."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _is_nifti(head: bytes) -> bool:
    return head[344:348] in _NIFTI1_MAGIC or head[4:8] in _NIFTI2_MAGIC


def _gunzip_head(head: bytes) -> bytes:
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1024)
    except zlib.error:
        return b""


def _zip_has_dicom(path: Path, limits: ReadLimits | None = None) -> bool:
    from medm3.imaging.archive import check_members, is_unsafe_name

    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if any(is_unsafe_name(i.filename) for i in infos):
                raise bad_request("the zip archive has member names outside its folder")
            if limits is not None:  # declared sizes and ratios, before decompressing anything
                try:
                    check_members(archive.infolist(), limits, "upload")
                except MedM3Error as exc:
                    raise from_medm3_error(exc) from None
            for info in infos[:64]:
                if info.flag_bits & 0x1:
                    raise bad_request("encrypted zip archives are not accepted")
                with archive.open(info) as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        return True
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        raise bad_request(f"cannot read the zip archive: {exc}") from None
    return False


def nifti_declared_bytes(head: bytes) -> int:
    """Bytes of the voxels a NIfTI-1/2 header declares (0 when it cannot be read)."""
    import numpy as np

    try:
        import nibabel as nib

        cls = nib.Nifti2Header if head[4:8] in _NIFTI2_MAGIC else nib.Nifti1Header
        size = 540 if cls is nib.Nifti2Header else 348
        header = cls.from_fileobj(io.BytesIO(head[:size]), check=False)
        dims = header["dim"]
        ndim = int(dims[0])
        if not 0 < ndim <= 7:
            return 0
        samples = int(np.prod([max(int(d), 0) for d in dims[1 : ndim + 1]], dtype=object))
        return samples * max(int(header["bitpix"]) // 8, 1)
    except Exception:  # the reader reports a broken header with its own message
        return 0


def sniff(path: Path, limits: ReadLimits | None = None, max_image_bytes: int | None = None) -> str:
    """Detect the kind of an uploaded file from its content.

    Args:
        path: The received file.
        limits: Read limits; zip members are checked against them (declared
            sizes and compression ratios) before anything is decompressed.
        max_image_bytes: Largest voxel data a NIfTI header may declare.

    Returns:
        A key of :data:`STORED_NAMES`.

    Raises:
        APIError: HTTP 415 for anything else, 400 for an unusable zip, 413 for
            a file declaring more than the limits.
    """
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    kind = None
    if _is_nifti(head):
        kind, header = "nifti", head
    elif head.startswith(b"\x1f\x8b"):
        header = _gunzip_head(head)
        kind = "nifti_gz" if _is_nifti(header) else None
    if kind is not None:
        declared = nifti_declared_bytes(header)
        if max_image_bytes is not None and declared > max_image_bytes:
            raise APIError(
                413,
                f"the NIfTI header declares {declared:,} bytes of voxels, more than the "
                f"server's limit of {max_image_bytes:,}",
                code="image_too_large",
            )
        return kind
    if head.startswith(b"PK\x03\x04"):
        if _zip_has_dicom(path, limits):
            return "dicom_zip"
        raise UnsupportedMediaError("the zip archive holds no DICOM file (DICM marker)")
    raise UnsupportedMediaError(f"unsupported file type; accepted: {ACCEPTED_TEXT}")


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
        self.limits = _server_limits(max_image_bytes)
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
            except MedM3Error as exc:
                shutil.rmtree(folder, ignore_errors=True)
                raise from_medm3_error(exc) from None
            except APIError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            except Exception as exc:  # a reader failing on hostile content: still bad input
                shutil.rmtree(folder, ignore_errors=True)
                raise unreadable(exc) from None
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
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

    def _deidentify(self, src: Path, dst: Path) -> dict[str, Any]:
        from medm3.imaging.deid import deidentify_path

        if dst.suffix == ".zip":
            # zip input: keep members apart from the zip itself for deidentify_path
            staged = src.with_suffix(".zip")
            os.replace(src, staged)
            src = staged
        try:
            summary = deidentify_path(src, dst, key=self.deid_key, rename=dst.suffix == ".zip")
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
        except MedM3Error as exc:
            raise from_medm3_error(exc) from None
        except APIError:
            raise
        except Exception as exc:
            raise unreadable(exc) from None
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
        except MedM3Error as exc:
            raise from_medm3_error(exc) from None
        except Exception as exc:
            raise unreadable(exc) from None
        self._remember(file_id, image)
        return image


def unreadable(exc: Exception) -> APIError:
    """HTTP 400 for a scan a reader failed on with an unexpected error (logged in one line)."""
    log.warning("unreadable upload: %s: %s", type(exc).__name__, str(exc).splitlines()[:1])
    return bad_request(
        f"the file cannot be read as an image ({type(exc).__name__})", param="file"
    )


def _server_limits(max_image_bytes: int) -> ReadLimits:
    """The environment's read limits, tightened to the server's decoded-image cap
    (samples are counted at 4 bytes: readers work in float32)."""
    from medm3.imaging.limits import ReadLimits

    base = ReadLimits.from_env()
    return ReadLimits.from_env(
        max_pixels=max(min(base.max_pixels, max_image_bytes // 4), 1),
        max_member_bytes=max(min(base.max_member_bytes, max_image_bytes), 1),
        max_total_bytes=max(min(base.max_total_bytes, max_image_bytes), 1),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
