"""Tiny evaluation datasets written by the tests (a few rows, 16x16 images)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from PIL import Image

#: VQA rows: (id, question, answer, answer type, phrase type).
VQA_ROWS: list[tuple[str, str, str, str, str]] = [
    ("r1", "Is there a fracture?", "yes", "CLOSED", "test_freeform"),
    ("r2", "Is the heart enlarged?", "no", "CLOSED", "test_para"),
    ("r3", "Which lobe is affected?", "left upper lobe", "OPEN", "test_freeform"),
    ("r4", "Is this an MRI?", "no", "CLOSED", "freeform"),  # a training phrase type
    ("r5", "How many lesions?", "2", "OPEN", "test_para"),
    ("r6", "Is there free air?", "yes", "CLOSED", "test_freeform"),
]


def image(path: Path, shade: int = 0, size: int = 16) -> Path:
    """Write a small grey PNG/JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (shade, shade, shade)).save(path)
    return path


def llava_vqa(folder: Path, rows: list[tuple[str, str, str, str, str]] | None = None) -> Path:
    """LLaVA-style test.json (+ images/) of the given VQA rows."""
    records: list[dict[str, Any]] = []
    for k, (qid, question, answer, kind, phrase) in enumerate(rows or VQA_ROWS):
        image(folder / "images" / f"{qid}.png", 20 * k)
        records.append(
            {
                "id": qid,
                "image": f"{qid}.png",
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
                "answer_type": kind,
                "phrase_type": phrase,
            }
        )
    path = folder / "test.json"
    path.write_text(json.dumps(records))
    return path


def official_vqa_rad(folder: Path) -> Path:
    """The official ``VQA_RAD Dataset Public.json`` layout (qid, image_name, phrase_type)."""
    records = []
    for k, (qid, question, answer, kind, phrase) in enumerate(VQA_ROWS):
        image(folder / "VQA_RAD Image Folder" / f"synpic{k}.jpg", 10 * k)
        records.append(
            {
                "qid": qid,
                "image_name": f"synpic{k}.jpg",
                "question": question,
                "answer": int(answer) if answer.isdigit() else answer,
                "answer_type": kind,
                "phrase_type": phrase,
            }
        )
    path = folder / "VQA_RAD Dataset Public.json"
    path.write_text(json.dumps(records))
    return path


def official_slake(folder: Path) -> Path:
    """SLAKE's test.json layout with an English and a Chinese question per image."""
    records = []
    for k, (qid, question, answer, kind, _) in enumerate(VQA_ROWS[:3]):
        image(folder / "imgs" / f"xmlab{k}" / "source.jpg", 30 * k)
        for lang, offset in (("en", 0), ("zh", 1000)):
            records.append(
                {
                    "qid": int(qid[1:]) + offset,
                    "img_name": f"xmlab{k}/source.jpg",
                    "question": question if lang == "en" else "问题",
                    "answer": answer,
                    "answer_type": kind,
                    "q_lang": lang,
                }
            )
    path = folder / "test.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


def pathvqa_parquet(folder: Path) -> Path:
    """Hugging Face PathVQA Parquet layout: image bytes, question, answer; no ids, no types."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        ("Is this benign?", "yes"),
        ("What stain is used?", "hematoxylin"),
        ("Is it malignant?", "no"),
    ]
    images = []
    for k in range(len(rows)):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (40 * k, 0, 0)).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    table = pa.table(
        {
            "image": images,
            "question": [q for q, _ in rows],
            "answer": [a for _, a in rows],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test.parquet"
    pq.write_table(table, path)
    return path


#: CheXlocalize-like rows: study path -> labels of the five classes (+ a lateral-free CSV).
CHEXPERT_ROWS = [
    (
        "CheXpert-v1.0/test/patient1/study1",
        {
            "Atelectasis": 1,
            "Cardiomegaly": 0,
            "Consolidation": 0,
            "Edema": 1,
            "Pleural Effusion": 0,
        },
    ),
    (
        "CheXpert-v1.0/test/patient2/study1",
        {
            "Atelectasis": 0,
            "Cardiomegaly": 1,
            "Consolidation": 0,
            "Edema": 0,
            "Pleural Effusion": 1,
        },
    ),
    (
        "CheXpert-v1.0/test/patient3/study1",
        {
            "Atelectasis": 1,
            "Cardiomegaly": 1,
            "Consolidation": 1,
            "Edema": 0,
            "Pleural Effusion": 0,
        },
    ),
]


def chexlocalize(folder: Path) -> Path:
    """``groundtruth.csv`` with study folders holding ``view1_frontal.jpg``."""
    columns = [
        "Path",
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
        "Support Devices",
    ]
    path = folder / "groundtruth.csv"
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for k, (study, labels) in enumerate(CHEXPERT_ROWS):
            image(folder / study.removeprefix("CheXpert-v1.0/") / "view1_frontal.jpg", 50 * k)
            writer.writerow([study, *(labels[c] for c in columns[1:6]), 0])
    return path


#: ChestX-ray14 Google four-findings rows: image -> (fracture, pneumothorax, airspace opacity).
CXR14_ROWS = [
    ("00000001_000.png", ("YES", "NO", "NO")),
    ("00000002_000.png", ("NO", "YES", "YES")),
    ("00000003_000.png", ("NO", "NO", "YES")),
    ("00000004_000.png", ("NO", "NO", "NO")),
]


def cxr14_labels(folder: Path, suffix: str = ".jpg") -> Path:
    """``test_labels.csv``; the images are stored as ``.jpg`` (the 512-px copies)."""
    path = folder / "test_labels.csv"
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "Image Index",
                "Patient ID",
                "Fracture",
                "Pneumothorax",
                "Airspace opacity",
                "Nodule or mass",
            ]
        )
        for k, (name, labels) in enumerate(CXR14_ROWS):
            image(folder / "images" / name.replace(".png", suffix), 40 * k)
            writer.writerow([name, k, *labels, "NO"])
    return path


REPORTS = [
    ("s1", "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."),
    ("s2", "There is mild cardiomegaly. Small left pleural effusion is present."),
    ("s3", "Lungs are clear without focal consolidation. No acute cardiopulmonary process."),
]


def mimic_reports(folder: Path) -> Path:
    """LLaVA-style report test.json (one lateral row, filtered out)."""
    records = []
    for k, (sid, report) in enumerate(REPORTS):
        image(folder / "images" / f"{sid}.jpg", 60 * k)
        records.append(
            {
                "id": sid,
                "image": f"{sid}.jpg",
                "view": "PA",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image in detail."},
                    {"from": "gpt", "value": report},
                ],
            }
        )
    image(folder / "images" / "lat.jpg")
    records.append(
        {
            "id": "lat",
            "image": "lat.jpg",
            "view": "LATERAL",
            "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}],
        }
    )
    path = folder / "test.json"
    path.write_text(json.dumps(records))
    return path
