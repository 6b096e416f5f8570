"""Dataset loaders of the evaluation tasks, with each protocol's split rules.

Accepted layouts (a file, or a folder holding one of the usual file names):

* **LLaVA-style JSON / JSONL** (what ``medm3.data`` and LLaVA-Med write):
  ``{id, image, conversations: [{from: human, value}, {from: gpt, value}],
  answer_type, ...}``; optional ``split``, ``phrase_type``, ``q_lang`` fields.
* **Official files**: VQA-RAD ``VQA_RAD Dataset Public.json`` (``qid``,
  ``image_name``, ``phrase_type``), SLAKE ``test.json`` (``qid``, ``img_name``,
  ``q_lang``), Hugging Face Parquet copies (``image`` bytes, ``question``,
  ``answer``; ids are row numbers), CheXlocalize ``groundtruth.csv`` (``Path``
  + one column per finding), Google's ChestX-ray14 four-findings
  ``test_labels.csv`` (``Image Index`` + ``YES``/``NO`` columns; ``Airspace
  opacity`` is lung opacity), and CSV/JSON with ``image`` + ``report`` columns.

Split rules (protocol ``vila-m3`` / ``llava-med``):

* rows with a ``split`` field other than ``test`` are dropped everywhere;
* VQA-RAD: only ``test_*`` phrase types (``test_freeform``, ``test_para``:
  free-form and rephrased) when the field exists; ``vila-m3`` keeps CLOSED
  questions only;
* SLAKE: English (``q_lang == "en"``) when the field exists; all answer types;
* PathVQA: ``vila-m3`` keeps yes/no (CLOSED) questions only; ``llava-med`` all;
* classification and reports: frontal images only when a view field says so.

A missing answer type is inferred from the answer (``yes``/``no`` -> CLOSED).
Repeated question ids keep their first position and last content, as the
reference scorers' dicts do (noted in the run log).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medm3.errors import InputError
from medm3.eval.samples import Sample, find_data_file, image_roots, read_records, resolve_image
from medm3.eval.scorers.common import Reference, normalize_answer_type

__all__ = ["LoadedData", "load_classification", "load_references", "load_report", "load_vqa"]

#: Data file names tried, per dataset, when ``--data`` is a folder.
DATA_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "vqa-rad": ("test.json", "test.jsonl", "VQA_RAD Dataset Public.json", "test.parquet"),
    "slake": ("test.json", "test.jsonl", "test.parquet"),
    "pathvqa": ("test.json", "test.jsonl", "test.parquet"),
    "chexpert": ("groundtruth.csv", "test.csv", "test.jsonl", "test.json"),
    "cxr14": ("test_labels.csv", "test.csv", "test.jsonl", "test.json"),
    "mimic-cxr": ("test.json", "test.jsonl", "test.csv"),
}
#: Column names that may hold a class's label, besides the class name itself.
CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "pleural effusion": ("effusion",),
    "lung opacity": ("airspace opacity",),
}
_ID_KEYS = ("id", "qid", "question_id")
_IMAGE_KEYS = ("image", "image_name", "img_name", "image_path", "Path", "path", "Image Index")
_META_KEYS = ("split", "phrase_type", "q_lang", "modality", "content_type", "question_type")
_REPORT_KEYS = ("report", "findings", "text", "answer", "caption")
_VIEW_KEYS = ("view", "view_position", "ViewPosition", "View Position", "Frontal/Lateral")


@dataclass
class LoadedData:
    """Samples of a task plus what loading them noticed.

    Attributes:
        samples: The samples, in file order (classification: image-major).
        data_file: The file they came from.
        notes: Remarks for the run log (duplicates merged, rows filtered ...).
        counts: Rows read / kept / filtered, for the log.
    """

    samples: list[Sample]
    data_file: Path
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _first(row: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((row[k] for k in keys if row.get(k) not in (None, "")), None)


def _image_ref(row: Mapping[str, Any]) -> str | bytes | None:
    value = _first(row, _IMAGE_KEYS)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):  # Hugging Face image column: {"bytes": ..., "path": ...}
        return value.get("bytes") or value.get("path")
    return None if value is None else str(value)


def _conversation(row: Mapping[str, Any]) -> tuple[str, str, str] | None:
    turns = row.get("conversations", row.get("conversatons"))
    if not isinstance(turns, list) or not turns:
        return None
    texts = [(str(t.get("from", "")).lower(), str(t.get("value", ""))) for t in turns]
    question = next((v for who, v in texts if who in ("human", "user")), "")
    answers = [v for who, v in texts if who in ("gpt", "assistant")]
    first = texts[1][1] if len(texts) > 1 else ""  # LLaVA-Med scores conversations[1]
    return question, first, answers[-1] if answers else first


def _dedupe(samples: list[Sample], notes: list[str]) -> list[Sample]:
    position: dict[str, int] = {}
    out: list[Sample] = []
    for s in samples:
        if s.id in position:
            out[position[s.id]] = s
        else:
            position[s.id] = len(out)
            out.append(s)
    if len(out) < len(samples):
        notes.append(
            f"{len(samples) - len(out)} repeated question id(s) merged (last content kept)"
        )
    return out


def _resolve(ref: str | bytes | None, roots: list[Path], data_file: Path) -> Path | bytes:
    if ref is None:
        raise InputError("a record has no image field (image / image_name / img_name)", data_file)
    return ref if isinstance(ref, bytes) else resolve_image(ref, roots)


def _is_test(row: Mapping[str, Any]) -> bool:
    split = str(row.get("split") or "").strip().lower()
    return split in ("", "test")


def _is_frontal(row: Mapping[str, Any]) -> bool:
    view = str(_first(row, _VIEW_KEYS) or "").strip().lower()
    return view not in ("lateral", "ll", "lat", "rl")


def _keep_vqa(dataset: str, protocol: str, sample: Sample) -> bool:
    meta = sample.meta
    if dataset == "vqa-rad":
        phrase = str(meta.get("phrase_type") or "").lower()
        if phrase and not phrase.startswith("test"):
            return False
    if dataset == "slake":
        lang = str(meta.get("q_lang") or "").lower()
        if lang and lang != "en":
            return False
    if protocol == "vila-m3" and dataset in ("vqa-rad", "pathvqa"):
        return sample.answer_type == "CLOSED"
    return True


def load_vqa(data: Path, dataset: str, protocol: str, image_root: Path | None = None) -> LoadedData:
    """Questions of VQA-RAD, SLAKE or PathVQA under a protocol's split rules.

    Args:
        data: Data file or folder.
        dataset: ``vqa-rad``, ``slake`` or ``pathvqa``.
        protocol: ``vila-m3`` or ``llava-med``.
        image_root: Folder of the images (default: next to the data file).

    Raises:
        InputError: Unreadable data, missing images, or no test question left.
    """
    data_file = find_data_file(Path(data), DATA_FILE_NAMES[dataset])
    rows = read_records(data_file)
    roots = image_roots(data_file, image_root)
    notes: list[str] = []
    samples: list[Sample] = []
    for index, row in enumerate(rows):
        if not _is_test(row):
            continue
        conv = _conversation(row)
        if conv is not None:
            question, answer, last = conv
        else:
            question = str(_first(row, ("question", "text")) or "")
            answer = last = str(row.get("answer", ""))
        qid = _first(row, _ID_KEYS)
        meta = {k: row[k] for k in _META_KEYS if row.get(k) not in (None, "")}
        if last != answer:
            meta["answer_last"] = last
        sample = Sample(
            id=str(index if qid is None else qid),
            image=None,
            question=question,
            answer=answer,
            answer_type=normalize_answer_type(row.get("answer_type"), answer),
            meta=meta,
        )
        if _keep_vqa(dataset, protocol, sample):
            ref = _image_ref(row)
            samples.append(
                replace(sample, image=_resolve(ref, roots, data_file), image_key=_key(ref, index))
            )
    samples = _dedupe(samples, notes)
    if not samples:
        raise InputError(f"no {dataset} test question left under protocol '{protocol}'", data_file)
    counts = {"rows": len(rows), "kept": len(samples)}
    return LoadedData(samples, data_file, notes, counts)


def _key(ref: str | bytes | None, index: int) -> str:
    return ref if isinstance(ref, str) else f"row{index}"


def _class_column(labels: Mapping[str, Any], cls: str) -> str | None:
    wanted = {cls, *CLASS_ALIASES.get(cls, ())}
    for key in labels:
        if str(key).strip().lower().replace("_", " ") in wanted:
            return key
    return None


def load_classification(
    data: Path, dataset: str, classes: Sequence[str], image_root: Path | None = None
) -> LoadedData:
    """One yes/no question per (frontal test image, class), image-major.

    Rows hold the image (``image`` / ``Path`` / ``Image Index``) and either a
    ``labels`` mapping or one column per class (names matched case- and
    ``_``-insensitively, with :data:`CLASS_ALIASES`). Sample ids are
    ``"<image id>|<class>"``.

    Args:
        data: Data file or folder.
        dataset: ``chexpert`` or ``cxr14`` (file names tried in a folder).
        classes: The classes to ask about.
        image_root: Folder of the images.

    Raises:
        InputError: Unreadable data, a class without a column, missing images.
    """
    data_file = find_data_file(Path(data), DATA_FILE_NAMES[dataset])
    rows = read_records(data_file)
    roots = image_roots(data_file, image_root)
    samples: list[Sample] = []
    columns: dict[str, str] = {}
    for index, row in enumerate(rows):
        if not (_is_test(row) and _is_frontal(row)):
            continue
        labels = row["labels"] if isinstance(row.get("labels"), dict) else row
        for cls in classes:
            column = _class_column(labels, cls)
            if column is None:
                found = ", ".join(map(str, labels)) or "none"
                raise InputError(
                    f"row {index + 1} has no label for '{cls}' (columns: {found})", data_file
                )
            columns[cls] = str(column)
        ref = _image_ref(row)
        image = _resolve(ref, roots, data_file)
        base = str(_first(row, _ID_KEYS) or _key(ref, index))
        for cls in classes:
            value = labels[_class_column(labels, cls)]  # type: ignore[index]
            samples.append(
                Sample(
                    id=f"{base}|{cls}",
                    image=image,
                    question="",
                    answer=str(value),
                    answer_type="CLOSED",
                    label=cls,
                    image_key=base,
                )
            )
    notes: list[str] = []
    samples = _dedupe(samples, notes)
    if not samples:
        raise InputError("no frontal test image found", data_file)
    notes.append("label columns: " + ", ".join(f"{c} <- '{col}'" for c, col in columns.items()))
    return LoadedData(samples, data_file, notes, {"rows": len(rows), "kept": len(samples)})


def load_report(data: Path, image_root: Path | None = None) -> LoadedData:
    """Frontal test images with their reference reports.

    Rows are LLaVA-style (the ``gpt`` turn is the report) or hold a ``report``
    / ``findings`` / ``text`` field.

    Args:
        data: Data file or folder.
        image_root: Folder of the images.

    Raises:
        InputError: Unreadable data, rows without report, missing images.
    """
    data_file = find_data_file(Path(data), DATA_FILE_NAMES["mimic-cxr"])
    rows = read_records(data_file)
    roots = image_roots(data_file, image_root)
    samples: list[Sample] = []
    for index, row in enumerate(rows):
        if not (_is_test(row) and _is_frontal(row)):
            continue
        conv = _conversation(row)
        report = conv[2] if conv is not None else _first(row, _REPORT_KEYS)
        if report is None:
            raise InputError(f"row {index + 1} has no reference report", data_file)
        ref = _image_ref(row)
        key = _key(ref, index)
        samples.append(
            Sample(
                id=str(_first(row, _ID_KEYS) or key),
                image=_resolve(ref, roots, data_file),
                question=conv[0] if conv is not None else "",
                answer=str(report),
                image_key=key,
            )
        )
    notes: list[str] = []
    samples = _dedupe(samples, notes)
    if not samples:
        raise InputError("no frontal test image found", data_file)
    return LoadedData(samples, data_file, notes, {"rows": len(rows), "kept": len(samples)})


def load_references(path: Path, protocol: str) -> list[Reference]:
    """Ground truth of ``m3 eval score``: every row of a file, no split filtering.

    Rows are LLaVA-style (``id``, ``conversations``, ``answer_type``) or flat
    (``id``/``qid``, ``answer``, ``answer_type``). Protocol ``vila-m3`` takes the
    last ``gpt`` turn, ``llava-med`` ``conversations[1]``, as their scripts do.
    Answer types are not inferred: ``llava-med`` ignores rows without one.

    Args:
        path: The ground-truth file (JSON list or JSONL).
        protocol: ``vila-m3`` or ``llava-med``.

    Raises:
        InputError: Unreadable file or a row without id or answer.
    """
    rows = read_records(Path(path))
    refs = []
    for index, row in enumerate(rows):
        conv = _conversation(row)
        if conv is not None:
            answer = conv[2] if protocol == "vila-m3" else conv[1]
        elif "answer" in row:
            answer = str(row["answer"])
        else:
            raise InputError(f"row {index + 1} has neither conversations nor answer", path)
        qid = _first(row, _ID_KEYS)
        if qid is None:
            raise InputError(f"row {index + 1} has no id", path)
        refs.append(Reference(str(qid), answer, normalize_answer_type(row.get("answer_type"))))
    if not refs:
        raise InputError("no ground-truth rows", path)
    return refs
