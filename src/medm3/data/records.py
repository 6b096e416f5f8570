"""Helpers for reading source datasets: layout checks and the fields of source records.

Wrong layouts are :class:`~medm3.errors.InputError` (the whole build stops,
naming what was expected and what was found); a malformed record is
:class:`~medm3.data.base.BadRow` (counted against ``--max-bad-fraction``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medm3.data.base import BadRow, ItemContext, SkipRow
from medm3.errors import InputError


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else an :class:`InputError` naming ``what``."""
    if not path.is_dir():
        raise InputError(f"{what} not found (expected a folder)", path)
    return path


def listing(folder: Path, limit: int = 8) -> str:
    """A short listing of a folder's entries for "wrong layout" messages."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "unreadable"
    if not names:
        return "an empty folder"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return "found " + ", ".join(names[:limit]) + more


def find_one(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that exists in ``folder`` (or in a single sub-folder of it)."""
    for name in names:
        if (folder / name).exists():
            return folder / name
    subdirs = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    if len(subdirs) == 1:
        for name in names:
            if (subdirs[0] / name).exists():
                return subdirs[0] / name
    return None


def place_image(ctx: ItemContext, path: Path, relative: str) -> str:
    """Put a source image under the output (copied or linked); missing: the row is skipped.

    Raises:
        SkipRow: ``image file missing``.
    """
    if not path.is_file():
        raise SkipRow("image file missing")
    return ctx.link_or_copy(path, relative)


def record_key(record: Any, key: str, index: int) -> str:
    """A source record's id: its ``key`` field (stripped), else ``row{index}``."""
    value = record.get(key) if isinstance(record, dict) else None
    return str(value).strip() if value not in (None, "") else f"row{index}"


def json_record(data: Any, what: str = "record") -> dict[str, Any]:
    """``data`` if it is a JSON object.

    Raises:
        BadRow: Anything else (``{what} is not a JSON object``).
    """
    if not isinstance(data, dict):
        raise BadRow(f"{what} is not a JSON object")
    return data


def relative_path(name: str, rule: str) -> Path:
    """A source record's relative path, refused when absolute or climbing out with ``..``.

    Raises:
        BadRow: ``{rule}: {name!r}`` (``rule`` says what it must be relative to).
    """
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise BadRow(f"{rule}: {name!r}")
    return rel


def vqa_fields(record: Any, image_key: str) -> tuple[dict[str, Any], str, str, str, str]:
    """A VQA record's question, answer, image name and ``answer_type`` (VQA-RAD, SLAKE).

    Returns:
        ``(record, question, answer, image name, answer type)``.

    Raises:
        BadRow: Not an object, a missing field or a bad answer type.
    """
    record = json_record(record)
    question = text_field(record, "question")
    answer = text_field(record, "answer")
    image_name = text_field(record, image_key)
    return record, question, answer, image_name, answer_type_field(record)


def text_field(record: Mapping[str, Any], key: str) -> str:
    """A non-empty text field of a source record (numbers become text).

    Raises:
        BadRow: The field is missing or empty.
    """
    value = record.get(key)
    if isinstance(value, bool) or value is None:
        raise BadRow(f"missing {key!r}")
    if isinstance(value, (int, float)):
        value = str(int(value)) if float(value).is_integer() else str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadRow(f"missing {key!r}")
    return value.strip()


def answer_type_field(record: Mapping[str, Any]) -> str:
    """The record's ``answer_type``, upper-cased: ``CLOSED`` or ``OPEN``.

    Raises:
        BadRow: Any other value (VQA-RAD and SLAKE define only these two).
    """
    answer_type = str(record.get("answer_type", "")).strip().upper()
    if answer_type not in ("CLOSED", "OPEN"):
        raise BadRow(f"answer_type must be CLOSED or OPEN, not {answer_type!r}")
    return answer_type


def closed_answer_type(answer: str) -> str:
    """``CLOSED`` for yes/no answers, else ``OPEN`` (for datasets without the field)."""
    return "CLOSED" if answer.strip().lower() in ("yes", "no") else "OPEN"


def read_json_list(path: Path) -> list[Any]:
    """A JSON file holding a list (of source records).

    Raises:
        InputError: Unreadable, invalid JSON or not a list.
    """
    from medm3.utils.jsonio import read_json

    data = read_json(path, what="the annotation file")
    if not isinstance(data, list):
        raise InputError("the annotation file must hold a JSON list of records", path)
    return data
