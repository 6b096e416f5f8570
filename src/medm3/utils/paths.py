"""Where medm3 keeps its files, and how a model argument is told from a Hub id."""

from __future__ import annotations

import os
import re
from pathlib import Path

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def cache_root() -> Path:
    """The medm3 cache folder (``$MEDM3_CACHE`` or ``~/.cache/medm3``)."""
    return Path(os.environ.get("MEDM3_CACHE") or Path.home() / ".cache" / "medm3").expanduser()


#: Environment variable naming medm3's data folder (server sessions, chat runs).
DATA_DIR_ENV = "MEDM3_DATA_DIR"


def data_root() -> Path:
    """medm3's per-user data folder: ``$MEDM3_DATA_DIR``, else the platform's.

    The platform folder is ``platformdirs.user_data_dir('medm3')``
    (``~/.local/share/medm3`` on Linux); never the current folder.
    """
    raw = os.environ.get(DATA_DIR_ENV, "").strip()
    if raw:
        return Path(raw).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("medm3", appauthor=False))


def looks_like_local_path(text: str) -> bool:
    """Whether a model argument is meant as a local path rather than a Hub repo id.

    The one rule used by every backend that accepts "a folder or a Hub id".
    Hugging Face Hub repo ids are ``name`` or ``namespace/name``: at most one
    ``/``, no backslash, never starting with ``.``. So ``text`` is a local path
    when it starts with ``.``, ``/``, ``~`` or ``\\``, starts with a drive
    letter (``C:\\``, ``C:/``), contains a backslash, ends with ``/``
    (a completed folder name), or holds more than one ``/``. ``org/name`` is
    therefore a Hub id; ``./org/name``, ``models/org/name`` and ``org/name/``
    are paths. Callers check first whether the folder exists: an existing
    ``org/name`` folder is used as a folder.

    Args:
        text: The model argument as given.

    Returns:
        True for a path, False for something that may be a Hub id.
    """
    return (
        text.startswith((".", "/", "~", "\\"))
        or bool(_DRIVE.match(text))
        or "\\" in text
        or text.endswith("/")
        or text.count("/") > 1
    )
