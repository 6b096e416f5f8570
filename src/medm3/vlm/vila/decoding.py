"""Stop handling and streaming helpers shared by ``generate``, ``stream`` and batches.

The answer is the decoded text of the tokens before the first stop token
(special tokens skipped), cut at the first stop string, then stripped, as the
reference does (``outputs.strip()``). :func:`safe_prefix` gives the part of a
growing text that can already be shown without ever being taken back, so the
concatenated stream equals the final answer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, TextIteratorStreamer


def cut_at_stop_ids(tokens: Sequence[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """Tokens before the first stop id, and whether one was found."""
    stops = set(stop_ids)
    for index, token in enumerate(tokens):
        if token in stops:
            return list(tokens[:index]), True
    return list(tokens), False


def finalize_text(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string and strip it.

    Returns:
        The answer and whether a stop string was found.
    """
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if hits:
        return text[: min(hits)].strip(), True
    return text.strip(), False


def safe_prefix(text: str, stops: Sequence[str]) -> str:
    """The prefix of the final answer that ``text`` (still growing) already fixes.

    Holds back trailing whitespace (the final strip may remove it) and any
    suffix that could be the start of a stop string.
    """
    final, hit = finalize_text(text, stops)
    if hit:
        return final
    body = text.lstrip()
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(body)), hold, -1):
            if body.endswith(stop[:size]):
                hold = size
                break
    return body[: len(body) - hold].rstrip()


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


class FullTextStreamer(TextIteratorStreamer):
    """A ``TextIteratorStreamer`` that queues the full decoded text at each step.

    The stock streamer decodes from the last newline on, which drops a leading
    space of SentencePiece tokens there; decoding everything keeps the stream
    identical to the final decode. Tokens after a stop id are ignored.

    Args:
        tokenizer: Tokenizer used to decode.
        stop_ids: Stop token ids.
        **kwargs: ``TextIteratorStreamer`` options (``timeout`` ...).
    """

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int], **kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, **kwargs)
        self.stop_ids = set(stop_ids)
        self.stopped = False
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        """Receive new tokens (the prompt, empty with ``inputs_embeds``, is skipped)."""
        if value.dim() > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        if self.stopped:
            return
        for token in value.tolist():
            if token in self.stop_ids:
                self.stopped = True
                break
            self.token_cache.append(token)
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            self.text_queue.put(text, timeout=self.timeout)

    def end(self) -> None:
        """Queue the final text, then the end signal (once)."""
        if self.ended:
            return
        self.ended = True
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        self.text_queue.put(text, timeout=self.timeout)
        self.text_queue.put(self.stop_signal, timeout=self.timeout)
