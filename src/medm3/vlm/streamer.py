"""The threaded token streamer shared by the ``vila`` and ``hf`` backends.

``generate`` runs in a worker thread and feeds a :class:`FullTextStreamer`;
the consumer (:func:`stream_in_thread`) turns the growing text into deltas
with :func:`medm3.vlm.stops.text_deltas`, and returns every token generated so
that the backend can build the final :class:`~medm3.vlm.base.Generation` (real
token counts and finish reason) the same way ``generate`` does. Closing the
stream early sets ``cancel``; backends pass it to a stopping criterion so the
worker stops at the next token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from transformers import TextIteratorStreamer

from medm3.vlm.stops import text_deltas


class FullTextStreamer(TextIteratorStreamer):
    """A ``TextIteratorStreamer`` that queues the full decoded text at each step.

    The stock streamer decodes from the last newline on, which drops a leading
    space of SentencePiece tokens there; decoding everything keeps the stream
    identical to the final decode. Tokens after a stop id are not decoded, but
    every generated token is kept in :attr:`tokens` (for the token count).

    Args:
        tokenizer: Tokenizer used to decode.
        stop_ids: Stop token ids.
        skip_prompt: The first ``put`` holds the prompt ids (``input_ids`` runs);
            ``inputs_embeds`` runs send an empty first ``put``, skipped as well.
        **kwargs: ``TextIteratorStreamer`` options (``timeout`` ...).
    """

    def __init__(
        self, tokenizer: Any, stop_ids: Sequence[int], skip_prompt: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True, **kwargs)
        self.stop_ids = set(stop_ids)
        self.tokens: list[int] = []
        self.stopped = False
        self.ended = False

    def put(self, value: Any) -> None:
        """Receive new tokens."""
        if value.dim() > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        new = [int(t) for t in value.tolist()]
        self.tokens.extend(new)
        if self.stopped:
            return
        for token in new:
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


def stream_in_thread(
    work: Callable[[], None],
    streamer: FullTextStreamer,
    cancel: threading.Event,
    stops: Sequence[str],
    *,
    strip: bool,
    name: str,
) -> Generator[str, None, list[int]]:
    """Run ``work`` (a ``generate`` call feeding ``streamer``) in a thread and yield deltas.

    The deltas concatenate to the text cut at the first stop string (stripped
    with ``strip``). Once a stop string is seen, ``cancel`` is set so the
    worker's stopping criterion ends the generation. An error in the worker is
    re-raised here.

    Args:
        work: Runs the generation; must feed ``streamer`` and honour ``cancel``.
        streamer: The streamer ``work`` feeds.
        cancel: Set when the consumer has what it needs or goes away.
        stops: Stop strings.
        strip: Strip the answer (VILA-M3 rule).
        name: Worker thread name.

    Returns:
        Every generated token (stop ids included), for the final generation.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # re-raised in the consumer
            errors.append(exc)
        finally:
            streamer.end()

    drained = False

    def texts() -> Iterator[str]:
        nonlocal drained
        yield from streamer
        drained = True

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield from text_deltas(texts(), stops, strip=strip)
    finally:
        cancel.set()  # a stop string was seen, or the consumer went away
        if not drained:  # let the worker finish its queue, then wait for it
            for _ in streamer:
                pass
        thread.join()
    if errors:
        raise errors[0]
    return list(streamer.tokens)
