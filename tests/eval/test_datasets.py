"""Dataset loaders: LLaVA-style and official layouts, split rules, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3.errors import InputError
from medm3.eval.datasets import (
    load_classification,
    load_references,
    load_report,
    load_vqa,
)
from medm3.eval.tasks import CHEXPERT_CLS, CXR14_CLS
from tests.eval import fixtures


def test_llava_vqa_rad_split_rules(tmp_path: Path) -> None:
    data = fixtures.llava_vqa(tmp_path)
    vila = load_vqa(data, "vqa-rad", "vila-m3")
    assert [s.id for s in vila.samples] == ["r1", "r2", "r6"]  # closed, test phrase types
    med = load_vqa(tmp_path, "vqa-rad", "llava-med")  # the folder works too
    assert [s.id for s in med.samples] == ["r1", "r2", "r3", "r5", "r6"]
    s = med.samples[2]
    assert (s.question, s.answer, s.answer_type) == (
        "<image>\nWhich lobe is affected?",
        "left upper lobe",
        "OPEN",
    )
    assert s.image == tmp_path / "images" / "r3.png"
    assert med.counts == {"rows": 6, "kept": 5}


def test_official_vqa_rad(tmp_path: Path) -> None:
    fixtures.official_vqa_rad(tmp_path)
    loaded = load_vqa(tmp_path, "vqa-rad", "llava-med")
    assert loaded.data_file.name == "VQA_RAD Dataset Public.json"
    by_id = {s.id: s for s in loaded.samples}
    assert by_id["r5"].answer == "2"  # integer answers become text
    assert by_id["r1"].image == tmp_path / "VQA_RAD Image Folder" / "synpic0.jpg"
    assert len(load_vqa(tmp_path, "vqa-rad", "vila-m3").samples) == 3


def test_official_slake_keeps_english(tmp_path: Path) -> None:
    fixtures.official_slake(tmp_path)
    for protocol in ("vila-m3", "llava-med"):
        loaded = load_vqa(tmp_path, "slake", protocol)
        assert [s.id for s in loaded.samples] == ["1", "2", "3"]
        assert all(s.meta["q_lang"] == "en" for s in loaded.samples)
    assert loaded.samples[0].image == tmp_path / "imgs" / "xmlab0" / "source.jpg"


def test_pathvqa_parquet_bytes_and_yes_no(tmp_path: Path) -> None:
    fixtures.pathvqa_parquet(tmp_path)
    vila = load_vqa(tmp_path, "pathvqa", "vila-m3")
    assert [(s.id, s.answer) for s in vila.samples] == [("0", "yes"), ("2", "no")]
    assert isinstance(vila.samples[0].image, bytes)
    assert len(load_vqa(tmp_path, "pathvqa", "llava-med").samples) == 3


def test_chexlocalize_classification(tmp_path: Path) -> None:
    fixtures.chexlocalize(tmp_path)
    loaded = load_classification(tmp_path, "chexpert", CHEXPERT_CLS.classes)
    assert len(loaded.samples) == 15
    first = loaded.samples[:5]
    assert [s.label for s in first] == list(CHEXPERT_CLS.classes)  # image-major order
    assert first[0].id == "CheXpert-v1.0/test/patient1/study1|atelectasis"
    assert first[0].image == tmp_path / "test" / "patient1" / "study1" / "view1_frontal.jpg"
    assert [s.answer for s in first] == ["1", "0", "0", "1", "0"]
    assert any("pleural effusion <- 'Pleural Effusion'" in n for n in loaded.notes)


def test_cxr14_google_labels(tmp_path: Path) -> None:
    fixtures.cxr14_labels(tmp_path)
    loaded = load_classification(tmp_path, "cxr14", CXR14_CLS.classes)
    assert len(loaded.samples) == 12
    s = loaded.samples[5]
    assert (s.id, s.answer, s.label) == ("00000002_000.png|lung opacity", "YES", "lung opacity")
    assert s.image == tmp_path / "images" / "00000002_000.jpg"  # .png name, .jpg copy


def test_reports_frontal_only(tmp_path: Path) -> None:
    fixtures.mimic_reports(tmp_path)
    loaded = load_report(tmp_path)
    assert [s.id for s in loaded.samples] == ["s1", "s2", "s3"]
    assert loaded.samples[1].answer == fixtures.REPORTS[1][1]


def test_report_csv(tmp_path: Path) -> None:
    fixtures.image(tmp_path / "a.png")
    (tmp_path / "test.csv").write_text("image,report\na.png,No acute findings.\n")
    assert load_report(tmp_path).samples[0].answer == "No acute findings."


def test_split_field_and_duplicates(tmp_path: Path) -> None:
    fixtures.llava_vqa(tmp_path)
    rows = json.loads((tmp_path / "test.json").read_text())
    rows[0]["split"] = "train"
    rows.append(
        {**rows[1], "conversations": [rows[1]["conversations"][0], {"from": "gpt", "value": "yes"}]}
    )
    (tmp_path / "test.json").write_text(json.dumps(rows))
    loaded = load_vqa(tmp_path, "vqa-rad", "llava-med")
    assert [s.id for s in loaded.samples] == ["r2", "r3", "r5", "r6"]
    assert loaded.samples[0].answer == "yes"  # first position, last content
    assert any("repeated" in n for n in loaded.notes)


def test_image_folder_option(tmp_path: Path) -> None:
    fixtures.llava_vqa(tmp_path / "a")
    moved = tmp_path / "elsewhere"
    (tmp_path / "a" / "images").rename(moved)
    with pytest.raises(InputError, match=r"image 'r1\.png' not found"):
        load_vqa(tmp_path / "a", "vqa-rad", "vila-m3")
    assert len(load_vqa(tmp_path / "a", "vqa-rad", "vila-m3", moved).samples) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "expected a JSON list"),
        ("[1, 2]", "record 1 is not a JSON object"),
        ("[]", "no vqa-rad test question"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "test.json").write_text(content)
    with pytest.raises(InputError, match=message):
        load_vqa(tmp_path / "test.json", "vqa-rad", "llava-med")


def test_missing_class_column_and_ambiguous_folder(tmp_path: Path) -> None:
    fixtures.cxr14_labels(tmp_path)
    with pytest.raises(InputError, match="no label for 'edema'"):
        load_classification(tmp_path, "cxr14", ("edema",))
    (tmp_path / "one.json").write_text("[]")
    (tmp_path / "two.json").write_text("[]")
    with pytest.raises(InputError, match="cannot tell which file"):
        load_vqa(tmp_path, "slake", "vila-m3")
    with pytest.raises(InputError, match="data not found"):
        load_vqa(tmp_path / "nope.json", "slake", "vila-m3")


def test_load_references_per_protocol(tmp_path: Path) -> None:
    rows = [
        {
            "id": 7,
            "answer_type": "OPEN",
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "first"},
                {"from": "human", "value": "q2"},
                {"from": "gpt", "value": "last"},
            ],
        },
        {"qid": "8", "answer": "yes"},
    ]
    (tmp_path / "gt.json").write_text(json.dumps(rows))
    med = load_references(tmp_path / "gt.json", "llava-med")
    vila = load_references(tmp_path / "gt.json", "vila-m3")
    assert [(r.id, r.answer, r.answer_type) for r in med] == [
        ("7", "first", "OPEN"),
        ("8", "yes", ""),
    ]
    assert vila[0].answer == "last"
