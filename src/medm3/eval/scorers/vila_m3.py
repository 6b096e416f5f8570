"""Protocol ``vila-m3``: exact-match accuracy of the VILA-M3 reference VQA metrics.

The reference (``metric_radvqa.py`` / ``metric_slakevqa.py`` / ``metric_pathvqa.py``):

* the ground truth of a question is its (last) ``gpt`` turn, ``strip().lower()``;
* the prediction is the ``text`` written for its ``question_id``, ``strip().lower()``
  (the generator already stripped it);
* correct when both strings are equal -- no other normalisation: ``"yes."`` is
  wrong for ``"yes"``;
* **denominator = all ground-truth items**: a question without a prediction
  counts as wrong. Ground truth and predictions are keyed by id (dicts), so a
  repeated id is counted once, with its last value;
* ids are compared as strings (PathVQA's reference does ``str(question_id)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from medm3.eval.scorers.common import Reference, ScoreResult, counted_notes, percent

__all__ = ["normalize", "score"]


def normalize(text: str) -> str:
    """``strip().lower()``: the only normalisation of the protocol."""
    return text.strip().lower()


def score(references: Iterable[Reference], predictions: Mapping[str, str]) -> ScoreResult:
    """Exact-match accuracy over all ground-truth items.

    Args:
        references: Ground-truth items.
        predictions: Question id (string) -> predicted text.

    Returns:
        Metrics ``accuracy`` (percent; ``None`` without items), ``n``,
        ``n_correct``, ``n_missing``; per-sample ``correct``. Closed/open
        breakdowns (``accuracy_closed`` / ``accuracy_open``) are added when the
        references carry answer types.
    """
    truth: dict[str, Reference] = {}
    for ref in references:
        truth[str(ref.id)] = ref
    per_sample: dict[str, dict[str, Any]] = {}
    by_type: dict[str, list[bool]] = {}
    missing = 0
    for qid, ref in truth.items():
        if qid not in predictions:
            missing += 1
        correct = qid in predictions and normalize(predictions[qid]) == normalize(ref.answer)
        per_sample[qid] = {"correct": correct}
        if ref.answer_type:
            by_type.setdefault(ref.answer_type.lower(), []).append(correct)
    n = len(truth)
    n_correct = sum(s["correct"] for s in per_sample.values())
    metrics: dict[str, Any] = {
        "accuracy": percent(n_correct, n),
        "n": n,
        "n_correct": n_correct,
        "n_missing": missing,
    }
    for kind, hits in sorted(by_type.items()):
        metrics[f"accuracy_{kind}"] = 100.0 * sum(hits) / len(hits)
    notes = counted_notes((missing, "question(s) without a prediction counted wrong"))
    return ScoreResult(metrics, per_sample, notes)
