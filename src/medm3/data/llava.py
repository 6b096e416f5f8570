"""LLaVA-style training JSON: row construction, validation, reading, writing, manifest.

A row (one training conversation) is::

    {"id": "vqa-rad/1",
     "image": "images/synpic54610.jpg",            # one image; "images": [...] for several
     "conversations": [{"from": "human", "value": "<image>\\nIs there a fracture?"},
                       {"from": "gpt", "value": "no"}],
     "dataset": "vqa-rad", "question_type": "PRES", "answer_type": "CLOSED",
     "phrase_type": "test_freeform", "qid": "1"}

Image paths are relative to the JSON file. Each :data:`~medm3.prompts.IMAGE_TOKEN`
in the human turns stands for the next image, in order; text-only rows have no
image key. After ``conversations`` come flat facts for evaluation and
statistics, LLaVA-Med style: ``dataset``, ``question_type`` (counted in the
manifest), ``answer_type`` (``CLOSED``/``OPEN``, where it applies), source ids
and fields such as ``phrase_type``; expert rows add ``question`` (the user's
question) and ``experts`` (the trigger texts). Training code ignores them.

A built dataset is a folder with one ``{split}.json`` per split, the images,
and ``manifest.json`` (see :func:`medm3.data.engine.build_dataset`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.errors import InputError
from medm3.utils.jsonio import read_json

#: Format tag written into manifests.
FORMAT = "medm3-llava/1"
#: File name of the manifest inside a built dataset folder.
MANIFEST_NAME = "manifest.json"
#: Keys of the row itself (meta facts may not use them).
CORE_KEYS = frozenset({"id", "image", "images", "conversations"})
#: Speaker names of the two roles.
HUMAN, GPT = "human", "gpt"


def make_row(
    row_id: str,
    turns: Sequence[tuple[str, str]],
    images: Sequence[str] = (),
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and validate one row.

    Args:
        row_id: Unique id.
        turns: ``(role, text)`` pairs, alternating ``human`` / ``gpt``, human first.
        images: Image paths relative to the JSON file, in the order of the
            image tokens in the human turns.
        meta: Extra facts (``question_type``, ``answer_type`` ...), stored as top-level
            keys after ``conversations``.

    Returns:
        The row dict (key order fixed, so its JSON is reproducible).

    Raises:
        ValueError: The row breaks the format (see :func:`validate_row`) or a
            meta key is one of the row's own keys.
    """
    row: dict[str, Any] = {"id": row_id}
    if len(images) == 1:
        row["image"] = images[0]
    elif images:
        row["images"] = list(images)
    row["conversations"] = [{"from": role, "value": text} for role, text in turns]
    for key, value in (meta or {}).items():
        if key in CORE_KEYS:
            raise ValueError(f"row {row_id}: meta key {key!r} is reserved")
        row[key] = value
    validate_row(row)
    return row


def vqa_row(
    row_id: str, question: str, answer: str, image: str, meta: Mapping[str, Any]
) -> dict[str, Any]:
    """A plain VQA row: ``<image>\\n{question}`` -> ``{answer}`` (no cards, no modality line)."""
    turns = [(HUMAN, prompts.first_turn(question, None)), (GPT, answer)]
    return make_row(row_id, turns, [image], meta)


def row_images(row: Mapping[str, Any]) -> list[str]:
    """The image paths of a row (``image`` or ``images``), in order."""
    if "images" in row:
        return list(row["images"])
    image = row.get("image")
    if image is None:
        return []
    return list(image) if isinstance(image, list) else [image]


def validate_row(row: Mapping[str, Any]) -> None:
    """Check one row: id, alternating turns, image tokens matching the images.

    Raises:
        ValueError: What is wrong, naming the row id.
    """
    row_id = row.get("id")
    if not isinstance(row_id, str) or not row_id:
        raise ValueError(f"row without a string id: {str(row)[:80]}")
    convs = row.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise ValueError(f"row {row_id}: no conversations")
    tokens = 0
    for i, turn in enumerate(convs):
        expected = HUMAN if i % 2 == 0 else GPT
        if not isinstance(turn, Mapping) or turn.get("from") != expected:
            raise ValueError(f"row {row_id}: turn {i} must be from {expected!r}")
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"row {row_id}: turn {i} has no text")
        count = value.count(prompts.IMAGE_TOKEN)
        if count and expected == GPT:
            raise ValueError(f"row {row_id}: an image token in a gpt turn")
        tokens += count
    if len(convs) % 2:
        raise ValueError(f"row {row_id}: the last turn must be from 'gpt'")
    images = row_images(row)
    if any(not isinstance(p, str) or not p for p in images):
        raise ValueError(f"row {row_id}: image paths must be strings")
    if tokens != len(images):
        raise ValueError(f"row {row_id}: {tokens} image tokens but {len(images)} images")


def dumps(rows: Sequence[Mapping[str, Any]]) -> str:
    """The JSON text of a row list (UTF-8, indented, newline-terminated; reproducible)."""
    return json.dumps(list(rows), ensure_ascii=False, indent=2) + "\n"


def write_rows(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write a row list atomically.

    Args:
        path: Destination JSON file.
        rows: The rows.

    Returns:
        The path written.
    """
    from medm3.utils.atomic import atomic_write_text

    atomic_write_text(path, dumps(rows))
    return Path(path)


def read_rows(path: str | os.PathLike[str], *, validate: bool = True) -> list[dict[str, Any]]:
    """Read a LLaVA JSON file (a list of rows).

    Args:
        path: The JSON file.
        validate: Check every row with :func:`validate_row`.

    Raises:
        InputError: Missing file, invalid JSON, not a list, or a bad row.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError("dataset JSON not found", file)
    data = read_json(file, what="the dataset JSON")
    if not isinstance(data, list):
        raise InputError("expected a JSON list of rows", file)
    if validate:
        for row in data:
            try:
                validate_row(row)
            except ValueError as exc:
                raise InputError(str(exc), file) from None
    return data


def read_dataset(folder: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Read every split of a built dataset folder.

    Args:
        folder: Output folder of ``m3 data build``.

    Returns:
        Split name -> rows.

    Raises:
        InputError: No manifest or a listed split file is missing/invalid.
    """
    root = Path(folder)
    manifest = read_manifest(root)
    return {split: read_rows(root / name) for split, name in manifest.get("files", {}).items()}


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of a built dataset folder.

    Raises:
        InputError: Missing or unreadable manifest.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"no {MANIFEST_NAME} (not a folder built by `m3 data build`)", folder)
    data = read_json(path, what="the manifest")
    if not isinstance(data, dict):
        raise InputError("manifest is not a JSON object", path)
    return data


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def split_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Row, image and question-type counts of one split (for the manifest)."""
    n_rows = 0
    images: set[str] = set()
    kinds: dict[str, int] = {}
    answers: dict[str, int] = {}
    for row in rows:
        n_rows += 1
        images.update(row_images(row))
        kind = str(row.get("question_type", "other"))
        kinds[kind] = kinds.get(kind, 0) + 1
        if row.get("answer_type"):
            answer = str(row["answer_type"])
            answers[answer] = answers.get(answer, 0) + 1
    out: dict[str, Any] = {
        "rows": n_rows,
        "images": len(images),
        "question_types": dict(sorted(kinds.items())),
    }
    if answers:
        out["answer_types"] = dict(sorted(answers.items()))
    return out
