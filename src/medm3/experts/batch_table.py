"""The tables of a batch expert run: ``results.jsonl`` (durable, resumable) and ``results.csv``."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medm3.errors import InputError

__all__ = ["read_rows", "table_csv", "table_jsonl"]

#: Columns every row has, first in the CSV.
BASE_COLUMNS = ("input", "id", "status", "seconds", "error", "text", "findings", "structures")


def read_rows(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Rows of ``results.jsonl``; a torn last line (killed run) is cut off when ``repair``.

    Raises:
        InputError: A line is not a JSON object with an ``id``.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if data[end:].strip() and repair:
        with path.open("r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    rows = []
    for n, raw in enumerate(data[:end].split(b"\n")[:-1], 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InputError(f"line {n} is not a complete JSON record", path) from None
        if not isinstance(row, dict) or "id" not in row:
            raise InputError(f"line {n} is not a JSON object with an 'id'", path)
        rows.append(row)
    return rows


def table_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    """The JSONL table text."""
    return "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)


def table_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV table: base columns, then ``p:NAME`` probabilities and ``volume_ml:NAME``.

    Lists are joined with ``;``; extra columns appear in the order first seen.
    """
    probs: dict[str, None] = {}
    volumes: dict[str, None] = {}
    for row in rows:
        probs.update(dict.fromkeys(row.get("probabilities") or {}))
        volumes.update(dict.fromkeys(row.get("volumes_ml") or {}))
    columns = [*BASE_COLUMNS, *(f"p:{k}" for k in probs), *(f"volume_ml:{k}" for k in volumes)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in BASE_COLUMNS:
            value = row.get(column, "")
            cells.append(";".join(map(str, value)) if isinstance(value, list) else value)
        p = row.get("probabilities") or {}
        v = row.get("volumes_ml") or {}
        cells += [_number(p.get(k)) for k in probs]
        cells += [_number(v.get(k)) for k in volumes]
        writer.writerow(cells)
    return buffer.getvalue()


def _number(value: Any) -> str:
    return "" if value is None else repr(float(value))
