"""Built-in label tables (``--labels totalseg-ct`` ...) and label-map auto-detection.

Tables (``{id: name}``):

- ``totalseg-ct``: TotalSegmentator v2, ``total`` task (CT), 117 classes;
- ``totalseg-mr``: TotalSegmentator v2, ``total_mr`` task (MR), 50 classes;
- ``vista3d``: VISTA3D's 132 label ids (:mod:`.expert_labels`, shared with the experts);
- ``brats``: the BraTS convention (1 necrotic / non-enhancing core, 2 oedema,
  4 enhancing tumour; :mod:`.expert_labels`).

The TotalSegmentator tables list the ids and names of TotalSegmentator's public
class map (package ``totalsegmentator`` 2.18.0, ``map_to_binary.class_map``);
see ``README.md`` beside this file.

:func:`detect_labels` names a label map's structures without being told:
first from a label table embedded in the NIfTI header (TotalSegmentator writes
one, a ``CaretExtension`` XML ``LabelTable``), else from the built-in table
the label ids fit (using the modality to break ties); when the ids fit several
tables equally it says so instead of guessing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from medm3.errors import InputError
from medm3.imaging.label_tables.expert_labels import BRATS_LABELS, VISTA3D_LABELS

__all__ = [
    "TABLES",
    "LabelDetection",
    "detect_labels",
    "embedded_label_table",
    "get_table",
    "label_names_for",
    "looks_like_label_map",
    "resolve_labels",
    "table_names",
    "table_summary",
]

#: Table name -> (description, modality the table is for).
TABLES: dict[str, tuple[str, str]] = {
    "totalseg-ct": ("TotalSegmentator v2 'total' task (CT), 117 classes", "CT"),
    "totalseg-mr": ("TotalSegmentator v2 'total_mr' task (MR), 50 classes", "MR"),
    "vista3d": ("VISTA3D label ids (CT), 132 classes", "CT"),
    "brats": ("BraTS tumour labels (MR): 1 core, 2 oedema, 4 enhancing", "MR"),
}

_HERE = Path(__file__).resolve().parent
_MAX_EXTENSION_BYTES = 4 << 20  # an embedded table larger than this is ignored


def table_names() -> list[str]:
    """Names of the built-in tables."""
    return list(TABLES)


@cache
def _load(name: str) -> dict[int, str]:
    if name in ("totalseg-ct", "totalseg-mr"):
        doc = json.loads((_HERE / f"{name.replace('-', '_')}.json").read_text(encoding="utf-8"))
        return {int(k): str(v) for k, v in doc["labels"].items()}
    if name == "vista3d":
        return dict(sorted(VISTA3D_LABELS.items()))
    if name == "brats":
        return dict(sorted(BRATS_LABELS.items()))
    raise KeyError(name)


def get_table(name: str) -> dict[int, str]:
    """The built-in table ``name`` as ``{id: name}`` (a copy).

    Raises:
        InputError: Unknown table name.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in TABLES:
        raise InputError(f"no built-in label table {name!r}; known: {', '.join(TABLES)}")
    return dict(_load(key))


def resolve_labels(value: str | os.PathLike[str]) -> dict[int, str]:
    """A ``--labels`` value: a built-in table name or a label-map JSON file.

    Args:
        value: ``totalseg-ct``, ``totalseg-mr``, ``vista3d``, ``brats`` or a path.

    Returns:
        ``{id: name}``.

    Raises:
        InputError: Neither a table name nor a readable label-map JSON.
    """
    text = os.fspath(value)
    key = text.strip().lower().replace("_", "-")
    if key in TABLES and not Path(text).is_file():
        return get_table(key)
    from medm3.imaging.labels import load_label_map

    if not Path(text).exists() and os.sep not in text and not text.endswith(".json"):
        raise InputError(
            f"not a label table name nor a file; built-in tables: {', '.join(TABLES)}", text
        )
    return load_label_map(text)


