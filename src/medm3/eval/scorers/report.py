"""Report generation (MIMIC-CXR): output cleaning and the caption metrics.

Cleaning (:func:`clean_report`) reproduces the VILA-M3 reference
``report_updated/cleaning.py`` step by step:

1. delete newlines (``"\\n"`` and ``"\\r"`` are removed, *not* turned into spaces,
   so ``"Findings:\\nThe heart"`` becomes ``"Findings:The heart"``), collapse
   whitespace;
2. split into sentences after ``.`` (not after ``a.m``/``p.m``/``Dr`` and not
   before a digit), ``!`` and ``?`` (:func:`split_into_sentences`);
3. keep only the text after the first ``": "`` of a sentence (drops ``FINDINGS: ``);
4. skip to the first letter and capitalise it;
5. drop sentences of 6 characters or fewer, and sentences without a letter;
6. end each sentence with ``.`` unless it ends with ``.``/``!``/``?``;
7. drop repeated sentences (first kept) and sentences containing ``?``;
8. join with single spaces.

Scoring follows ``report_updated/metrics.py``: references are stripped,
predictions cleaned; **a prediction that cleans to nothing is dropped with its
reference** (the reference wrote no file for it and scored only files present),
reported as ``n_dropped``. Each pair is tokenised by pycocoevalcap's
``PTBTokenizer`` (Java) and scored with ``Bleu(4)``, ``Meteor()`` (Java),
``Rouge()`` and ``Cider()``; values are corpus-level as pycocoevalcap returns
them, x 100.

GREEN (a 7B judge model, CUDA) and RadGraph-F1 are computed only when their
packages (``green-score``, ``radgraph``) and weights are present; otherwise they
are reported as ``None`` with the reason under ``metrics["unavailable"]``, never
estimated. GREEN is the mean over pairs with a non-empty reference.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medm3.eval.scorers.common import Reference, ScoreResult

__all__ = [
    "COCO_METRICS",
    "clean_report",
    "coco_scores",
    "judge_scores",
    "require_coco",
    "score",
    "split_into_sentences",
]

#: Caption metrics, in the reference's order (our names).
COCO_METRICS: tuple[str, ...] = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "meteor",
    "rouge_l",
    "cider",
)
#: Hub id of the GREEN judge (override with ``MEDM3_GREEN_MODEL``).
GREEN_MODEL = "StanfordAIMI/GREEN-radllama2-7b"

_SENTENCE_END = re.compile(r"(?<!a\.m)(?<!p\.m)(?<!Dr)\.(?!\d)|(?<=[!?])")
_ENDS_WITH_PUNCT = re.compile(r"[.!?]$")


def split_into_sentences(paragraph: str) -> list[str]:
    """Split as the reference does, giving each piece back the character after it.

    A piece is followed in the paragraph (at its *first* occurrence, as the
    reference's ``str.find``) by the split character -- ``.`` -- or, after the
    zero-width split behind ``!``/``?``, by whatever comes next (often a space).

    Args:
        paragraph: One line of text.
    """
    pieces = _SENTENCE_END.split(paragraph)
    out = []
    for piece in pieces[:-1]:
        sentence = piece.strip()
        if sentence:
            end = paragraph.find(piece) + len(piece)
            out.append(sentence + paragraph[end : end + 1])
    if pieces[-1].strip():
        out.append(pieces[-1].strip())
    return out


def _skip_to_first_letter(sentence: str) -> str:
    for i, char in enumerate(sentence):
        if char.isalpha():
            return sentence[i].upper() + sentence[i + 1 :]
    return sentence


def clean_report(text: str) -> str:
    """Clean a generated report as the reference does (module docstring, steps 1-8).

    Args:
        text: The generated report.

    Returns:
        The cleaned report; ``""`` when no sentence survives.
    """
    report = text.replace("\n", "").replace("\r", "").strip()
    report = re.sub(r"\s+", " ", report).strip()
    sentences = split_into_sentences(report)
    sentences = [s.split(": ", 1)[-1] if ": " in s else s for s in sentences]
    sentences = [_skip_to_first_letter(s) for s in sentences]
    sentences = [s for s in sentences if len(s) > 6]
    sentences = [s[0].upper() + s[1:] for s in sentences if s and s[0].isalpha()]
    sentences = [
        s.strip() if _ENDS_WITH_PUNCT.search(s.strip()) else s.strip() + "." for s in sentences
    ]
    unique = list(dict.fromkeys(sentences))
    return " ".join(s for s in unique if "?" not in s)


def require_coco() -> None:
    """Check that the caption metrics can run: pycocoevalcap installed and Java on PATH.

    Raises:
        MissingDependencyError: pycocoevalcap is not installed.
        MedM3Error: No ``java`` (PTBTokenizer and METEOR need it).
    """
    import importlib.util

    from medm3.errors import MedM3Error, MissingDependencyError

    if importlib.util.find_spec("pycocoevalcap") is None:
        raise MissingDependencyError("pycocoevalcap", "eval", "Report metrics")
    if shutil.which("java") is None:
        raise MedM3Error(
            "report metrics need Java (pycocoevalcap's PTBTokenizer and METEOR): "
            "install a Java runtime, e.g. `apt-get install default-jre`"
        )


def coco_scores(pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
    """pycocoevalcap metrics of ``(reference, prediction)`` pairs, as fractions.

    Exactly the reference's ``compute_scores``: one reference and one prediction
    per id, ``PTBTokenizer`` on each side, then Bleu(4), Meteor, Rouge, Cider.

    Args:
        pairs: ``(reference, prediction)`` texts (at least one pair).

    Returns:
        ``bleu_1`` .. ``bleu_4``, ``meteor``, ``rouge_l``, ``cider``.

    Raises:
        MissingDependencyError: pycocoevalcap is not installed.
        MedM3Error: Java is not available (PTBTokenizer and METEOR need it).
    """
    require_coco()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"image_id": i, "caption": ref}] for i, (ref, _) in enumerate(pairs)}
    res = {i: [{"image_id": i, "caption": pred}] for i, (_, pred) in enumerate(pairs)}
    tokenizer = PTBTokenizer()
    gts_tok, res_tok = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts_tok, res_tok, verbose=0)
    out.update({f"bleu_{k + 1}": float(v) for k, v in enumerate(bleu)})
    meteor = Meteor()
    try:
        out["meteor"] = float(meteor.compute_score(gts_tok, res_tok)[0])
    finally:
        _close_meteor(meteor)
    out["rouge_l"] = float(Rouge().compute_score(gts_tok, res_tok)[0])
    out["cider"] = float(Cider().compute_score(gts_tok, res_tok)[0])
    return out


def _close_meteor(meteor: Any) -> None:
    """Stop METEOR's Java process now rather than at garbage collection."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None and proc.poll() is None:
        proc.stdin.close()
        proc.kill()
        proc.wait()
    meteor.meteor_p = _Stopped()


class _Stopped:
    """Stands in for METEOR's finished process so its ``__del__`` has nothing to do."""

    class _Pipe:
        def close(self) -> None:
            pass

    stdin = _Pipe()

    def kill(self) -> None:
        pass

    def wait(self) -> int:
        return 0


def judge_scores(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, float | None], dict[str, str]]:
    """GREEN and RadGraph-F1 where their packages and weights are present.

    Args:
        pairs: ``(reference, prediction)`` texts.

    Returns:
        ``({"green": ..., "radgraph_f1": ...}, {metric: why unavailable})``,
        values in percent or ``None``.
    """
    values: dict[str, float | None] = {"green": None, "radgraph_f1": None}
    unavailable: dict[str, str] = {}
    for name, func in (("green", _green), ("radgraph_f1", _radgraph)):
        try:
            values[name] = func(pairs)
        except _Unavailable as exc:
            unavailable[name] = str(exc)
        except Exception as exc:  # the judge could not run (weights offline, GPU memory ...)
            unavailable[name] = f"failed: {' '.join(str(exc).split())[:200]}"
    return values, unavailable


