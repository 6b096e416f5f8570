"""Where medm3 keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The medm3 cache folder (``$MEDM3_CACHE`` or ``~/.cache/medm3``)."""
    return Path(os.environ.get("MEDM3_CACHE") or Path.home() / ".cache" / "medm3").expanduser()
