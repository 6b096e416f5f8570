"""Protocol ``llava-med``: the scoring of LLaVA-Med v1.0 ``llava/eval/run_eval.py``.

Both texts are lower-cased and passed through :func:`normalize_word`, then:

* **CLOSED** questions are correct when the normalised prediction contains
  ``"yes"`` or ``"no"`` as a *substring* and contains the normalised ground
  truth as a substring. Substrings, not words: ``"normal"`` and ``"cannot"``
  contain ``"no"``, so "the heart is normal" is a correct answer to a question
  whose answer is "no"; an answer holding both "yes" and "no" is correct
  whatever the truth. This is the rule behind the published numbers.
* **Denominator**: ``closed`` divides by all closed questions (as LLaVA-Med's
  fixed script does). The original v1.0 script appended nothing for a
  prediction that holds yes/no but not the truth, so such misses left the
  denominator; that inflated figure is reported as ``closed_legacy``.
* **OPEN** questions score the unigram recall of ``calculate_f1score``, which
  normalises its inputs a second time: bags of words, ``tp`` = the prediction's
  counts of words also in the truth, ``fn`` = the truth's counts of words the
  prediction lacks, ``recall = tp / (tp + fn)``; 0 when either side is empty or
  ``tp`` is 0 (repeating a right word raises ``tp``). ``open_recall`` is the mean
  over open questions x 100.
* Missing predictions are scored as empty text (the reference asserts that
  ids match one to one): a closed miss stays in every denominator.

Answer types are read with :func:`~medm3.eval.scorers.common.normalize_answer_type`
(``yes/no`` counts as CLOSED); items of unknown type are ignored, as the
reference ignores anything but ``OPEN``/``CLOSED``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from medm3.eval.scorers._glossary import ARTICLES, CONTRACTIONS, NUMBER_WORDS, PUNCTUATION
from medm3.eval.scorers.common import (
    Reference,
    ScoreResult,
    counted_notes,
    normalize_answer_type,
    percent,
)

__all__ = ["normalize_word", "open_recall", "score", "score_closed"]

# The reference pattern is "(?!<=\d)(\.)(?!\d)": its first group is a typo for a
# look-behind and is a look-ahead for the text "<=digit", which can never start at a
# period, so it strips every period not followed by a digit.
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The reference calls period_strip.sub("", text, re.UNICODE): the third positional
# argument of Pattern.sub is `count`, and re.UNICODE == 32, so at most 32 periods go.
_PERIOD_STRIP_COUNT = 32


def normalize_word(text: str) -> str:
    """LLaVA-Med's ``normalize_word``, reproduced exactly.

    1. For each character of :data:`~._glossary.PUNCTUATION` in order: delete it
       everywhere when the *original* text has it before or after a space, or has
       ``digit,digit`` anywhere; else replace it by a space.
    2. Delete the first 32 periods not followed by a digit.
    3. Lower-case, split on whitespace, map number words (``none``/``zero``..``ten``
       -> ``0``..``10``), drop articles ``a``/``an``/``the``, expand contractions.
    4. Join with spaces and delete every comma.

    Args:
        text: Answer text (the reference lower-cases it first).

    Returns:
        The normalised text.
    """
    out = text
    digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)
    words = []
    for word in out.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    words = [CONTRACTIONS.get(w, w) for w in words]
    return " ".join(words).replace(",", "")


def _unigrams(text: str) -> Counter[str]:
    return Counter(text.lower().strip().split())


def open_recall(prediction: str, reference: str) -> float:
    """Unigram recall of ``calculate_f1score`` (inputs normalised once more), in [0, 1+].

    Args:
        prediction: Prediction, already lower-cased and normalised once.
        reference: Ground truth, already lower-cased and normalised once.
    """
    cand = _unigrams(normalize_word(prediction))
    ref = _unigrams(normalize_word(reference))
    if not cand or not ref:
        return 0.0
    tp = sum(n for w, n in cand.items() if w in ref)
    fn = sum(n for w, n in ref.items() if w not in cand)
    return tp / (tp + fn) if tp else 0.0


def score_closed(prediction: str, reference: str) -> tuple[bool, bool]:
    """The closed-question rule on normalised texts.

    Args:
        prediction: Normalised prediction.
        reference: Normalised ground truth.

    Returns:
        ``(correct, has_yes_no)``: correct as the reference counts it, and whether
        the prediction contains "yes" or "no" (for the legacy denominator).
    """
    has_yes_no = "yes" in prediction or "no" in prediction
    return has_yes_no and reference in prediction, has_yes_no


def score(references: Iterable[Reference], predictions: Mapping[str, str]) -> ScoreResult:
    """Score predictions under protocol ``llava-med``.

    Args:
        references: Ground-truth items (id, answer, answer type).
        predictions: Question id (string) -> predicted text.

    Returns:
        Metrics ``closed``, ``open_recall``, ``closed_legacy`` (percent or ``None``
        when there are no such questions), ``n_closed``, ``n_open``, ``n_missing``,
        ``n_ignored``; per-sample normalised texts and scores.
    """
    per_sample: dict[str, dict[str, Any]] = {}
    closed_hits = closed_total = legacy_total = 0
    recalls: list[float] = []
    missing = ignored = 0
    for ref in references:
        kind = normalize_answer_type(ref.answer_type)
        if ref.id not in predictions:
            missing += 1
        raw = predictions.get(ref.id, "")
        pred = normalize_word(raw.lower())
        gt = normalize_word(ref.answer.lower())
        item: dict[str, Any] = {"type": kind, "norm_prediction": pred, "norm_reference": gt}
        if kind == "CLOSED":
            correct, has_yes_no = score_closed(pred, gt)
            closed_total += 1
            closed_hits += correct
            legacy_total += correct or not has_yes_no
            item["correct"] = correct
        elif kind == "OPEN":
            recall = open_recall(pred, gt)
            recalls.append(recall)
            item["recall"] = recall
        else:
            ignored += 1
        per_sample[ref.id] = item
    metrics: dict[str, Any] = {
        "closed": percent(closed_hits, closed_total),
        "open_recall": percent(sum(recalls), len(recalls)),
        "closed_legacy": percent(closed_hits, legacy_total),
        "n_closed": closed_total,
        "n_open": len(recalls),
        "n_missing": missing,
        "n_ignored": ignored,
    }
    notes = counted_notes(
        (missing, "question(s) without a prediction scored as empty answers"),
        (ignored, "question(s) of unknown answer type ignored"),
    )
    return ScoreResult(metrics, per_sample, notes)
