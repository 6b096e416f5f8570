"""VQA builders on tiny fixtures in their official formats: vqa-rad, slake, pathvqa."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3 import prompts
from medm3.data.engine import build_dataset
from medm3.data.llava import read_dataset, row_images
from medm3.errors import InputError
from tests.data.fixtures import write_pathvqa, write_slake, write_vqa_rad


def test_vqa_rad(tmp_path: Path) -> None:
    source = write_vqa_rad(tmp_path / "VQA_RAD")
    summary = build_dataset("vqa-rad", source, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert list(data) == ["train", "test"]
    assert [r["id"] for r in data["test"]] == ["vqa-rad/3", "vqa-rad/4"]
    first = data["train"][0]
    assert first["image"] == "images/synpic54610.jpg"
    assert first["conversations"] == [
        {"from": "human", "value": prompts.first_turn("Are regions of the brain infarcted?", None)},
        {"from": "gpt", "value": "Yes"},
    ]
    assert first["conversations"][0]["value"] == "<image>\nAre regions of the brain infarcted?"
    assert data["train"][1]["conversations"][1]["value"] == "2"  # numeric answers become text
    assert data["test"][0]["answer_type"] == "CLOSED"  # "CLOSED " normalised
    assert data["test"][0]["phrase_type"] == "test_freeform"
    assert summary.manifest["counts"]["test"]["answer_types"] == {"CLOSED": 1, "OPEN": 1}
    for rows in data.values():
        for row in rows:
            assert all((tmp_path / "out" / p).is_file() for p in row_images(row))


def test_vqa_rad_accepts_the_json_file_and_rejects_wrong_layouts(tmp_path: Path) -> None:
    source = write_vqa_rad(tmp_path / "VQA_RAD")
    build_dataset("vqa-rad", source / "VQA_RAD Dataset Public.json", tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"not a VQA-RAD release.*found readme\.txt"):
        build_dataset("vqa-rad", empty, tmp_path / "out2")
    (source / "VQA_RAD Dataset Public.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read the annotation file"):
        build_dataset("vqa-rad", source, tmp_path / "out3")


def test_slake_english_only_with_val_split(tmp_path: Path) -> None:
    source = write_slake(tmp_path / "Slake1.0")
    summary = build_dataset("slake", source, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert {k: len(v) for k, v in data.items()} == {"train": 2, "val": 1, "test": 1}
    assert all("这" not in json.dumps(r, ensure_ascii=False) for r in data["train"])
    row = data["train"][1]
    assert row["image"] == "images/xmlab1/source.jpg"
    assert row["answer_type"] == "CLOSED" and row["modality"] == "X-Ray"
    assert set(summary.manifest["source_checksums"]) == {"train.json", "validate.json", "test.json"}


def test_slake_wrong_layout(tmp_path: Path) -> None:
    source = write_slake(tmp_path / "Slake1.0")
    (source / "validate.json").unlink()
    with pytest.raises(InputError, match=r"missing validate\.json"):
        build_dataset("slake", source, tmp_path / "out")


def test_pathvqa_parquet(tmp_path: Path) -> None:
    source = write_pathvqa(tmp_path / "path-vqa")
    summary = build_dataset("pathvqa", source, tmp_path / "out")
    data = read_dataset(tmp_path / "out")
    assert {k: len(v) for k, v in data.items()} == {"train": 2, "val": 1, "test": 2}
    assert [r["answer_type"] for r in data["test"]] == ["OPEN", "CLOSED"]
    assert [r["question_type"] for r in data["test"]] == ["open", "yes/no"]
    assert data["test"][0]["image"] == data["test"][1]["image"]  # one file per distinct image
    assert len(list((tmp_path / "out" / "images").iterdir())) == 3
    assert data["train"][0]["conversations"][0]["value"] == "<image>\nIs this tissue necrotic?"
    assert len(summary.manifest["source_checksums"]) == 4


def test_pathvqa_wrong_layout(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    with pytest.raises(InputError, match="not a PathVQA parquet release"):
        build_dataset("pathvqa", tmp_path / "p", tmp_path / "out")
