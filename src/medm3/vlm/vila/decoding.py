"""The stop-string stopping criterion of the ``vila`` backend.

The answer is the decoded text of the tokens before the first stop token
(special tokens skipped), cut at the first stop string, then stripped, as the
reference does (``outputs.strip()``); the cutting rules live in
:mod:`medm3.vlm.stops`, shared with the ``hf`` backend.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria

from medm3.vlm.stops import cut_at_stop_ids


class StopStringCriteria(StoppingCriteria):
    """Stop a row once its generated text contains a stop string (or on cancel).

    The rows' generated tokens are decoded in full at each step, so detection
    agrees exactly with :func:`finalize_text`. Only used when stop strings are set
    or cancellation is needed.

    Args:
        tokenizer: Tokenizer used to decode.
        stops: Stop strings (may be empty).
        stop_ids: Stop token ids (text after them is ignored).
        min_new_tokens: No stop before this many tokens.
        cancel: When set, every row stops at the next step.
    """

    def __init__(
        self,
        tokenizer: Any,
        stops: Sequence[str],
        stop_ids: Sequence[int],
        min_new_tokens: int = 0,
        cancel: threading.Event | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.stop_ids = list(stop_ids)
        self.min_new_tokens = min_new_tokens
        self.cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """Per-row done flags."""
        rows = input_ids.shape[0]
        if self.cancel is not None and self.cancel.is_set():
            return torch.ones(rows, dtype=torch.bool, device=input_ids.device)
        done = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        if not self.stops or input_ids.shape[1] < self.min_new_tokens:
            return done
        for row in range(rows):
            tokens, _ = cut_at_stop_ids(input_ids[row].tolist(), self.stop_ids)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            done[row] = any(s in text for s in self.stops)
        return done
