"""Yes/no classification (CheXpert, ChestX-ray14): answer parsing, per-class F1, macro F1.

Answer parsing (:func:`parse_yes_no`), as specified for protocol ``vila-m3``:
lower-case and strip; when ``"answer: "`` occurs, delete every ``"answer:"``;
when ``"a: "`` occurs, delete it; take the first match of ``(yes|no)`` anywhere in
the text (a substring match: ``"cannot"``, ``"normal"`` and ``"know"`` read as
``no``); nothing found -> ``no``.

The reference scripts (``metric_chexpert.py``) went further: they first kept the
text inside the first ``(...)`` and searched ``(yes|no|a|b|c|d)``, so an answer
like "there is cardiomegaly" read as choice "c" and pushed the class out of
binary F1 (scored 0 by their ``except ValueError``). Those multiple-choice
leftovers are not reproduced; the yes/no rule above is the protocol.

Scoring: for each class, binary F1 with "yes" as the positive label,
``2 tp / (2 tp + fp + fn)``, 0 when a class has no positive truth and no positive
prediction (sklearn's ``zero_division`` default); ``f1_macro`` is the mean over
the classes present, all x 100.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from medm3.eval.scorers.common import Reference, ScoreResult, counted_notes, percent

__all__ = ["binary_f1", "parse_yes_no", "score", "truth_is_positive"]

_YES_NO = re.compile(r"(yes|no)")
_POSITIVE = frozenset({"yes", "1", "1.0", "true", "y", "positive"})


def parse_yes_no(text: str) -> str:
    """``"yes"`` or ``"no"`` from a model answer (see the module docstring).

    Args:
        text: The generated answer.
    """
    return _parse(text) or "no"


def _parse(text: str) -> str | None:
    t = text.strip().lower()
    if "answer: " in t:
        t = t.replace("answer:", "").strip()
    if "a: " in t:
        t = t.replace("a: ", "").strip()
    match = _YES_NO.search(t)
    return match.group(0) if match else None


def truth_is_positive(value: Any) -> bool:
    """Whether a ground-truth cell means "present".

    ``yes``/``1``/``1.0``/``true`` (any case) are positive; everything else
    (``0``, ``no``, empty, uncertain ``-1``) negative. The reference label files
    use ``0``/``1`` (CheXlocalize) and ``YES``/``NO`` (Google's ChestX-ray14
    labels), on which this agrees with its substring tests.

    Args:
        value: A label cell or answer.
    """
    return str(value).strip().lower() in _POSITIVE


def binary_f1(truth: Iterable[bool], predicted: Iterable[bool]) -> float:
    """Binary F1 of the positive class (0.0 when undefined), as a fraction.

    Args:
        truth: Ground-truth positives.
        predicted: Predicted positives (same length).
    """
    tp = fp = fn = 0
    for t, p in zip(truth, predicted, strict=True):
        tp += t and p
        fp += p and not t
        fn += t and not p
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def score(references: Iterable[Reference], predictions: Mapping[str, str]) -> ScoreResult:
    """Per-class F1 and their macro mean.

    Args:
        references: One item per (image, class) question; ``label`` is the class
            and ``answer`` its truth (``yes``/``no``/``1``/``0``).
        predictions: Question id -> generated answer (missing -> parsed as ``no``).

    Returns:
        Metrics ``f1_macro``, ``f1/<class>`` (percent), ``n``, ``n_missing``,
        ``n_unparsed`` (answers with neither yes nor no); per-sample parsed answers.
    """
    truths: dict[str, list[bool]] = {}
    preds: dict[str, list[bool]] = {}
    per_sample: dict[str, dict[str, Any]] = {}
    missing = unparsed = 0
    for ref in references:
        text = predictions.get(ref.id)
        if text is None:
            missing += 1
            text = ""
        found = _parse(text)
        unparsed += found is None
        parsed = found or "no"
        truth = truth_is_positive(ref.answer)
        truths.setdefault(ref.label, []).append(truth)
        preds.setdefault(ref.label, []).append(parsed == "yes")
        per_sample[ref.id] = {"class": ref.label, "parsed": parsed, "truth": truth}
    f1 = {c: binary_f1(truths[c], preds[c]) for c in truths}
    metrics: dict[str, Any] = {
        "f1_macro": percent(sum(f1.values()), len(f1)),
        **{f"f1/{c}": 100.0 * v for c, v in f1.items()},
        "n": len(per_sample),
        "n_missing": missing,
        "n_unparsed": unparsed,
    }
    notes = counted_notes(
        (missing, "question(s) without a prediction read as 'no'"),
        (unparsed, "answer(s) with neither yes nor no read as 'no'"),
    )
    return ScoreResult(metrics, per_sample, notes)
