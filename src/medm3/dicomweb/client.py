"""A ``dicomweb-client`` connection with medm3's settings and one-line errors.

Every call to the server goes through :func:`server_call`, which turns the
ways a request fails (server down, TLS, credentials, unknown UID, HTTP
errors) into :class:`~medm3.errors.InputError` lines that name the server.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from medm3.dicomweb.config import ENV_CA_BUNDLE, ENV_TOKEN, ENV_USER, settings_for
from medm3.errors import InputError, MissingDependencyError


class PacsUnavailableError(InputError):
    """The DICOMweb server cannot be reached or did not answer in time."""


class PacsRefusedError(InputError):
    """The DICOMweb server refused the request (credentials, TLS, an HTTP error)."""


class PacsNotFoundError(InputError):
    """The study or series is not on the DICOMweb server."""


#: Seconds to wait for the server to connect / to answer.
TIMEOUT = (10.0, 300.0)


def connect(root: str) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for the server at ``root``.

    Args:
        root: DICOMweb root URL (``https://host/dicom-web``).

    Returns:
        The client, authenticated with the credentials from
        :func:`medm3.dicomweb.config.settings_for`, with HTTP retries off
        (errors surface at once) and a timeout.

    Raises:
        MissingDependencyError: dicomweb-client is not installed.
        InputError: Bad configuration.
    """
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise MissingDependencyError("dicomweb-client", "dicomweb", "DICOMweb access") from None
    settings = settings_for(root)
    session = requests.Session()
    if settings.token:
        session.headers["Authorization"] = f"Bearer {settings.token}"
    elif settings.username:
        session.auth = (settings.username, settings.password or "")
    # Per request: a session-level verify loses to $REQUESTS_CA_BUNDLE in requests.
    verify = settings.ca_bundle or None
    session.request = _with_defaults(session.request, verify)  # type: ignore[method-assign]
    client = DICOMwebClient(url=root, session=session)
    client.set_http_retry_params(retry=False)
    client.medm3_auth_origin = settings.origin  # type: ignore[attr-defined]
    return client


def _with_defaults(request: Any, verify: str | None) -> Any:
    def call(method: str, url: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", TIMEOUT)
        if verify is not None:
            kwargs["verify"] = verify
        return request(method, url, **kwargs)

    return call


def _short(exc: BaseException) -> str:
    """The most telling part of a requests/urllib3 error, on one line."""
    text = " ".join(str(exc).split())
    for pattern in (
        r"\[SSL: [A-Z_]+\] ([^(\]'\"]+)",
        r"(certificate verify failed[^'\")]*)",
        r"(wrong version number)",
        r"(Connection refused)",
        r"(Name or service not known|nodename nor servname provided|No address associated)",
        r"(timed out)",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip(" :")
    return text[:200]


@contextlib.contextmanager
def server_call(root: str, what: str) -> Iterator[None]:
    """Translate request failures into one-line :class:`InputError` messages.

    Args:
        root: The server's DICOMweb root (named in messages).
        what: What was being done, e.g. ``"listing the series of study 1.2.3"``.

    Raises:
        InputError: For connection, TLS, authentication and HTTP errors.
    """
    import requests

    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise PacsRefusedError(
            f"TLS error while {what}: {_short(exc)} (for a private certificate authority set "
            f"{ENV_CA_BUNDLE} or ca_bundle in the config file)",
            root,
        ) from None
    except requests.exceptions.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
        stage = (
            "timed out connecting to the DICOMweb server"
            if isinstance(exc, requests.exceptions.ConnectTimeout)
            else "the DICOMweb server did not answer in time"
        )
        raise PacsUnavailableError(f"{stage} while {what}", root) from None
    except requests.exceptions.ConnectionError as exc:
        raise PacsUnavailableError(
            f"cannot reach the DICOMweb server while {what}: {_short(exc)} "
            "(is it running, and are the host and port right?)",
            root,
        ) from None
    except requests.exceptions.HTTPError as exc:
        code = getattr(getattr(exc, "response", None), "status_code", None)
        kind = PacsNotFoundError if code == 404 else PacsRefusedError
        raise kind(_http_message(exc, what), root) from None


def _http_message(exc: Any, what: str) -> str:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    reason = getattr(response, "reason", "") or ""
    if code == 401:
        return (
            f"the DICOMweb server refused the credentials (HTTP 401) while {what}; set "
            f"{ENV_USER}/MEDM3_DICOMWEB_PASSWORD or {ENV_TOKEN}, or the config file "
            "(see docs/pacs.md)"
        )
    if code == 403:
        return f"access forbidden (HTTP 403) while {what}: the account lacks the permission"
    if code == 404:
        return f"not found on the server (HTTP 404) while {what}"
    return f"the DICOMweb server answered HTTP {code} {reason} while {what}".replace("  ", " ")
