"""API-key authentication, the open-bind guard and ``Host`` names.

Clients send ``Authorization: Bearer KEY`` (what the ``openai`` client does) or
``X-API-Key: KEY``. Keys are compared in constant time. A server that binds to
anything but a loopback address refuses to start without at least one key.
The checks run in :mod:`medm3.serve.guard` before any request body is read.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from medm3.errors import InputError

#: ``Host`` names accepted by a loopback server unless configured otherwise.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``).

    Args:
        host: Host name or address as given to the server.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_keys: Sequence[str]) -> None:
    """Refuse to serve on a non-loopback interface without API keys.

    Raises:
        InputError: ``host`` is not loopback and ``api_keys`` is empty.
    """
    if not api_keys and not is_loopback(host):
        raise InputError(
            f"refusing to listen on {host} without an API key: anyone who can reach it could "
            "use the model and read uploaded scans. Pass --api-key KEY (or set MEDM3_API_KEY), "
            "or bind to 127.0.0.1"
        )


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents (bearer token first), or None."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def key_is_valid(presented: str | None, api_keys: Sequence[str]) -> bool:
    """Whether ``presented`` is one of ``api_keys`` (constant-time comparison).

    Returns:
        True when no keys are configured (authentication off).
    """
    if not api_keys:
        return True
    if presented is None:
        return False
    given = presented.encode("utf-8", "surrogatepass")
    ok = False
    for key in api_keys:  # no early exit: the time does not reveal which key matched
        ok |= hmac.compare_digest(given, key.encode("utf-8", "surrogatepass"))
    return ok


def key_index(presented: str | None, api_keys: Sequence[str]) -> int | None:
    """Index of the key ``presented`` in ``api_keys`` (constant time), or None."""
    if presented is None:
        return None
    given = presented.encode("utf-8", "surrogatepass")
    found = None
    for i, key in enumerate(api_keys):  # no early exit
        if hmac.compare_digest(given, key.encode("utf-8", "surrogatepass")):
            found = i
    return found


def key_owner(key: str) -> str:
    """A short fingerprint of an API key that owns sessions (the key itself is never stored)."""
    import hashlib

    return hashlib.sha256(
        b"medm3-session-owner:" + key.encode("utf-8", "surrogatepass")
    ).hexdigest()[:24]


def host_name(value: str) -> str | None:
    """The host of a ``Host`` header or an origin's authority, lower case, without port.

    Returns:
        None for a malformed value.
    """
    value = value.strip().lower()
    if not value or any(ch in value for ch in "/@ \t\\"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        return value[1:end]
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def host_allowed(name: str | None, allowed: Sequence[str]) -> bool:
    """Whether host ``name`` matches the allow-list (``*``, exact names, ``*.suffix``)."""
    if name is None:
        return False
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        if entry.startswith("*.") and name.endswith(entry[1:]):
            return True
    return False


class UiLogins:
    """Sign-ins of the web UI: any user name, an API key as password.

    With several keys, a user name belongs to the key that first signed in with
    it (until the server restarts, as Gradio's own sign-ins do), so the name of
    a signed-in request tells which key it acts for, and the UI's sessions are
    bound to that key exactly as the HTTP API binds them (:func:`key_owner`).
    Another key signing in with a taken name is refused.

    Args:
        api_keys: The server's keys (none: no sign-in; one: no binding needed).
    """

    def __init__(self, api_keys: Sequence[str]) -> None:
        import threading

        self.api_keys = tuple(api_keys)
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def check(self, user: str, password: str) -> bool:
        """Gradio's ``auth`` callback: a valid key, and the name not taken by another key."""
        index = key_index(password, self.api_keys)
        if index is None:
            return False
        if len(self.api_keys) < 2:
            return True
        owner = key_owner(self.api_keys[index])
        with self._lock:
            return self._owners.setdefault(user, owner) == owner

    def owner(self, user: str | None) -> str | None:
        """The session owner of a signed-in user (None with fewer than two keys).

        Raises:
            APIError: 401 for a user name no key signed in with (sign in again).
        """
        if len(self.api_keys) < 2:
            return None
        with self._lock:
            found = self._owners.get(user or "")
        if found is None:
            from medm3.serve.errors import APIError

            raise APIError(
                401, "sign in again", type="authentication_error", code="invalid_api_key"
            )
        return found
