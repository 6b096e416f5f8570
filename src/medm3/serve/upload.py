"""Streaming ``multipart/form-data`` reception for ``POST /v1/files`` (and its JSON body
for an upload by DICOMweb reference, :func:`receive_reference`).

The body is parsed as it arrives (``python-multipart``'s low-level parser):
the ``file`` part is written straight into the data folder's ``tmp/`` and the
upload is refused (HTTP 413) the moment it exceeds the cap, so an oversized or
endless upload never fills a disk or memory. Other parts (``purpose``) are
small form fields, capped at 4 KiB each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from medm3.serve.errors import APIError, PayloadTooLargeError, bad_request

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request

_FIELD_CAP = 4096


@dataclass
class Received:
    """The parts of one upload request.

    Attributes:
        path: Where the file part was written (None when there was none).
        filename: The client's file name of the file part.
        size: Bytes of the file part.
        fields: The other (text) fields.
    """

    path: Path | None = None
    filename: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


class _Sink:
    """Callbacks of the multipart parser."""

    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.out = Received()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._fh: IO[bytes] | None = None
        self._value = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self._headers = {}
        self._header_field = self._header_value = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._is_file = self._name == "file" and filename is not None
        self._value = bytearray()
        if self._is_file:
            if self.out.path is not None:
                raise bad_request("send one file per request", param="file")
            self.out.filename = (filename or b"").decode("utf-8", "replace")
            self.out.path = self.dest
            self._fh = open(self.dest, "wb")  # noqa: SIM115 - closed in part_end/close

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.out.size += end - start
            if self.out.size > self.max_bytes:
                raise PayloadTooLargeError(self.max_bytes, param="file")
            assert self._fh is not None
            self._fh.write(data[start:end])
        else:
            self._value += data[start:end]
            if len(self._value) > _FIELD_CAP:
                raise bad_request(f"form field {self._name!r} is too long", param=self._name)

    def part_end(self) -> None:
        if self._is_file:
            self.close()
        elif self._name:
            self.out.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


async def receive_upload(request: Request, dest: Path, max_bytes: int) -> Received:
    """Parse a multipart upload, writing its ``file`` part to ``dest``.

    Args:
        request: The incoming request.
        dest: Where the file part goes (removed again on any failure).
        max_bytes: Cap of the file part.

    Returns:
        The file part's location, name and size, and the other fields.

    Raises:
        APIError: Not multipart (400), too large (413), malformed (400).
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.requests import ClientDisconnect

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise bad_request(
            "send the file as multipart/form-data with a 'file' part, or a PACS series as "
            'JSON {"dicomweb": "dicomweb+https://..."}',
            param="file",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLargeError(max_bytes, param="file")
    sink = _Sink(dest, max_bytes)
    parser = MultipartParser(boundary, sink.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        sink.close()
        dest.unlink(missing_ok=True)
        raise bad_request(f"malformed multipart body: {exc}") from None
    except ClientDisconnect:  # the partial file goes; nobody is left to answer
        sink.close()
        dest.unlink(missing_ok=True)
        raise APIError(499, "the client went away during the upload", code="cancelled") from None
    except BaseException:
        sink.close()
        dest.unlink(missing_ok=True)
        raise
    sink.close()
    return sink.out


#: Largest JSON body of an upload by reference.
REFERENCE_BODY_CAP = 16 * 1024


def is_json(request: Request) -> bool:
    """Whether the request body is declared as JSON (an upload by reference)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == (
        "application/json"
    )


async def receive_reference(request: Request) -> tuple[str, int | str | None, str]:
    """Parse ``{"dicomweb": REF, "series": CHOICE, "purpose": TEXT}`` (an upload by reference).

    Returns:
        ``(reference, series choice or None, purpose)``.

    Raises:
        APIError: 413 beyond 16 KiB; 400 for anything but that object with a string reference.
    """
    import json

    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > REFERENCE_BODY_CAP:
            raise PayloadTooLargeError(REFERENCE_BODY_CAP, param="dicomweb")
    try:
        data = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the body is not valid JSON", param="dicomweb") from None
    if not isinstance(data, dict) or set(data) - {"dicomweb", "series", "purpose"}:
        raise bad_request(
            'send {"dicomweb": "dicomweb+https://HOST/ROOT/studies/UID[/series/UID]", '
            '"series": optional, "purpose": optional}',
            param="dicomweb",
        )
    reference = data.get("dicomweb")
    if not isinstance(reference, str) or not reference:
        raise bad_request("'dicomweb' must be a DICOMweb reference string", param="dicomweb")
    series = data.get("series")
    if series is not None and (
        isinstance(series, bool)
        or not isinstance(series, (int, str))
        or (isinstance(series, str) and not (0 < len(series) <= 256 and series.isprintable()))
    ):
        raise bad_request(
            "'series' must be an index, a SeriesInstanceUID or a description", param="series"
        )
    purpose = data.get("purpose", "user_data")
    if not isinstance(purpose, str):
        raise bad_request("'purpose' must be a string", param="purpose")
    return reference, series, purpose[:64] or "user_data"
