"""Credentials and TLS settings for DICOMweb servers (never on the command line).

Looked up in this order, first match wins:

1. Environment variables: ``MEDM3_DICOMWEB_TOKEN`` (bearer token) or
   ``MEDM3_DICOMWEB_USER`` + ``MEDM3_DICOMWEB_PASSWORD`` (HTTP basic);
   ``MEDM3_DICOMWEB_CA_BUNDLE`` (a PEM file of trusted certificate
   authorities for ``https`` servers with a private CA).
2. The config file ``$MEDM3_DICOMWEB_CONFIG`` (default
   ``~/.config/medm3/dicomweb.json``), keyed by DICOMweb root URL; the entry
   with the longest root that prefixes the server's root applies::

       {"servers": {
           "https://pacs.example.org/dicom-web": {"username": "u", "password": "p"},
           "https://other.example.org/dicomweb": {"token": "eyJ...", "ca_bundle": "/etc/ca.pem"}
       }}

   A config file holding secrets must be readable by its owner only
   (``chmod 600``); otherwise it is refused.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medm3.errors import InputError

ENV_USER = "MEDM3_DICOMWEB_USER"
ENV_PASSWORD = "MEDM3_DICOMWEB_PASSWORD"
ENV_TOKEN = "MEDM3_DICOMWEB_TOKEN"
ENV_CA_BUNDLE = "MEDM3_DICOMWEB_CA_BUNDLE"
ENV_CONFIG = "MEDM3_DICOMWEB_CONFIG"


@dataclass(frozen=True)
class ServerSettings:
    """How to talk to one server.

    Attributes:
        username: HTTP basic user name, or None.
        password: HTTP basic password, or None.
        token: Bearer token, or None (wins over basic auth).
        ca_bundle: PEM file of trusted CAs, or None for the system store.
        origin: Where the credentials came from (``environment``, the config
            file's path, or ``none``), for messages.
    """

    username: str | None = None
    password: str | None = None
    token: str | None = None
    ca_bundle: str | None = None
    origin: str = "none"

    def __repr__(self) -> str:  # never print secrets
        kind = "token" if self.token else ("basic" if self.username else "none")
        return f"ServerSettings(auth={kind}, ca_bundle={self.ca_bundle!r}, origin={self.origin!r})"


def config_path() -> Path:
    """The config file's path (``$MEDM3_DICOMWEB_CONFIG`` or ``~/.config/medm3/dicomweb.json``)."""
    raw = os.environ.get(ENV_CONFIG, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".config" / "medm3" / "dicomweb.json"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if os.environ.get(ENV_CONFIG, "").strip():
            raise InputError("DICOMweb config file not found", path) from None
        return {}
    except OSError as exc:
        raise InputError(f"cannot read the DICOMweb config file ({exc.strerror})", path) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"DICOMweb config is not valid JSON ({exc.msg}, line {exc.lineno})", path
        ) from None
    servers = doc.get("servers") if isinstance(doc, dict) else None
    if not isinstance(servers, dict) or not all(isinstance(v, dict) for v in servers.values()):
        raise InputError('DICOMweb config must be {"servers": {ROOT_URL: {...}, ...}}', path)
    secret = any(("password" in v or "token" in v) for v in servers.values())
    if secret and os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            "DICOMweb config holds passwords/tokens but other users can read it; "
            f"run: chmod 600 {path}",
            path,
        )
    return servers


def settings_for(root: str) -> ServerSettings:
    """The credentials and TLS settings for the server at DICOMweb root ``root``.

    Args:
        root: The server's DICOMweb root URL (``https://host/dicom-web``).

    Returns:
        The settings (environment first, then the config file).

    Raises:
        InputError: A malformed or world-readable config file, a user without
            password, or a CA bundle that does not exist.
    """
    env = os.environ
    ca = env.get(ENV_CA_BUNDLE, "").strip() or None
    token = env.get(ENV_TOKEN, "").strip() or None
    user = env.get(ENV_USER, "").strip() or None
    found: ServerSettings | None = None
    if token or user:
        if user and not token and ENV_PASSWORD not in env:
            raise InputError(f"{ENV_USER} is set but {ENV_PASSWORD} is not")
        found = ServerSettings(
            username=user,
            password=env.get(ENV_PASSWORD),
            token=token,
            ca_bundle=ca,
            origin="environment",
        )
    else:
        path = config_path()
        servers = _read_config(path)
        key = root.rstrip("/")
        matches = [
            k for k in servers if key == k.rstrip("/") or key.startswith(k.rstrip("/") + "/")
        ]
        if matches:
            entry = servers[max(matches, key=len)]
            found = ServerSettings(
                username=entry.get("username"),
                password=entry.get("password"),
                token=entry.get("token"),
                ca_bundle=ca or entry.get("ca_bundle"),
                origin=str(path),
            )
    settings = found or ServerSettings(ca_bundle=ca)
    if settings.ca_bundle and not Path(settings.ca_bundle).expanduser().is_file():
        raise InputError("CA bundle for the DICOMweb server not found", settings.ca_bundle)
    return settings
