"""Record helpers shared by the builders: ids, JSON objects, relative paths, VQA fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3.data.base import BadRow
from medm3.data.engine import build_dataset
from medm3.data.llava import read_dataset
from medm3.data.records import json_record, record_key, relative_path, vqa_fields
from tests.data.fixtures import write_mimic, write_slake


def test_record_key_falls_back_to_the_row_index() -> None:
    assert record_key({"qid": " 7 "}, "qid", 3) == "7"
    assert record_key({"qid": 0}, "qid", 3) == "0"
    assert record_key({"qid": ""}, "qid", 3) == "row3"
    assert record_key(["not", "a", "dict"], "qid", 4) == "row4"


def test_json_record_and_relative_path_refuse_bad_values() -> None:
    assert json_record({"a": 1}) == {"a": 1}
    with pytest.raises(BadRow, match="entry is not a JSON object"):
        json_record([1], "entry")
    assert relative_path("a/b.jpg", "x") == Path("a/b.jpg")
    with pytest.raises(BadRow, match=r"img_name must be relative to imgs/: '../etc/x.jpg'"):
        relative_path("../etc/x.jpg", "img_name must be relative to imgs/")
    with pytest.raises(BadRow, match="must be relative"):
        relative_path("/abs/x.jpg", "must be relative")


def test_vqa_fields_checks_in_order() -> None:
    record = {"question": " Q? ", "answer": 2, "img": "i.jpg", "answer_type": "closed "}
    assert vqa_fields(record, "img") == (record, "Q?", "2", "i.jpg", "CLOSED")
    with pytest.raises(BadRow, match="missing 'answer'"):
        vqa_fields({"question": "Q?", "img": "i.jpg"}, "img")
    with pytest.raises(BadRow, match="answer_type must be CLOSED or OPEN"):
        vqa_fields({**record, "answer_type": "maybe"}, "img")


def test_builders_report_bad_records(tmp_path: Path) -> None:
    source = write_slake(tmp_path / "slake")
    rows = json.loads((source / "train.json").read_text())
    rows[0]["img_name"] = "../outside.jpg"
    (source / "train.json").write_text(json.dumps(rows))
    summary = build_dataset("slake", source, tmp_path / "out", max_bad_fraction=0.5)
    bad = summary.manifest["bad"]["rows"]
    assert [b["id"] for b in bad] == ["slake/train/0"]
    assert "img_name must be relative to imgs/: '../outside.jpg'" in bad[0]["reason"]

    mimic = write_mimic(tmp_path / "mimic")
    data = json.loads((mimic / "annotation.json").read_text())
    data["train"][0] = ["not an object"]
    data["train"][1]["id"] = ""
    (mimic / "annotation.json").write_text(json.dumps(data))
    summary = build_dataset("mimic-cxr", mimic, tmp_path / "m", max_bad_fraction=0.5)
    assert summary.manifest["bad"]["rows"][0]["id"] == "mimic-cxr/train/row0"
    assert "entry is not a JSON object" in summary.manifest["bad"]["rows"][0]["reason"]
    assert [r["id"] for r in read_dataset(tmp_path / "m")["train"]] == ["mimic-cxr/train/row1"]