def embedded_label_table(path: str | os.PathLike[str]) -> dict[int, str] | None:
    """A label table stored in a NIfTI header extension, if any.

    TotalSegmentator (and Connectome Workbench) store one as a ``CaretExtension``
    XML document with ``<Label Key="5">liver</Label>`` entries.

    Args:
        path: A ``.nii`` / ``.nii.gz`` file (other files: ``None``).

    Returns:
        ``{id: name}`` (0 left out), or ``None`` when there is none or it cannot be read.
    """
    name = os.fspath(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        import nibabel as nib

        header = nib.load(os.fspath(path)).header
        extensions = list(getattr(header, "extensions", []))
    except Exception:  # unreadable here: the image reader reports it properly
        return None
    for ext in extensions:
        content = ext.get_content()
        if isinstance(content, bytes) and b"<LabelTable" in content:
            if len(content) > _MAX_EXTENSION_BYTES:
                return None
            return _parse_caret(content)
    return None


def _parse_caret(content: bytes) -> dict[int, str] | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(content.strip(b"\x00 \n\r\t"))
    except ET.ParseError:
        return None
    table: dict[int, str] = {}
    for label in root.iter("Label"):
        key, text = label.get("Key", ""), (label.text or "").strip()
        if key.strip().isdigit() and text and int(key) != 0:
            table[int(key)] = text
    return dict(sorted(table.items())) or None


@dataclass
class LabelDetection:
    """The outcome of :func:`detect_labels`.

    Attributes:
        names: ``{id: name}`` found, or ``None``.
        source: ``embedded`` (NIfTI header table), ``table`` (a built-in table) or ``none``.
        table: The built-in table's name when ``source == "table"``.
        candidates: Tables the ids fit (several when the choice was ambiguous).
        message: One line saying what was found, for the user.
    """

    names: dict[int, str] | None
    source: str
    table: str | None = None
    candidates: list[str] = field(default_factory=list)
    message: str = ""


def _fitting_tables(ids: set[int]) -> list[str]:
    return [name for name in TABLES if ids <= set(_load(name))]


def detect_labels(
    ids: Iterable[int],
    *,
    path: str | os.PathLike[str] | None = None,
    modality: str | None = None,
) -> LabelDetection:
    """Name a label map's ids from an embedded table or the built-in table they fit.

    Args:
        ids: Label ids present (0, the background, is ignored).
        path: The label map's file (its NIfTI header may carry a table).
        modality: Modality of the image the labels belong to (``CT``, ``MR`` ...),
            used to choose between tables the ids fit equally.

    Returns:
        The detection; ``names`` is ``None`` when nothing fits or the fit is ambiguous.
    """
    present = {int(i) for i in ids if int(i) != 0}
    if path is not None:
        embedded = embedded_label_table(path)
        if embedded and present <= set(embedded):
            return LabelDetection(
                embedded, "embedded", message="label names read from the file's header"
            )
    if not present:
        return LabelDetection(None, "none", message="the label map is empty")
    fits = _fitting_tables(present)
    chosen = fits
    if len(chosen) > 1 and present <= {1, 2, 4} and 4 in present and "brats" in chosen:
        chosen = ["brats"]  # the BraTS signature: 4 without 3
    if len(chosen) > 1 and modality:
        same = [t for t in chosen if TABLES[t][1] == modality.upper()]
        chosen = same or chosen
    if len(chosen) == 1:
        name = chosen[0]
        return LabelDetection(
            get_table(name),
            "table",
            table=name,
            candidates=fits,
            message=f"label ids fit the built-in table '{name}' ({TABLES[name][0]})",
        )
    if not fits:
        return LabelDetection(
            None,
            "none",
            message=f"label ids (up to {max(present)}) fit no built-in table; "
            "pass --labels FILE.json",
        )
    return LabelDetection(
        None,
        "none",
        candidates=fits,
        message=f"label ids fit several built-in tables ({', '.join(fits)}); "
        "pass --labels NAME to choose",
    )


def table_summary(tables: Mapping[str, Any] | None = None) -> list[tuple[str, str, int]]:
    """``(name, description, number of labels)`` for each built-in table."""
    return [(name, desc, len(_load(name))) for name, (desc, _mod) in (tables or TABLES).items()]


#: At most this many distinct ids make an integer volume a label map outright.
FEW_LABELS = 16


def looks_like_label_map(array: Any) -> bool:
    """Whether pixel data look like a label map rather than an image.

    True when the values are non-negative integers including 0 and either
    there are at most :data:`FEW_LABELS` distinct non-zero values, or the
    ids all belong to one built-in table (TotalSegmentator, VISTA3D, BraTS)
    and 0 is the most common value (background). CT (negative HU) and MR
    (hundreds of distinct intensities) do not qualify.

    Args:
        array: The data (any shape).

    Returns:
        The verdict.
    """
    import numpy as np

    data = np.asarray(array)
    if data.size == 0 or data.dtype.kind not in "uif":
        return False
    step = max(1, data.size // 4_000_000)
    sample = data.ravel()[::step]
    if data.dtype.kind == "f" and (
        not np.all(np.isfinite(sample)) or np.any(sample != np.round(sample))
    ):
        return False
    if sample.min() < 0:
        return False
    values, counts = np.unique(sample.astype(np.int64), return_counts=True)
    if values[0] != 0 or len(values) > 512:
        return False
    ids = {int(v) for v in values[1:]}
    if len(ids) <= FEW_LABELS:
        return True
    background = int(np.argmax(counts)) == 0
    return background and bool(_fitting_tables(ids))


def label_names_for(
    mask: Any,
    labels: str | os.PathLike[str] | None = None,
    *,
    modality: str | None = None,
) -> tuple[dict[int, str], str]:
    """Names for a label map: the ``--labels`` value, else detected (:func:`detect_labels`).

    Args:
        mask: The label map (:class:`~medm3.imaging.image.MedicalImage`, read from a file).
        labels: A built-in table name or a JSON file (``None``: detect).
        modality: Modality of the image the mask belongs to (ties between tables).

    Returns:
        ``({id: name}, note)``: the names (empty when unknown) and one line
        saying where they came from, for the user.

    Raises:
        InputError: A bad ``labels`` value.
    """
    import numpy as np

    if labels is not None:
        names = resolve_labels(labels)
        return names, f"label names from {os.fspath(labels)}"
    ids = np.unique(np.asarray(mask.array)).tolist()
    found = detect_labels(ids, path=_first_path(getattr(mask, "source", None)), modality=modality)
    return dict(found.names or {}), found.message


def _first_path(source: Any) -> str | None:
    if isinstance(source, (list, tuple)):
        source = source[0] if source else None
    return None if source is None else os.fspath(source)
