"""The one JSON file reader: UTF-8, and an :class:`~medm3.errors.InputError` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medm3.errors import InputError

_KIND_NAMES = {dict: "a JSON object", list: "a JSON list"}


def read_json(path: str | Path, *, expect: type | None = None, what: str = "JSON") -> Any:
    """Read a JSON file.

    Args:
        path: The file.
        expect: ``dict`` or ``list`` to require that top-level type.
        what: What the file is, for the message (``"the run log"``).

    Returns:
        The parsed document.

    Raises:
        InputError: Missing or unreadable file, invalid UTF-8 or JSON, or the
            wrong top-level type; the message names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputError(f"cannot read {what}: {detail}", path) from None
    if expect is not None and not isinstance(data, expect):
        kind = _KIND_NAMES.get(expect, expect.__name__)
        raise InputError(f"expected {kind} in {what}", path)
    return data
