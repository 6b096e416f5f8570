"""What the scorers share: ground-truth references, score results, percentages and notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Answer types read as closed (yes/no) questions.
CLOSED_TYPES = frozenset({"closed", "yes/no", "yes_no", "yesno"})
#: Answer types read as open questions (PathVQA's official "other" / "number" included).
OPEN_TYPES = frozenset({"open", "other", "number", "free-form", "freeform"})


@dataclass(frozen=True)
class Reference:
    """One ground-truth item.

    Attributes:
        id: Question id (compared as a string with prediction ids).
        answer: The ground-truth answer text.
        answer_type: ``CLOSED``, ``OPEN`` or ``""`` (unknown).
        label: For classification: the class the question is about.
    """

    id: str
    answer: str
    answer_type: str = ""
    label: str = ""


@dataclass
class ScoreResult:
    """What a scorer returns.

    Attributes:
        metrics: Metric name -> value (percentages; counts as ints; ``None`` when
            a metric cannot be computed, e.g. no closed questions).
        per_sample: Question id -> per-sample details (normalised texts, correctness).
        notes: Remarks on the scoring (dropped items, unavailable metrics ...).
    """

    metrics: dict[str, Any]
    per_sample: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def normalize_answer_type(value: Any, answer: str = "") -> str:
    """``CLOSED`` / ``OPEN`` / ``""`` from the answer-type spellings in use.

    ``CLOSED``/``OPEN`` in any case and padding (VQA-RAD, SLAKE, LLaVA-Med files);
    PathVQA's ``yes/no`` is closed and ``other``/``number`` open. A missing type
    is inferred from the answer only when ``answer`` is given: ``yes``/``no`` ->
    ``CLOSED``, anything else ``OPEN``; otherwise ``""``.

    Args:
        value: The answer-type field (may be ``None``).
        answer: The ground-truth answer, for inference when the type is missing.
    """
    text = str(value or "").strip().lower()
    if text in CLOSED_TYPES:
        return "CLOSED"
    if text in OPEN_TYPES:
        return "OPEN"
    if not text and answer:
        return "CLOSED" if answer.strip().lower() in ("yes", "no") else "OPEN"
    return ""


def percent(part: float, whole: float) -> float | None:
    """``100 * part / whole``, or ``None`` when there is nothing to divide by."""
    return 100.0 * part / whole if whole else None


def counted_notes(*remarks: tuple[int, str]) -> list[str]:
    """``"{count} {text}"`` for each ``(count, text)`` remark whose count is not zero."""
    return [f"{count} {text}" for count, text in remarks if count]
