"""DICOMweb references: ``dicomweb+http(s)://HOST/ROOT/studies/UID[/series/UID]``.

The ``dicomweb+`` prefix marks a reference as a remote study (so it cannot be
confused with a file name); what follows it is the ordinary HTTP(S) URL of the
study or series on the server. Everything before ``/studies/`` is the
server's DICOMweb root (``https://pacs.example.org/dicom-web``). ``http`` is
accepted only for loopback hosts unless ``MEDM3_DICOMWEB_ALLOW_HTTP=1``:
patient data must not cross a network in clear text.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from medm3.errors import InputError

#: Scheme prefix that marks a DICOMweb reference.
PREFIX = "dicomweb+"
# pathlib collapses "//" to "/", so a reference that went through Path() is accepted too.
_REF = re.compile(r"^dicomweb\+(https?):/+(.+)$", re.IGNORECASE)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_dicomweb_reference(value: object) -> bool:
    """Whether ``value`` (a string or path) is a ``dicomweb+http(s)://`` reference.

    Args:
        value: Anything a command was given as an image.

    Returns:
        True for a DICOMweb reference, also after ``pathlib.Path`` collapsed its ``//``.
    """
    try:
        text = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return isinstance(text, str) and bool(_REF.match(text))


@dataclass(frozen=True)
class DicomwebRef:
    """A study (and optionally one series) on a DICOMweb server.

    Attributes:
        root: The server's DICOMweb root URL (``https://host/dicom-web``).
        study_uid: StudyInstanceUID, or None for the server itself (``m3 dicomweb ls``).
        series_uid: SeriesInstanceUID, or None for the whole study.
    """

    root: str
    study_uid: str | None = None
    series_uid: str | None = None

    @property
    def reference(self) -> str:
        """The reference as a user writes it (``dicomweb+https://...``)."""
        text = PREFIX + self.root
        if self.study_uid:
            text += f"/studies/{self.study_uid}"
        if self.series_uid:
            text += f"/series/{self.series_uid}"
        return text

    @property
    def host(self) -> str:
        """``host[:port]`` of the server (for messages)."""
        return urlsplit(self.root).netloc


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_reference(value: str | os.PathLike[str], *, need_study: bool = True) -> DicomwebRef:
    """Parse a DICOMweb reference.

    Args:
        value: ``dicomweb+https://HOST/ROOT/studies/UID[/series/UID]`` (or, with
            ``need_study=False``, just ``dicomweb+https://HOST/ROOT``).
        need_study: Whether the reference must name a study.

    Returns:
        The parsed reference.

    Raises:
        InputError: Not a DICOMweb reference, no study, a malformed UID,
            credentials in the URL, or plain ``http`` to a non-loopback host.
    """
    text = os.fspath(value)
    match = _REF.match(text)
    if not match:
        raise InputError(
            "not a DICOMweb reference (expected dicomweb+https://HOST/dicom-web/studies/UID)", text
        )
    scheme, rest = match.group(1).lower(), match.group(2)
    parts = urlsplit(f"{scheme}://{rest}")
    if parts.username or parts.password:
        raise InputError(
            "credentials do not belong in the reference (they would end up in the shell "
            "history); use MEDM3_DICOMWEB_USER/MEDM3_DICOMWEB_PASSWORD, MEDM3_DICOMWEB_TOKEN "
            "or the config file (see docs/pacs.md)",
            PREFIX + f"{scheme}://{parts.hostname or ''}",
        )
    if not parts.hostname:
        raise InputError("the DICOMweb reference has no host", text)
    allow_http = os.environ.get("MEDM3_DICOMWEB_ALLOW_HTTP", "").strip() in ("1", "true", "yes")
    if scheme == "http" and not _loopback(parts.hostname) and not allow_http:
        raise InputError(
            "plain http is only allowed to this machine (localhost); use dicomweb+https, "
            "or set MEDM3_DICOMWEB_ALLOW_HTTP=1 on a trusted network",
            text,
        )
    if parts.query or parts.fragment:
        raise InputError("the DICOMweb reference must not have a query or fragment", text)
    segments = [s for s in parts.path.split("/") if s]
    study = series = None
    if "studies" in segments:
        i = segments.index("studies")
        tail = segments[i + 1 :]
        root_segments = segments[:i]
        if not tail:
            raise InputError("the reference ends in /studies/ without a StudyInstanceUID", text)
        study = tail[0]
        if len(tail) >= 2:
            if tail[1] != "series" or len(tail) != 3:
                raise InputError(
                    "expected .../studies/STUDY_UID or .../studies/STUDY_UID/series/SERIES_UID",
                    text,
                )
            series = tail[2]
        for name, uid in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
            if uid is not None and (not _UID.match(uid) or len(uid) > 64):
                raise InputError(f"{uid!r} is not a valid {name}", text)
    else:
        root_segments = segments
        if need_study:
            raise InputError(
                "the reference names no study (expected .../studies/STUDY_UID[/series/UID]; "
                "list studies with: m3 dicomweb ls URL)",
                text,
            )
    root = f"{scheme}://{parts.netloc}" + "".join(f"/{s}" for s in root_segments)
    return DicomwebRef(root=root, study_uid=study, series_uid=series)


class ForeignReferenceError(InputError):
    """A well-formed reference to another server or outside the allowed DICOMweb root."""


_STRICT_REF = re.compile(r"^dicomweb\+(https?)://([^/]*)(/.*)?$", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _endpoint(scheme: str, netloc: str, text: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a URL's authority, strictly (no userinfo, a numeric port)."""
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        raise InputError("the reference has a malformed host or port", text) from None
    if not parts.hostname:
        raise InputError("the reference has no host", text)
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def reference_under_root(value: object, root: str) -> DicomwebRef:
    """Check that a client's reference lies under the allowed DICOMweb ``root``; parse it.

    This is the server-side request-forgery guard of references sent by
    clients: nothing is fetched for a reference that fails it. The reference
    must be plain printable ASCII without percent-encodings, backslashes,
    userinfo, query or fragment, with no empty, ``.`` or ``..`` path segments,
    and name the same scheme, host and port (default ports made explicit,
    host case ignored) as ``root``, and a path that starts with ``root``'s
    path followed by ``/studies/``.

    Args:
        value: The client's reference (``dicomweb+https://HOST/ROOT/studies/UID[/series/UID]``).
        root: The allowed root (``dicomweb+https://HOST/ROOT`` or ``https://HOST/ROOT``).

    Returns:
        The parsed reference, its root spelled as ``root``'s.

    Raises:
        ForeignReferenceError: A well-formed reference to another server, port or path.
        InputError: A malformed or oddly encoded reference.
    """
    allowed = parse_reference(root if root.startswith(PREFIX) else PREFIX + root, need_study=False)
    if not isinstance(value, str) or not value:
        raise InputError("the DICOMweb reference must be a non-empty string")
    if len(value) > 1024 or not value.isascii() or not value.isprintable():
        raise InputError("the DICOMweb reference must be printable ASCII of at most 1024 chars")
    shown = value[:200]
    for bad, what in (("%", "percent-encodings"), ("\\", "backslashes"), (" ", "spaces")):
        if bad in value:
            raise InputError(f"the DICOMweb reference must not contain {what}", shown)
    if "#" in value or "?" in value:
        raise InputError("the DICOMweb reference must not have a query or fragment", shown)
    match = _STRICT_REF.match(value)
    if not match:
        raise InputError(
            "not a DICOMweb reference (expected dicomweb+https://HOST/ROOT/studies/UID)", shown
        )
    scheme, netloc, path = match.group(1).lower(), match.group(2), match.group(3) or ""
    if "@" in netloc:
        raise InputError("the reference must not hold credentials (user@host)", PREFIX + scheme)
    segments = path.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments):
        raise InputError("the reference path must not hold empty, '.' or '..' segments", shown)
    own = urlsplit(allowed.root)
    mine = _endpoint(scheme, netloc, shown)
    if mine != _endpoint(own.scheme, own.netloc, allowed.root):
        raise ForeignReferenceError("the reference names another server than the allowed PACS")
    prefix = [s for s in own.path.split("/") if s]
    if segments[: len(prefix)] != prefix or segments[len(prefix) : len(prefix) + 1] != ["studies"]:
        raise ForeignReferenceError(
            "the reference is outside the allowed DICOMweb root (expected ROOT/studies/UID)"
        )
    ref = parse_reference(PREFIX + allowed.root + "/" + "/".join(segments[len(prefix) :]))
    return DicomwebRef(root=allowed.root, study_uid=ref.study_uid, series_uid=ref.series_uid)
