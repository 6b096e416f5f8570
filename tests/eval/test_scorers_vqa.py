"""VQA scorers on hand-computed cases, including the reference scripts' quirks."""

from __future__ import annotations

import pytest

from medm3.eval.scorers import llava_med, vila_m3
from medm3.eval.scorers.common import Reference, normalize_answer_type


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes.", "yes"),  # period not followed by a digit: deleted
        ("3.5 cm", "3.5 cm"),  # period before a digit: kept
        ("the left lung", "left lung"),  # articles dropped
        ("an apple a day", "apple day"),
        ("one", "1"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only none/zero..ten are mapped
        ("x-ray", "x ray"),  # '-' touches no space: becomes a space
        ("left - right", "left right"),  # '-' next to a space: deleted
        ("1,000 cells, mostly", "1000 cells mostly"),  # digit,digit: every punctuation deleted
        ("a, b", "b"),  # ',' next to a space: deleted; then 'a' is an article
        ("(yes)", "yes"),
        ("dont", "don't"),  # contractions expanded (lower-case table)
        ("isnt it", "isn't it"),
        ("im", "im"),  # the table's 'Im' has a capital and never matches
        ("what's up?", "what's up"),  # apostrophes are not punctuation here
        ("a/b", "b"),  # '/' -> space, then 'a' dropped
    ],
)
def test_normalize_word(text: str, expected: str) -> None:
    assert llava_med.normalize_word(text) == expected


def test_normalize_word_deletes_only_32_periods() -> None:
    # The reference passes re.UNICODE (== 32) as the `count` argument of Pattern.sub.
    assert llava_med.normalize_word("x." * 40) == "x" * 32 + "x." * 8


def _refs(*items: tuple[str, str, str]) -> list[Reference]:
    return [Reference(qid, answer, kind) for qid, answer, kind in items]


def test_llava_med_closed_substring_rule_and_denominators() -> None:
    refs = _refs(
        ("1", "no", "CLOSED"),
        ("2", "no", "CLOSED"),
        ("3", "yes", "CLOSED"),
        ("4", "yes", "CLOSED"),
        ("5", "yes", "CLOSED"),
    )
    preds = {
        "1": "The heart is normal.",  # 'normal' contains 'no': counted correct (quirk)
        "2": "Yes and no",  # holds both yes and no: correct whatever the truth
        "3": "No.",  # yes/no present, truth absent: wrong, dropped by the legacy script
        "4": "I think so",  # neither yes nor no: wrong, kept in every denominator
        "5": "Yes",
    }
    result = llava_med.score(refs, preds)
    m = result.metrics
    assert m["closed"] == pytest.approx(100 * 3 / 5)
    assert m["closed_legacy"] == pytest.approx(100 * 3 / 4)
    assert (m["n_closed"], m["n_open"], m["open_recall"]) == (5, 0, None)
    assert [result.per_sample[i]["correct"] for i in "12345"] == [True, True, False, False, True]
    assert result.per_sample["1"]["norm_prediction"] == "heart is normal"


def test_llava_med_open_recall_by_hand() -> None:
    refs = _refs(
        ("a", "left upper lobe", "OPEN"),
        ("b", "lung", "OPEN"),
        ("c", "2", "OPEN"),
        ("d", "liver", "OPEN"),
    )
    preds = {
        "a": "The left lobe",  # tp 2 (left, lobe), fn 1 (upper): 2/3
        "b": "lung lung heart",  # tp counts the prediction's repeats: 2 / (2 + 0) = 1
        "c": "Two.",  # number word -> 2
        "d": "",  # empty prediction: 0
    }
    result = llava_med.score(refs, preds)
    assert result.metrics["open_recall"] == pytest.approx(100 * (2 / 3 + 1 + 1 + 0) / 4)
    assert result.per_sample["a"]["recall"] == pytest.approx(2 / 3)
    assert result.metrics["closed"] is None


def test_llava_med_missing_and_unknown_type() -> None:
    refs = _refs(("1", "yes", "CLOSED"), ("2", "no", "closed "), ("3", "x", "weird"))
    result = llava_med.score(refs, {"1": "yes"})
    m = result.metrics
    assert (m["n_missing"], m["n_ignored"], m["n_closed"]) == (2, 1, 2)
    assert m["closed"] == pytest.approx(50.0)  # the missing closed answer counts wrong
    assert m["closed_legacy"] == pytest.approx(50.0)  # an empty answer has no yes/no
    assert any("without a prediction" in n for n in result.notes)


def test_open_recall_normalises_again() -> None:
    # calculate_f1score normalises its (already normalised) inputs a second time.
    assert llava_med.open_recall("right - lung", "right lung") == 1.0


def test_vila_m3_exact_match_strip_lower() -> None:
    refs = _refs(
        ("1", "Yes", "CLOSED"), ("2", "no", "CLOSED"), ("3", "yes", "CLOSED"), ("4", "no", "")
    )
    preds = {"1": "  yes \n", "2": "No.", "3": "YES"}  # '4' missing
    result = vila_m3.score(refs, preds)
    m = result.metrics
    assert m["accuracy"] == pytest.approx(50.0)  # 2 of 4: the missing one counts wrong
    assert (m["n"], m["n_correct"], m["n_missing"]) == (4, 2, 1)
    assert m["accuracy_closed"] == pytest.approx(100 * 2 / 3)
    assert [result.per_sample[i]["correct"] for i in "1234"] == [True, False, True, False]


def test_vila_m3_repeated_ids_count_once_with_last_value() -> None:
    refs = _refs(("1", "yes", ""), ("1", "no", ""), ("2", "no", ""))
    result = vila_m3.score(refs, {"1": "no", "2": "no"})
    assert result.metrics["n"] == 2
    assert result.metrics["accuracy"] == 100.0


@pytest.mark.parametrize(
    ("value", "answer", "expected"),
    [
        ("CLOSED", "", "CLOSED"),
        (" open ", "", "OPEN"),
        ("yes/no", "", "CLOSED"),
        ("other", "", "OPEN"),
        ("number", "", "OPEN"),
        (None, "Yes", "CLOSED"),
        (None, "left lung", "OPEN"),
        (None, "", ""),
        ("strange", "yes", ""),
    ],
)
def test_normalize_answer_type(value: object, answer: str, expected: str) -> None:
    assert normalize_answer_type(value, answer) == expected
