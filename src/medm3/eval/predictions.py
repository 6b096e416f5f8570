"""``predictions.jsonl``: one complete JSON line per sample, appended durably.

Each record is written with a single ``write`` on an ``O_APPEND`` descriptor
and ``fsync``'d before the next sample counts as done, so a killed run leaves
whole lines plus, at worst, one torn last line. :func:`read_predictions` with
``repair=True`` cuts such a tail off (that sample is generated again). Records
carry ``question_id`` and ``text`` as LLaVA-Med's answer files do, so
``m3 eval score`` reads them directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medm3.errors import InputError

__all__ = ["PredictionWriter", "predictions_by_id", "read_predictions"]


def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a predictions file (empty list when it does not exist).

    Args:
        path: The JSONL file.
        repair: For resuming the run that wrote it: cut off a last line without
            final newline (a torn write; that sample is generated again). Without
            ``repair`` such a line is read when it is valid JSON (hand-made files).

    Raises:
        InputError: A line is not a JSON object with ``question_id`` (or a torn
            last line without ``repair``).
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    tail = data[end:]
    if tail.strip() and repair:
        with path.open("r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    elif tail.strip():
        lines.append(tail)
    records = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"line {n} is not a complete JSON record", path) from None
        if not isinstance(record, dict) or "question_id" not in record:
            raise InputError(f"line {n} is not a JSON object with a 'question_id'", path)
        records.append(record)
    return records


def predictions_by_id(records: list[dict[str, Any]], path: Path) -> dict[str, str]:
    """Map ``question_id`` -> answer text, refusing an id given twice.

    Args:
        records: Output of :func:`read_predictions`.
        path: The file they come from (for the message).

    Returns:
        ``{question_id: text}``.

    Raises:
        InputError: Two records share a ``question_id`` (which one to score
            would be a silent guess).
    """
    preds: dict[str, str] = {}
    lines: dict[str, int] = {}
    for n, record in enumerate(records, 1):
        qid = str(record["question_id"])
        if qid in preds:
            raise InputError(
                f"question_id {qid!r} appears twice (records {lines[qid]} and {n}); "
                "keep one prediction per question",
                path,
            )
        preds[qid] = str(record.get("text", ""))
        lines[qid] = n
    return preds


class PredictionWriter:
    """Append-only, fsync'd writer of prediction records.

    Args:
        path: The JSONL file (created when missing; its folder must exist).
    """

    def __init__(self, path: Path) -> None:
        created = not path.exists()
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(path.parent)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and make it durable."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
