"""API-key authentication and the open-bind guard.

Clients send ``Authorization: Bearer KEY`` (what the ``openai`` client does) or
``X-API-Key: KEY``. Keys are compared in constant time. A server that binds to
anything but a loopback address refuses to start without at least one key.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from medm3.errors import InputError


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
