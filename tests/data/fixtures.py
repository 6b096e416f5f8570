"""Tiny datasets in each builder's official distribution format, written by the tests.

Every writer creates a few rows plus tiny images/volumes under a folder and
returns the path to give as ``--source``. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Test rows of the VQA-RAD fixture (2 train, 2 test phrase types; one numeric answer).
VQA_RAD_RECORDS: list[dict[str, Any]] = [
    {
        "qid": 1,
        "phrase_type": "freeform",
        "qid_linked_id": "03f451ca-de62-4617-9679-e836026a7642",
        "image_case_url": "https://medpix.nlm.nih.gov/case?id=x",
        "image_name": "synpic54610.jpg",
        "image_organ": "HEAD",
        "evaluation": "not evaluated",
        "question": "Are regions of the brain infarcted?",
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
        "question_type": "PRES",
        "answer": "Yes",
        "answer_type": "CLOSED",
    },
    {
        "qid": 2,
        "phrase_type": "para",
        "image_name": "synpic29265.jpg",
        "image_organ": "CHEST",
        "question": "How many lesions are in the lung?",
        "question_type": "COUNT",
        "answer": 2,
        "answer_type": "OPEN",
    },
    {
        "qid": 3,
        "phrase_type": "test_freeform",
        "image_name": "synpic54610.jpg",
        "image_organ": "HEAD",
        "question": "Is the lesion hyperdense?",
        "question_type": "ATTRIB",
        "answer": "no",
        "answer_type": "CLOSED ",
    },
    {
        "qid": 4,
        "phrase_type": "test_para",
        "image_name": "synpic29265.jpg",
        "image_organ": "CHEST",
        "question": "Where is the mass?",
        "question_type": "POS",
        "answer": "right upper lobe",
        "answer_type": "OPEN",
    },
]


def tiny_image(path: Path, seed: int = 0, size: tuple[int, int] = (16, 16)) -> Path:
    """Write a small seeded noise image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_vqa_rad(root: Path, records: Sequence[dict[str, Any]] | None = None) -> Path:
    """The OSF layout: ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``."""
    rows = list(VQA_RAD_RECORDS if records is None else records)
    root.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows, indent=4))
    for i, name in enumerate(sorted({str(r.get("image_name")) for r in rows if "image_name" in r})):
        tiny_image(root / "VQA_RAD Image Folder" / name, seed=i)
    return root


