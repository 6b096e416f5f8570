"""Uploads by DICOMweb reference (``POST /v1/files {"dicomweb": ...}``, the UI's PACS panel):
the series is retrieved through :mod:`medm3.dicomweb` and stored like an uploaded zip."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from medm3.errors import MedM3Error
from medm3.serve.errors import APIError, bad_request, from_medm3_error, not_found

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.files import FileStore
    from medm3.serve.store import FileRecord


def ingest_reference(
    files: FileStore,
    reference: str,
    series: int | str | None,
    purpose: str,
    *,
    root: str | None,
) -> FileRecord:
    """Retrieve a DICOMweb series and store it like an uploaded zip of its files.

    The series goes through the instance cache, series choice and read
    limits of :mod:`medm3.dicomweb` (with the store's limits), then
    :meth:`FileStore.ingest` (sniffing, de-identification, checks) as ``pacs-series.zip``.

    Args:
        files: The file store.
        reference: ``dicomweb+https://HOST/ROOT/studies/UID[/series/UID]``.
        series: Series choice for a study reference (index, UID or description).
        purpose: The file's purpose.
        root: The server's allowed DICOMweb root; the reference must lie under it
            (checked before any request). None: no PACS configured (refused).

    Raises:
        APIError: 400 (no PACS configured, malformed reference, unusable series),
            403 (another server or path), 404 (unknown study/series), 413 (over
            the limits), 502 (the PACS refused), 503 (the PACS is unreachable).
    """
    import tempfile
    import zipfile

    from medm3.dicomweb.url import reference_under_root
    from medm3.imaging.io import load_image

    if not root:
        raise bad_request(
            "this server has no PACS configured (start it with m3 serve --dicomweb URL)",
            param="dicomweb",
            code="dicomweb_not_configured",
        )
    try:
        ref = reference_under_root(reference, root)
        image = load_image(ref.reference, series=series, limits=files.limits)
    except MedM3Error as exc:
        raise pacs_error(exc) from None
    sources = image.metadata.get("source_files") or [image.source]
    with tempfile.TemporaryDirectory(prefix="m3-pacs-", dir=files.root / "tmp") as tmp:
        archive = Path(tmp) / "series.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for i, path in enumerate(sources):
                zf.write(path, f"{i:05d}.dcm")
        return files.ingest_copy(archive, "pacs-series.zip", purpose)


def pacs_error(exc: MedM3Error) -> APIError:
    """The HTTP error of a failed DICOMweb retrieval: one line, no URL, path or credential."""
    from medm3.dicomweb.client import PacsNotFoundError, PacsRefusedError, PacsUnavailableError
    from medm3.dicomweb.url import ForeignReferenceError
    from medm3.errors import InputError

    message = exc.message
    with contextlib.suppress(Exception):
        from medm3.dicomweb.fetch import cache_dir

        message = message.replace(str(cache_dir()), "<cache>")
    message = " ".join(message.split())[:500]
    param = "dicomweb"
    if isinstance(exc, ForeignReferenceError):
        return APIError(403, message, code="dicomweb_forbidden", param=param)
    if isinstance(exc, PacsUnavailableError):
        return APIError(503, f"PACS: {message}", type="server_error", code="pacs_unavailable")
    if isinstance(exc, PacsRefusedError):
        return APIError(502, f"PACS: {message}", type="server_error", code="pacs_error")
    if isinstance(exc, PacsNotFoundError):
        return not_found(f"PACS: {message}", code="dicomweb_not_found", param=param)
    if isinstance(exc, InputError):
        err = from_medm3_error(InputError(message))
        err.param = param
        return err
    return from_medm3_error(exc)
