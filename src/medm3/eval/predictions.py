"""``predictions.jsonl`` of eval runs (the writer lives in :mod:`medm3.utils.jsonl`)."""

from __future__ import annotations

from medm3.utils.jsonl import PredictionWriter, predictions_by_id, read_predictions

__all__ = ["PredictionWriter", "predictions_by_id", "read_predictions"]