def write_slake(root: Path) -> Path:
    """The Slake1.0 layout: ``train/validate/test.json`` + ``imgs/xmlabN/source.jpg``."""

    def record(qid: int, img: int, lang: str, question: str, answer: str, kind: str) -> dict:
        return {
            "img_id": img,
            "img_name": f"xmlab{img}/source.jpg",
            "question": question,
            "answer": answer,
            "q_lang": lang,
            "location": "Lung",
            "modality": "X-Ray",
            "answer_type": kind,
            "base_type": "vqa",
            "content_type": "Abnormality",
            "triple": ["vhead", "_", "_"],
            "qid": qid,
        }

    splits = {
        "train.json": [
            record(0, 0, "en", "What modality is used?", "X-Ray", "OPEN"),
            record(1, 0, "zh", "这是什么?", "X光", "OPEN"),
            record(2, 1, "en", "Is the lung healthy?", "No", "CLOSED"),
        ],
        "validate.json": [record(10, 1, "en", "Which organ is abnormal?", "Lung", "OPEN")],
        "test.json": [record(20, 0, "en", "Is this a CT?", "No", "CLOSED")],
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        (root / name).write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    for img in (0, 1):
        tiny_image(root / "imgs" / f"xmlab{img}" / "source.jpg", seed=img)
    return root


def write_pathvqa(root: Path) -> Path:
    """The Hugging Face layout: ``data/{train,validation,test}-0000N-of-0000M.parquet``."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(seed: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(
            np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
        ).save(buffer, format="PNG")
        return buffer.getvalue()

    files = {
        "train-00000-of-00002.parquet": [(0, "Is this tissue necrotic?", "yes")],
        "train-00001-of-00002.parquet": [(1, "What stain is used?", "hematoxylin and eosin")],
        "validation-00000-of-00001.parquet": [(0, "Is there fibrosis?", "no")],
        "test-00000-of-00001.parquet": [
            (2, "What organ is shown?", "liver"),
            (2, "Is it normal?", "no"),
        ],
    }
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        table = pa.table(
            {
                "image": [{"bytes": png(s), "path": f"{s}.png"} for s, _, _ in rows],
                "question": [q for _, q, _ in rows],
                "answer": [a for _, _, a in rows],
            }
        )
        pq.write_table(table, root / "data" / name)
    return root


def write_mimic(root: Path, *, missing: bool = False) -> Path:
    """The R2Gen layout: ``annotation.json`` + ``images/p10/...jpg``."""

    def entry(i: int, split: str) -> dict:
        return {
            "id": f"dicom{i}",
            "study_id": 50000000 + i,
            "subject_id": 10000000 + i,
            "report": f"The lungs are clear.\n No effusion  {i}.",
            "image_path": [f"p10/p1000000{i}/s5000000{i}/dicom{i}.jpg"],
            "split": split,
        }

    data = {
        "train": [entry(0, "train"), entry(1, "train")],
        "val": [entry(2, "val")],
        "test": [entry(3, "test")],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(data))
    for split in data.values():
        for e in split:
            if missing and e["id"] == "dicom1":
                continue
            tiny_image(root / "images" / e["image_path"][0], seed=int(e["id"][-1]))
    return root


def iu_reports_archive() -> Path:
    """The real NLMCXR reports archive shipped in the torchxrayvision wheel."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    assert spec is not None and spec.origin is not None
    return Path(os.path.dirname(spec.origin)) / "data" / "NLMCXR_reports.tgz"


def write_chexpert(root: Path) -> Path:
    """The CheXpert-v1.0-small layout: ``train.csv``/``valid.csv`` + JPEGs (real header)."""
    header = [
        "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
        "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
        "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
        "Pleural Other", "Fracture", "Support Devices",
    ]  # fmt: skip
    prefix = "CheXpert-v1.0-small"
    train = [
        [f"{prefix}/train/patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal",
         "AP", "1.0", "", "", "", "", "", "", "", "", "0.0", "", "", "", "1.0"],
        [f"{prefix}/train/patient00002/study2/view1_frontal.jpg", "Female", "87", "Frontal",
         "AP", "", "", "-1.0", "1.0", "", "-1.0", "-1.0", "", "-1.0", "", "-1.0", "", "1.0", ""],
        [f"{prefix}/train/patient00002/study1/view2_lateral.jpg", "Female", "83", "Lateral",
         "", "", "", "", "1.0", "", "", "-1.0", "", "", "", "", "", "1.0", ""],
    ]  # fmt: skip
    valid = [
        [f"{prefix}/valid/patient64541/study1/view1_frontal.jpg", "Male", "73", "Frontal", "AP",
         "0.0", "1.0", "1.0", "1.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0",
         "0.0", "0.0"],
    ]  # fmt: skip
    folder = root / prefix
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        for i, row in enumerate(rows):
            tiny_image(root / row[0], seed=i, size=(32, 32))
    return folder


def probabilities_for(keys: Sequence[str], seed: int = 0) -> dict[str, dict[str, float]]:
    """Seeded CXR-expert probabilities (the expert's 18 labels) for each key."""
    from medm3.experts.cxr import LABELS

    rng = np.random.default_rng(seed)
    return {k: {lab: round(float(rng.uniform()), 4) for lab in LABELS} for k in keys}


def write_nih(root: Path) -> Path:
    """The ChestX-ray14 layout: ``Data_Entry_2017_v2020.csv`` + lists + ``images_001/images``."""
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
              "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
              "OriginalImagePixelSpacing[x", "y]"]  # fmt: skip
    meta = ["0", "1", "57", "M", "PA", "2682", "2749", "0.143", "0.143"]
    rows = [
        ["00000001_000.png", "Cardiomegaly", *meta],
        ["00000001_001.png", "Cardiomegaly|Emphysema", *meta],
        ["00000002_000.png", "No Finding", *meta],
    ]  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "Data_Entry_2017_v2020.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n")
    (root / "test_list.txt").write_text("00000002_000.png\n")
    for i, row in enumerate(rows):
        tiny_image(root / "images_001" / "images" / row[0], seed=i, size=(32, 32))
    return root


