"""Chest X-ray label sources of expert-cxr: CheXpert and ChestX-ray14 tables, CXR probabilities.

The definite labels of an X-ray (CheXpert's 1 / 0, uncertain -1 and blanks
left out; ChestX-ray14's ``Finding Labels``), the questions drawn from them
(is-there and findings), and precomputed CXR-expert probabilities read from
JSON or CSV.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medm3.data import templates
from medm3.data.base import BadRow, SkipRow
from medm3.errors import InputError

#: CheXpert label files -> output split.
CHEXPERT_FILES: tuple[tuple[str, str], ...] = (
    ("train.csv", "train"),
    ("valid.csv", "val"),
    ("test.csv", "test"),
)
#: CheXpert observation columns (values 1.0 / 0.0 / -1.0 uncertain / blank).
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: NIH ChestX-ray14 label files (newest first).
NIH_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
#: NIH ChestX-ray14 findings.
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
#: Labels that are not abnormalities (never listed as findings, still asked about).
NOT_ABNORMAL = frozenset({NO_FINDING, "Support Devices"})
#: Question kinds of this builder.
KINDS = ("is-there", "findings")


def finding_name(label: str) -> str:
    """``Pleural_Thickening`` -> ``pleural thickening``."""
    return label.replace("_", " ").lower()


def read_probabilities(path: Path) -> dict[str, dict[str, float]]:
    """Precomputed CXR-expert probabilities by image key.

    Accepts JSON ``{key: {label: probability}}`` or a CSV whose first column
    (or a ``Path`` / ``Image Index`` / ``image`` column) holds the key and
    whose other columns are labels.

    Raises:
        InputError: Unreadable file, non-numeric values, or labels the CXR
            expert does not have.
    """
    from medm3.experts.cxr import LABELS

    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("expected a JSON object {image: {label: probability}}")
            table = {str(k): {str(a): float(b) for a, b in v.items()} for k, v in raw.items()}
        else:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            if not rows:
                raise ValueError("no rows")
            columns = list(rows[0])
            key = next((c for c in ("Path", "Image Index", "image", "path") if c in columns), None)
            key = key or columns[0]
            table = {
                r[key]: {c: float(r[c]) for c in columns if c != key and r[c] not in ("", None)}
                for r in rows
            }
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"cannot read the probabilities: {exc}", path) from None
    unknown = sorted({lab for probs in table.values() for lab in probs} - set(LABELS))
    if unknown:
        raise InputError(
            f"probabilities name labels the CXR expert does not have: {', '.join(unknown[:5])} "
            f"(its labels: {', '.join(LABELS)})",
            path,
        )
    return table


def csv_columns(path: Path) -> list[str]:
    """The header of a CSV label file.

    Raises:
        InputError: Unreadable file.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the label file: {exc}", path) from None


def read_lines(path: Path) -> set[str]:
    """The non-blank lines of a list file (empty when it is missing)."""
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def nih_labels(row: Mapping[str, Any]) -> dict[str, bool]:
    """Definite labels of a ChestX-ray14 row: finding -> present.

    Raises:
        BadRow: Missing or unknown ``Finding Labels``.
    """
    raw = (row.get("Finding Labels") or "").strip()
    if not raw:
        raise BadRow("missing 'Finding Labels'")
    found = {p.strip() for p in raw.split("|") if p.strip()}
    unknown = found - set(NIH_LABELS) - {NO_FINDING}
    if unknown:
        raise BadRow(f"unknown finding(s) {', '.join(sorted(unknown))}")
    labels = {lab: lab in found for lab in NIH_LABELS}
    labels[NO_FINDING] = not any(labels.values())
    return labels


def chexpert_labels(row: Mapping[str, Any]) -> dict[str, bool]:
    """Definite labels of a CheXpert row (1 / 0; uncertain -1 and blanks left out).

    Raises:
        BadRow: A value that is not 1, 0, -1 or blank.
    """
    labels = {}
    for lab in CHEXPERT_LABELS:
        value = (row.get(lab) or "").strip()
        if value == "":
            continue
        try:
            number = float(value)
        except ValueError:
            raise BadRow(f"{lab!r} is not a number: {value!r}") from None
        if number not in (1.0, 0.0, -1.0):
            raise BadRow(f"{lab!r} must be 1, 0, -1 or blank, not {value!r}")
        if number != -1.0:
            labels[lab] = number == 1.0
    return labels


def draw_questions(
    labels: Mapping[str, bool], count: int, rng: Any
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(kind, question, answer, meta)`` for up to ``count`` questions about one X-ray.

    Args:
        labels: Definite labels, finding -> present.
        count: How many questions (fewer when the labels run out).
        rng: The item's random generator.

    Raises:
        SkipRow: No definite label to ask about.
    """
    findings = {k: v for k, v in labels.items() if k != NO_FINDING}
    positives = [k for k, v in findings.items() if v and k not in NOT_ABNORMAL]
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    asked: set[str] = set()
    for _ in range(count):
        kinds = [k for k in KINDS if k != "findings" or "findings" not in asked]
        if not (positives or labels.get(NO_FINDING)):
            kinds = [k for k in kinds if k != "findings"]
        if not findings:
            kinds = [k for k in kinds if k != "is-there"]
        if not kinds:
            break
        kind = kinds[rng.randrange(len(kinds))]
        if kind == "findings":
            asked.add("findings")
            question = templates.pick(rng, templates.CXR["findings"])
            names = [finding_name(p) for p in positives]
            answer = (
                f"The findings are: {templates.join_names(names)}."
                if names
                else "There are no abnormal findings."
            )
            out.append((kind, question, answer, {"findings": names}))
            continue
        pool = [k for k in findings if k not in asked] or list(findings)
        pos = [k for k in pool if findings[k]]
        neg = [k for k in pool if not findings[k]]
        group = pos if pos and (not neg or rng.random() < 0.5) else neg
        label = group[rng.randrange(len(group))]
        asked.add(label)
        name = finding_name(label)
        question = templates.pick(rng, templates.CXR["is-there"], name)
        answer = "yes" if findings[label] else "no"
        out.append((kind, question, answer, {"finding": name, "answer_type": "CLOSED"}))
    if not out:
        raise SkipRow("no definite labels to ask about")
    return out
