"""Label maps: which organ/structure each integer label id stands for.

Two JSON shapes are accepted:

* id -> name, e.g. ``{"1": "spleen", "5": "liver"}`` (TotalSegmentator style);
* name -> id, e.g. ``{"liver": 1, "spleen": 3}`` (VISTA3D's ``label_dict``).

Either way :func:`load_label_map` returns ``{id: name}``. Ids without a name
are shown as ``"label N"`` (:func:`label_name`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medm3.errors import InputError


def load_label_map(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read and validate a label map JSON file.

    Args:
        path: JSON file in either accepted shape (see the module docstring).

    Returns:
        ``{label_id: name}`` sorted by id.

    Raises:
        InputError: Missing/unreadable file, invalid JSON, or a wrong shape.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError("label map not found" if not file.exists() else "not a file", path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"label map is not valid JSON ({exc.msg} at line {exc.lineno})", path
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read label map: {exc}", path) from None
    try:
        return parse_label_map(data)
    except InputError as exc:
        raise InputError(exc.message, path) from None


def parse_label_map(data: Any) -> dict[int, str]:
    """Validate an already-decoded label map.

    Args:
        data: A mapping in either accepted shape.

    Returns:
        ``{label_id: name}`` sorted by id.

    Raises:
        InputError: If the shape is wrong, an id is not a non-negative
            integer, a name is empty, or one id has two names.
    """
    expected = 'expected {"1": "spleen", ...} (id -> name) or {"spleen": 1, ...} (name -> id)'
    if not isinstance(data, Mapping) or not data:
        raise InputError(f"label map must be a non-empty JSON object; {expected}")
    values = list(data.values())
    if all(isinstance(v, str) for v in values):
        pairs = [(_parse_id(k, expected), v) for k, v in data.items()]
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        pairs = [(_parse_id(v, expected), k) for k, v in data.items()]
    else:
        raise InputError(f"label map mixes value types; {expected}")
    result: dict[int, str] = {}
    for label_id, name in pairs:
        name = str(name).strip()
        if not name:
            raise InputError(f"label {label_id} has an empty name")
        if label_id in result:
            raise InputError(
                f"label id {label_id} has two names: '{result[label_id]}' and '{name}'"
            )
        result[label_id] = name
    return dict(sorted(result.items()))


def _parse_id(value: Any, expected: str) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise InputError(f"label id '{value}' is not a non-negative integer; {expected}")
    return int(text)


def label_name(label_names: Mapping[int, str] | None, label_id: int) -> str:
    """Name of a label id, or ``"label N"`` when the map does not name it.

    Args:
        label_names: ``{id: name}`` or None.
        label_id: The label id.

    Returns:
        The display name.
    """
    if label_names and int(label_id) in label_names:
        return label_names[int(label_id)]
    return f"label {int(label_id)}"