# ------------------------------------------------------------------ volumes
def save_nifti(array: np.ndarray, path: Path, spacing: Sequence[float]) -> Path:
    """Save an array as NIfTI with a diagonal (RAS) affine."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*[float(s) for s in spacing], 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def ct_phantom(seed: int, *, tumour: bool) -> tuple[np.ndarray, np.ndarray]:
    """A tiny CT (HU) with a "liver" box (label 1), a "spleen" box (3) and maybe tumours (2).

    Label values follow an MSD-style dataset: 1 liver, 2 cancer, 3 spleen.
    """
    rng = np.random.default_rng(seed)
    shape = (24, 20, 10)
    ct = rng.normal(-900, 20, size=shape).astype(np.int16)
    labels = np.zeros(shape, np.uint8)
    ct[3:13, 3:15, 2:8] = 60
    labels[3:13, 3:15, 2:8] = 1
    ct[16:21, 10:16, 3:7] = 45
    labels[16:21, 10:16, 3:7] = 3
    if tumour:
        ct[5:8, 5:8, 3:6] = 20
        labels[5:8, 5:8, 3:6] = 2
        ct[10:12, 11:13, 4:6] = 20
        labels[10:12, 11:13, 4:6] = 2
    return ct, labels


def write_msd(root: Path, n: int = 2) -> Path:
    """A Medical-Segmentation-Decathlon style CT set (liver task naming + a spleen label)."""
    root.mkdir(parents=True, exist_ok=True)
    dataset = {
        "name": "Liver",
        "description": "Liver and tumour segmentation",
        "labels": {"0": "background", "1": "liver", "2": "cancer", "3": "spleen"},
        "numTraining": n,
        "training": [
            {"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
            for i in range(n)
        ],
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for i in range(n):
        ct, labels = ct_phantom(i, tumour=i % 2 == 0)
        save_nifti(ct, root / "imagesTr" / f"liver_{i}.nii.gz", (3.0, 3.0, 3.0))
        save_nifti(labels, root / "labelsTr" / f"liver_{i}.nii.gz", (3.0, 3.0, 3.0))
    return root


def brats_case(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four tiny MRI sequences and a BraTS segmentation (labels 1, 2, 4)."""
    rng = np.random.default_rng(seed)
    shape = (16, 16, 8)
    seg = np.zeros(shape, np.uint8)
    seg[4:12, 4:12, 2:6] = 2
    seg[6:10, 6:10, 3:5] = 1
    seg[7:9, 7:9, 3:5] = 4
    sequences = {
        key: (rng.uniform(100, 200, shape) + 50 * (seg > 0)).astype(np.float32)
        for key in ("t1", "t1ce", "t2", "flair")
    }
    return sequences, seg


def write_brats(root: Path) -> Path:
    """A BraTS 2018 style release: ``HGG/CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz`` + LGG."""
    for i, (grade, case) in enumerate((("HGG", "Brats18_TEST_1_1"), ("LGG", "Brats18_TEST_2_1"))):
        sequences, seg = brats_case(i)
        folder = root / grade / case
        for key, array in sequences.items():
            save_nifti(array, folder / f"{case}_{key}.nii.gz", (1.0, 1.0, 1.0))
        save_nifti(seg, folder / f"{case}_seg.nii.gz", (1.0, 1.0, 1.0))
    return root


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under a folder by relative path (byte-identity checks)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
