"""Provenance: a JSON-serialisable record of every step of a conversation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from medm3.vlm.base import ImagePart, Message, TextPart


class Trace:
    """An append-only list of steps (``question``, ``generate``, ``expert``, ``answer`` ...).

    Each step is a dict with ``step`` (its kind), ``t`` (seconds since the trace
    started) and the step's own fields. Images are summarised, never embedded.

    Args:
        on_event: Called with each step as it is added.
    """

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.steps: list[dict[str, Any]] = []
        self._start = time.perf_counter()
        self._on_event = on_event

    def add(self, step: str, **fields: Any) -> dict[str, Any]:
        """Record a step and return it."""
        entry = {"step": step, "t": round(time.perf_counter() - self._start, 4), **fields}
        self.steps.append(entry)
        if self._on_event is not None:
            self._on_event(entry)
        return entry

    @staticmethod
    def message_summary(message: Message) -> dict[str, Any]:
        """A message as text with ``<image>`` where its images stand."""
        text = "".join(
            p.text if isinstance(p, TextPart) else "<image>"
            for p in message.content
            if isinstance(p, TextPart | ImagePart)
        )
        out: dict[str, Any] = {"role": message.role, "text": text, "images": len(message.images)}
        if message.tool_calls:
            out["tool_calls"] = [c.name for c in message.tool_calls]
        return out

    def to_json(self) -> str:
        """The whole trace as JSON."""
        return json.dumps(self.steps, indent=2, default=str)
