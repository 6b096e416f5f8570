"""Secret keys and keyed replacements: ``2.25.`` UIDs and pseudonyms (HMAC-SHA256).

The same input and key always give the same output, so study, series and patient
relationships survive de-identification across files and runs that share a key, while
nobody without the key can recompute (or confirm a guess of) an original value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from medm3.errors import InputError

#: Environment variable read for the key when none is passed explicitly.
KEY_ENV_VAR = "MEDM3_DEID_KEY"

#: Prefix of pseudonymised identifiers (Patient ID, Accession Number, Study ID, ...).
ID_PREFIX = "ANON-"

#: Family name of pseudonymised person names: ``ANONYMOUS^<pseudonym>``.
NAME_PREFIX = "ANONYMOUS^"

_PSEUDONYM_HEX = 10  # "ANON-" + 10 hex digits = 15 characters, within SH's 16.


def resolve_key(key: str | bytes | None = None) -> tuple[bytes, bool]:
    """Choose the secret key: the argument, else ``$MEDM3_DEID_KEY``, else a random one.

    A random key is new for every call, so UIDs and pseudonyms it produces cannot be
    linked with those of any other run (or any other call).

    Args:
        key: The key as text (UTF-8 encoded) or bytes, or None.

    Returns:
        The key bytes and whether they were generated at random.

    Raises:
        InputError: The key given (or found in the environment) is empty.
    """
    if key is None:
        key = os.environ.get(KEY_ENV_VAR) or None
        if key is None:
            return secrets.token_bytes(32), True
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not data:
        raise InputError("the de-identification key must not be empty")
    return data, False


class Remapper:
    """Keyed, consistent replacements for UIDs and identifiers.

    Args:
        key: Secret key bytes (see :func:`resolve_key`).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._uids: dict[str, str] = {}
        self._ids: dict[str, str] = {}

    def _digest(self, domain: bytes, value: str) -> bytes:
        return hmac.new(
            self._key, domain + b"\x00" + value.encode("utf-8"), hashlib.sha256
        ).digest()

    def uid(self, value: str) -> str:
        """Return the ``2.25.`` UID that replaces ``value`` under this key.

        Args:
            value: The original UID (surrounding spaces and NULs are ignored).

        Returns:
            ``2.25.`` followed by the decimal value of 128 bits of the keyed hash.
        """
        value = value.strip(" \x00")
        new = self._uids.get(value)
        if new is None:
            number = int.from_bytes(self._digest(b"uid", value)[:16], "big")
            new = self._uids[value] = f"2.25.{number}"
        return new

    def pseudonym(self, value: str) -> str:
        """Return the keyed pseudonym (upper-case hex, no prefix) of an identifier.

        Args:
            value: The original identifier or name (surrounding spaces are ignored).

        Returns:
            A 10-character upper-case hexadecimal pseudonym.
        """
        value = value.strip(" \x00")
        new = self._ids.get(value)
        if new is None:
            new = self._ids[value] = self._digest(b"id", value).hex()[:_PSEUDONYM_HEX].upper()
        return new