class _Unavailable(Exception):
    """A judge metric cannot be computed here (package, weights or GPU missing)."""


def _green(pairs: Sequence[tuple[str, str]]) -> float:
    try:
        from green_score import GREEN
    except ImportError:
        raise _Unavailable("package 'green-score' is not installed") from None
    import torch

    if not torch.cuda.is_available():
        raise _Unavailable("GREEN runs a 7B judge model and needs a CUDA GPU")
    kept = [(r, p) for r, p in pairs if r.strip()]
    if not kept:
        raise _Unavailable("no pair with a non-empty reference")
    with tempfile.TemporaryDirectory() as tmp:
        scorer = GREEN(os.environ.get("MEDM3_GREEN_MODEL", GREEN_MODEL), output_dir=tmp)
        _, _, scores, _, _ = scorer([r for r, _ in kept], [p for _, p in kept])
    return 100.0 * sum(float(s) for s in scores) / len(scores)


def _radgraph(pairs: Sequence[tuple[str, str]]) -> float:
    try:
        from radgraph import F1RadGraph
    except ImportError:
        raise _Unavailable("package 'radgraph' is not installed") from None
    scorer = F1RadGraph(reward_level="partial")
    result = scorer(hyps=[p for _, p in pairs], refs=[r for r, _ in pairs])
    return 100.0 * float(result[0])


def score(
    references: Iterable[Reference],
    predictions: Mapping[str, str],
    *,
    judges: bool = True,
) -> ScoreResult:
    """Clean the predictions and score them against the references.

    Args:
        references: One reference report per id.
        predictions: Id -> generated report (missing ids are dropped like empty ones).
        judges: Try GREEN and RadGraph-F1 (skipped: reported unavailable).

    Returns:
        Metrics of :data:`COCO_METRICS` plus ``green``, ``radgraph_f1`` (percent or
        ``None``), ``n`` (pairs scored), ``n_dropped``, ``unavailable``;
        per-sample cleaned predictions.

    Raises:
        MedM3Error: Java or pycocoevalcap missing.
    """
    per_sample: dict[str, dict[str, Any]] = {}
    pairs: list[tuple[str, str]] = []
    dropped = 0
    for ref in references:
        cleaned = clean_report(predictions.get(ref.id, ""))
        per_sample[ref.id] = {"cleaned": cleaned, "scored": bool(cleaned)}
        if cleaned:
            pairs.append((ref.answer.strip(), re.sub(r"\s+", " ", cleaned).strip()))
        else:
            dropped += 1
    metrics: dict[str, Any] = dict.fromkeys(COCO_METRICS)
    notes = []
    if pairs:
        metrics.update({k: 100.0 * v for k, v in coco_scores(pairs).items()})
    else:
        notes.append("no prediction survived cleaning: nothing to score")
    unavailable: dict[str, str] = {}
    if judges and pairs:
        values, unavailable = judge_scores(pairs)
        metrics.update(values)
    else:
        metrics.update({"green": None, "radgraph_f1": None})
        reason = "not requested" if not judges else "nothing to score"
        unavailable = {"green": reason, "radgraph_f1": reason}
    metrics.update({"n": len(pairs), "n_dropped": dropped, "unavailable": unavailable})
    if dropped:
        notes.append(f"{dropped} prediction(s) empty after cleaning, dropped with their reference")
    notes += [f"{k} unavailable: {v}" for k, v in unavailable.items()]
    return ScoreResult(metrics, per_sample, notes)
