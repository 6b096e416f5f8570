"""Classification parsing/F1 and report cleaning on hand-computed cases."""

from __future__ import annotations

import pytest

from medm3.errors import MedM3Error
from medm3.eval.scorers import classification, report
from medm3.eval.scorers.common import Reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: Yes.", "yes"),
        ("A: no", "no"),
        ("yes", "yes"),
        ("No, there is none.", "no"),
        ("Yes, but no effusion.", "yes"),  # first match wins
        ("The answer is no.", "no"),
        ("I cannot tell", "no"),  # 'cannot' contains 'no' (substring rule)
        ("not sure", "no"),
        ("Maybe.", "no"),  # unparseable -> no
        ("", "no"),
        ("There is cardiomegaly.", "no"),
        ("  YES  ", "yes"),
    ],
)
def test_parse_yes_no(text: str, expected: str) -> None:
    assert classification.parse_yes_no(text) == expected


@pytest.mark.parametrize(
    ("value", "positive"),
    [
        *[("1", True), ("1.0", True), ("YES", True), ("yes", True), (True, True), (1, True)],
        *[("0", False), ("NO", False), ("", False), ("-1", False), ("0.0", False)],
    ],
)
def test_truth_is_positive(value: object, positive: bool) -> None:
    assert classification.truth_is_positive(value) is positive


def test_per_class_f1_and_macro_by_hand() -> None:
    truth = {"a": [1, 1, 0, 0], "b": [0, 0, 0, 0], "c": [1, 0, 1, 0]}
    answers = {
        "a": ["Yes", "No", "yes", "no"],  # tp 1, fp 1, fn 1 -> F1 0.5
        "b": ["no", "no", "No.", "maybe"],  # nothing positive anywhere -> 0 (zero division)
        "c": ["Answer: Yes", "no", "yes", "no"],  # perfect -> 1
    }
    refs, preds = [], {}
    for cls, values in truth.items():
        for i, v in enumerate(values):
            qid = f"img{i}|{cls}"
            refs.append(Reference(qid, str(v), "CLOSED", cls))
            preds[qid] = answers[cls][i]
    del preds["img3|c"]  # missing -> 'no' (truth 0 there: still right)
    result = classification.score(refs, preds)
    m = result.metrics
    assert m["f1/a"] == pytest.approx(50.0)
    assert m["f1/b"] == 0.0
    assert m["f1/c"] == pytest.approx(100.0)
    assert m["f1_macro"] == pytest.approx(50.0)
    assert (m["n"], m["n_missing"], m["n_unparsed"]) == (12, 1, 2)
    assert result.per_sample["img0|c"] == {"class": "c", "parsed": "yes", "truth": True}


def test_binary_f1_matches_formula() -> None:
    assert classification.binary_f1([True, True, False], [True, False, True]) == pytest.approx(0.5)
    assert classification.binary_f1([False], [False]) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "FINDINGS: The heart is normal. The heart is normal. Is there edema? ok.",
            "The heart is normal.",
        ),
        # newlines are deleted, not spaced: the "label: " rule then no longer applies
        ("Impression:\nno acute disease", "Impression:no acute disease."),
        ("1. lungs are clear 2. no effusion", "Lungs are clear 2. No effusion."),
        ("Normal 3.5 cm nodule.", "Normal 3.5 cm nodule."),
        ("Heart ok. Ok.", "Heart ok."),  # 'Ok.' has <= 6 characters
        ("Wow, amazing! Big heart here", "Wow, amazing! Big heart here."),
        ("Wow! Big heart here", "Big heart here."),  # "Wow! " is only 5 characters
        ("?? ...", ""),
        ("", ""),
    ],
)
def test_clean_report(text: str, expected: str) -> None:
    assert report.clean_report(text) == expected


def test_split_into_sentences_keeps_abbreviations() -> None:
    assert report.split_into_sentences("Seen by Dr. Smith. At 3 p.m. today.") == [
        "Seen by Dr. Smith.",
        "At 3 p.",
        "m. today.",
    ]


def test_judges_unavailable_without_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_judges(name: str, *args: object, **kwargs: object) -> object:
        if name in ("green_score", "radgraph"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_judges)
    values, unavailable = report.judge_scores([("a b c", "a b c")])
    assert values == {"green": None, "radgraph_f1": None}
    assert "green-score" in unavailable["green"] and "radgraph" in unavailable["radgraph_f1"]


def test_report_metrics_need_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report.shutil, "which", lambda name: None)
    with pytest.raises(MedM3Error, match="Java"):
        report.coco_scores([("the heart is normal", "heart normal")])


def test_report_score_drops_empty_predictions_without_java_when_nothing_left() -> None:
    refs = [Reference("1", "The heart is normal."), Reference("2", "No effusion seen.")]
    result = report.score(refs, {"1": "??", "2": "ok"}, judges=False)
    m = result.metrics
    assert (m["n"], m["n_dropped"], m["bleu_4"]) == (0, 2, None)
    assert m["unavailable"]["green"] == "not requested"
    assert result.per_sample["1"] == {"cleaned": "", "scored": False}


def test_scorer_notes_and_percentages() -> None:
    from medm3.eval.scorers.common import counted_notes, percent

    assert percent(1, 4) == 25.0 and percent(0, 0) is None
    assert counted_notes((0, "none"), (2, "question(s) dropped")) == ["2 question(s) dropped"]
    refs = [Reference("a", "yes", label="Edema"), Reference("b", "no", label="Edema")]
    result = classification.score(refs, {"a": "maybe"})
    assert result.notes == [
        "1 question(s) without a prediction read as 'no'",
        "2 answer(s) with neither yes nor no read as 'no'",
    ]
    assert result.metrics["f1_macro"] == 0.0
