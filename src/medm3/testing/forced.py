"""Make a real VILA backend emit chosen texts (``m3 demo``, tests).

A random-weight model never writes an expert trigger by itself. To run the
whole agent loop through the real ``vila`` backend (prompt template, image
encoding, projector, ``generate``/``stream``, stop tokens), :func:`force_replies`
hooks the LLM's ``lm_head`` so that greedy decoding produces the given texts,
one per call; an entry of ``None`` lets the model generate freely (random
weights: meaningless text).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from medm3.errors import MedM3Error

__all__ = ["ForcedReplies", "force_replies"]


class ForcedReplies:
    """The state of :func:`force_replies` (one reply per ``generate``/``stream`` call).

    Attributes:
        replies: Replies not used yet.
        used: Replies used so far.
    """

    def __init__(self, backend: Any, replies: Sequence[str | None]) -> None:
        self.backend = backend
        self.replies: list[str | None] = list(replies)
        self.used = 0
        self._tokens: list[int] | None = None
        self._step = 0

    def start_next(self) -> None:
        """Arm the next reply (called before each generation).

        Raises:
            MedM3Error: No reply left.
        """
        if not self.replies:
            raise MedM3Error(f"all {self.used} forced replies are used")
        text = self.replies.pop(0)
        self.used += 1
        self._step = 0
        if text is None:
            self._tokens = None
            return
        ids = self.backend.tokenizer(text, add_special_tokens=False).input_ids
        self._tokens = [*ids, self.backend.stop_ids[0]]

    def hook(self, module: Any, args: Any, output: Any) -> Any:
        """``lm_head`` forward hook: put all the weight on the next forced token."""
        if self._tokens is None:
            return output
        token = self._tokens[min(self._step, len(self._tokens) - 1)]
        self._step += 1
        output = output.clone()
        output[..., -1, :] = -1e4
        output[..., -1, token] = 1e4
        return output


@contextlib.contextmanager
def force_replies(backend: Any, replies: Sequence[str | None]) -> Iterator[ForcedReplies]:
    """Within the block, each ``generate``/``stream`` call of ``backend`` produces the next reply.

    Args:
        backend: A loaded :class:`~medm3.vlm.vila.backend.VilaBackend` (anything
            with ``tokenizer``, ``stop_ids`` and ``model.llm.lm_head``).
        replies: Texts to produce in order; ``None`` lets the model write freely.

    Yields:
        The :class:`ForcedReplies` state.
    """
    state = ForcedReplies(backend, replies)
    handle = backend.model.llm.lm_head.register_forward_hook(state.hook)
    original_generate, original_stream = backend.generate, backend.stream

    def generate(*args: Any, **kwargs: Any) -> Any:
        state.start_next()
        return original_generate(*args, **kwargs)

    def stream(*args: Any, **kwargs: Any) -> Iterator[str]:
        state.start_next()
        yield from original_stream(*args, **kwargs)

    backend.generate, backend.stream = generate, stream
    try:
        yield state
    finally:
        handle.remove()
        del backend.generate, backend.stream
