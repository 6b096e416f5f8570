"""Scorers of the evaluation protocols, each reproducing its reference script.

* :mod:`.vila_m3` -- exact match (VQA-RAD, SLAKE, PathVQA as VILA-M3 reports them).
* :mod:`.llava_med` -- LLaVA-Med ``run_eval.py`` (closed substring rule, open recall).
* :mod:`.classification` -- yes/no parsing, per-class binary F1, macro mean.
* :mod:`.report` -- report cleaning and the pycocoevalcap caption metrics.

All metrics are returned as percentages (0-100), like the published tables.
"""

from __future__ import annotations

from medm3.eval.scorers.common import Reference, ScoreResult, normalize_answer_type

__all__ = ["Reference", "ScoreResult", "normalize_answer_type"]
