"""Evaluation samples and the file readers behind every dataset loader.

A :class:`Sample` is one question (or one report / one class of one image) with
its image and ground truth. Records come from JSON (a list), JSON Lines, CSV or
Parquet files; images are files resolved against a few roots, or bytes
embedded in Parquet rows (the Hugging Face copies of the datasets).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medm3.errors import InputError

__all__ = ["Sample", "find_data_file", "image_roots", "load_pil", "read_records", "resolve_image"]

#: File suffixes the readers accept.
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
#: Image folder names tried below the data folder (the official archives' names).
IMAGE_SUBFOLDERS = ("images", "imgs", "VQA_RAD Image Folder", "VQA_RAD_Image_Folder", "files")


@dataclass(frozen=True)
class Sample:
    """One evaluation item.

    Attributes:
        id: Unique question id (a string).
        image: Image file, encoded image bytes (Parquet rows) or ``None``.
        question: Question text as in the data (may hold ``<image>``); empty for reports.
        answer: Ground truth: answer text, reference report, or ``yes``/``no`` for a class.
        answer_type: ``CLOSED``, ``OPEN`` or ``""``.
        label: The class asked about (classification tasks).
        image_key: Identifies the image (for expert results shared by several questions).
        meta: Other fields kept for the log (split, phrase type, language ...).
    """

    id: str
    image: Path | bytes | None
    question: str
    answer: str
    answer_type: str = ""
    label: str = ""
    image_key: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


def find_data_file(path: Path, names: Sequence[str]) -> Path:
    """The data file: ``path`` itself, or the first of ``names`` inside a folder.

    Args:
        path: File or folder given by the user.
        names: File names tried, in order, when ``path`` is a folder.

    Raises:
        InputError: Missing path, or a folder holding none of the names (and not
            exactly one data file).
    """
    if not path.exists():
        raise InputError("data not found", path)
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    listed = ", ".join(p.name for p in candidates[:8]) or "no .json/.jsonl/.csv/.parquet file"
    raise InputError(f"cannot tell which file holds the test data (found: {listed}); pass it", path)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON list, JSON Lines, CSV or Parquet file, as dicts.

    Args:
        path: The data file.

    Raises:
        InputError: Unknown suffix, unreadable or malformed file.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                data = next((v for v in data.values() if isinstance(v, list)), None)
            if not isinstance(data, list):
                raise InputError("expected a JSON list of records", path)
            rows = data
        elif suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise InputError(
                                f"line {n} is not valid JSON ({exc.msg})", path
                            ) from None
        elif suffix == ".csv":
            with path.open(encoding="utf-8-sig", newline="") as f:
                rows = list(csv.DictReader(f))
        elif suffix == ".parquet":
            rows = _read_parquet(path)
        else:
            raise InputError(
                f"unsupported data file type '{suffix}' (use {', '.join(DATA_SUFFIXES)})", path
            )
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read: {exc}", path) from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise InputError(f"record {bad + 1} is not a JSON object", path)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from medm3.errors import MissingDependencyError

        raise MissingDependencyError("pyarrow", "eval", "Reading Parquet data") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise InputError(f"cannot read Parquet: {' '.join(str(exc).split())[:200]}", path) from None


def image_roots(data_file: Path, image_root: Path | None) -> list[Path]:
    """Folders relative image paths are looked up in, in order.

    Args:
        data_file: The data file (its folder and the usual image subfolders count).
        image_root: A folder given by the user (tried first).
    """
    base = data_file.parent
    roots = [image_root] if image_root is not None else []
    roots += [base] + [base / name for name in IMAGE_SUBFOLDERS]
    return [r for r in roots if r.is_dir()]


def _variants(name: str) -> Iterable[str]:
    yield name
    if name.startswith("CheXpert-v1.0/"):  # CheXlocalize rows name the study folder
        yield name.removeprefix("CheXpert-v1.0/")
    stem, dot, suffix = name.rpartition(".")
    if dot and suffix.lower() in ("png", "jpg", "jpeg"):  # the 512-px copies are re-encoded
        for other in ("jpg", "png"):
            if other != suffix.lower():
                yield f"{stem}.{other}"


def resolve_image(name: str, roots: Sequence[Path]) -> Path:
    """The image file of a record.

    Tries the name as given (absolute, or under each root), CheXlocalize study
    folders (``.../study1`` -> ``.../study1/view1_frontal.jpg``, without the
    ``CheXpert-v1.0/`` prefix) and the ``.png``/``.jpg`` twin of the name.

    Args:
        name: Image path as written in the data.
        roots: Folders to look in.

    Raises:
        InputError: No such image.
    """
    bases = [Path(name).expanduser()] if os.path.isabs(name) else []
    for variant in _variants(name):
        bases += [root / variant for root in roots]
    for candidate in bases:
        if candidate.is_file():
            return candidate
        if candidate.is_dir() and (candidate / "view1_frontal.jpg").is_file():
            return candidate / "view1_frontal.jpg"
    where = ", ".join(str(r) for r in roots) or "(no image folder found)"
    raise InputError(f"image '{name}' not found (looked in {where}; set --image-folder)")


def load_pil(image: Path | bytes | None) -> Any:
    """The image as an RGB PIL image.

    Args:
        image: A file or encoded bytes.

    Raises:
        InputError: Missing or unreadable image.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    if image is None:
        raise InputError("this sample has no image")
    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        where = None if isinstance(image, bytes) else image
        raise InputError(f"cannot read image: {exc}", where) from None
