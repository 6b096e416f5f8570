"""Report builders: mimic-cxr (R2Gen annotation) and iu-xray on the real NLMCXR reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from medm3 import prompts
from medm3.data.engine import build_dataset
from medm3.data.llava import read_dataset
from medm3.errors import InputError
from tests.data.fixtures import iu_reports_archive, tiny_image, write_mimic


def test_mimic_cxr(tmp_path: Path) -> None:
    source = write_mimic(tmp_path / "mimic", missing=True)
    summary = build_dataset("mimic-cxr", source, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert {k: len(v) for k, v in data.items()} == {"train": 1, "val": 1, "test": 1}
    row = data["train"][0]
    assert row["conversations"][0]["value"] == prompts.report_turn()
    assert row["conversations"][0]["value"] == "<image>\nDescribe the image in detail."
    assert row["conversations"][1]["value"] == "The lungs are clear. No effusion 0."
    assert row["image"] == "images/p10/p10000000/s50000000/dicom0.jpg"
    assert row["question_type"] == "report"
    assert summary.manifest["skipped"]["rows"] == [
        {"id": "mimic-cxr/train/dicom1", "reason": "image file missing"}
    ]


def test_mimic_cxr_text_rows_with_allow_missing_images(tmp_path: Path) -> None:
    source = write_mimic(tmp_path / "mimic", missing=True)
    build_dataset("mimic-cxr", source, tmp_path / "out", options={"allow_missing_images": True})
    row = read_dataset(tmp_path / "out")["train"][1]
    assert "image" not in row
    assert row["conversations"][0]["value"] == prompts.REPORT_PROMPT


def test_iu_xray_real_reports_as_text_rows(tmp_path: Path) -> None:
    archive = iu_reports_archive()
    if not archive.is_file():
        pytest.skip("torchxrayvision's NLMCXR_reports.tgz is not installed")
    summary = build_dataset(
        "iu-xray", archive, tmp_path / "out", options={"allow_missing_images": True}
    )
    manifest = summary.manifest
    assert manifest["source_items"] == 3955
    assert manifest["skipped"]["reasons"] == {"empty report": 28}
    assert manifest["bad"]["count"] == 0
    counts = {k: v["rows"] for k, v in manifest["counts"].items()}
    assert sum(counts.values()) == 3927
    assert 0.65 < counts["train"] / 3927 < 0.75 and 0.15 < counts["test"] / 3927 < 0.25
    data = read_dataset(tmp_path / "out")
    rows = {r["id"]: r for split in data.values() for r in split}
    first = rows["iu-xray/CXR1"]
    assert first["conversations"][0]["value"] == prompts.REPORT_PROMPT
    assert first["conversations"][1]["value"].startswith(
        "The cardiac silhouette and mediastinum size are within normal limits."
    )
    assert first["conversations"][1]["value"].endswith("Normal chest x-XXXX.")
    assert first["image_ids"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]


def test_iu_xray_with_images_and_without(tmp_path: Path) -> None:
    archive = iu_reports_archive()
    if not archive.is_file():
        pytest.skip("torchxrayvision's NLMCXR_reports.tgz is not installed")
    images = tmp_path / "NLMCXR_png"
    tiny_image(images / "CXR1_1_IM-0001-3001.png")
    tiny_image(images / "CXR10_IM-0002-1001.png", seed=1)
    summary = build_dataset(
        "iu-xray", archive, tmp_path / "out", options={"images": str(images)}, limit=12
    )
    assert summary.manifest["total_rows"] == 2
    assert summary.manifest["skipped"]["count"] == 10
    rows = [r for split in read_dataset(tmp_path / "out").values() for r in split]
    assert {r["image"] for r in rows} == {
        "images/CXR1_1_IM-0001-3001.png",
        "images/CXR10_IM-0002-1001.png",
    }
    assert all(r["conversations"][0]["value"] == prompts.report_turn() for r in rows)
    with pytest.raises(InputError, match=r"no rows were produced .*image missing"):
        build_dataset("iu-xray", archive, tmp_path / "out2", limit=20)
    assert not (tmp_path / "out2").exists()
