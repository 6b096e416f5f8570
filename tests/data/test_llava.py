"""The LLaVA row format: construction, validation, reading and the manifest counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3.data.llava import dumps, make_row, read_rows, split_counts, validate_row, write_rows
from medm3.errors import InputError


def test_make_row_single_and_several_images() -> None:
    row = make_row("a", [("human", "<image>\nQ?"), ("gpt", "A")], ["x.png"], {"question_type": "q"})
    assert list(row) == ["id", "image", "conversations", "question_type"]
    several = make_row("b", [("human", "<image>\n<image>\nQ"), ("gpt", "A")], ["x.png", "y.png"])
    assert several["images"] == ["x.png", "y.png"] and "image" not in several
    text = make_row("c", [("human", "Q"), ("gpt", "A")])
    assert "image" not in text and "images" not in text


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"conversations": []}, "without a string id"),
        ({"id": "r", "conversations": [{"from": "gpt", "value": "x"}]}, "must be from 'human'"),
        ({"id": "r", "conversations": [{"from": "human", "value": "x"}]}, "last turn"),
        (
            {"id": "r", "conversations": [{"from": "human", "value": "<image>\nx"},
                                          {"from": "gpt", "value": "y"}]},
            "1 image tokens but 0 images",
        ),
        (
            {"id": "r", "image": "a.png", "conversations": [{"from": "human", "value": "x"},
                                                            {"from": "gpt", "value": "<image>"}]},
            "image token in a gpt turn",
        ),
    ],
)  # fmt: skip
def test_validate_row(row: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        validate_row(row)


def test_round_trip_and_counts(tmp_path: Path) -> None:
    rows = [
        make_row("a", [("human", "<image>\nQ"), ("gpt", "yes")], ["i.png"],
                 {"question_type": "closed", "answer_type": "CLOSED"}),
        make_row("b", [("human", "<image>\nQ"), ("gpt", "big")], ["i.png"],
                 {"question_type": "open", "answer_type": "OPEN"}),
    ]  # fmt: skip
    path = write_rows(tmp_path / "x.json", rows)
    assert path.read_text() == dumps(rows) and dumps(rows).endswith("]\n")
    assert read_rows(path) == rows
    assert split_counts(rows) == {
        "rows": 2,
        "images": 1,
        "question_types": {"closed": 1, "open": 1},
        "answer_types": {"CLOSED": 1, "OPEN": 1},
    }
    (tmp_path / "bad.json").write_text(json.dumps([{"id": "z", "conversations": []}]))
    with pytest.raises(InputError, match="row z: no conversations"):
        read_rows(tmp_path / "bad.json")


def test_meta_keys_cannot_shadow_row_keys() -> None:
    with pytest.raises(ValueError, match="meta key 'image' is reserved"):
        make_row("a", [("human", "Q"), ("gpt", "A")], meta={"image": "x.png"})
