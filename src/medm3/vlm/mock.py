"""The ``mock`` backend: scripted answers for testing the agent logic (never a default).

Example::

    vlm = MockBackend(script=["<VISTA3D(liver)>", "The liver is 1.6 L."])
    ... run the agent ...
    assert vlm.calls[1][-1].plain_text.startswith("The results are")

A script entry may be:

* ``str`` -- the assistant text;
* :class:`~medm3.vlm.base.ToolCall` or a list of them -- a native tool-call turn
  (``finish_reason="tool_calls"``, no text);
* :class:`~medm3.vlm.base.Generation` -- returned as is (a copy);
* an ``Exception`` instance -- raised (to test error handling).

``script`` may also be a callable ``(messages) -> entry`` answering every call.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from medm3.errors import MedM3Error
from medm3.vlm.base import Generation, GenerationConfig, Message, ToolCall, VLMBackend

__all__ = ["MockBackend", "MockRequest", "ScriptExhaustedError"]

Entry = str | ToolCall | Sequence[ToolCall] | Generation | BaseException
Script = Sequence[Entry] | Callable[[list[Message]], Entry]


class ScriptExhaustedError(MedM3Error):
    """The mock backend was called more often than its script has answers."""


@dataclass
class MockRequest:
    """One call received by :class:`MockBackend`.

    Attributes:
        messages: The conversation (copied when received).
        config: The decoding settings.
        tools: The tool definitions passed, if any.
        method: ``generate``, ``stream`` or ``generate_batch``.
    """

    messages: list[Message]
    config: GenerationConfig
    tools: list[dict[str, Any]] | None = None
    method: str = "generate"


class MockBackend(VLMBackend):
    """A backend that answers from a script and records every conversation.

    Args:
        model_id: Reported model id.
        script: Answers in order, or a callable ``(messages) -> answer``.
        vila_format: Whether the agent should talk to it in the VILA-M3 format
            (default True, so agent tests exercise that format).
        supports_tools: Whether the agent may pass tools and expect ``ToolCall``\\ s.

    Attributes:
        calls: Every conversation received, in order (copies of the messages).
        requests: The same calls with their config, tools and method.
    """

    name = "mock"
    vila_format = True

    def __init__(
        self,
        model_id: str = "mock",
        *,
        script: Script | None = None,
        vila_format: bool = True,
        supports_tools: bool = False,
    ) -> None:
        super().__init__(model_id)
        self.vila_format = vila_format  # type: ignore[misc]  # per-instance override
        self.supports_tools = supports_tools  # type: ignore[misc]
        self._script: Script = [] if script is None else script
        if not callable(self._script):
            self._script = list(self._script)
        self._position = 0
        self._lock = threading.Lock()
        self.calls: list[list[Message]] = []
        self.requests: list[MockRequest] = []

    @property
    def remaining(self) -> int:
        """Scripted answers not used yet (0 for a callable script)."""
        return 0 if callable(self._script) else len(self._script) - self._position

    def push(self, *entries: Entry) -> None:
        """Append answers to a list script."""
        if callable(self._script):
            raise TypeError("cannot push answers onto a callable script")
        with self._lock:
            self._script.extend(entries)  # type: ignore[union-attr]

    def _record(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None,
        tools: Sequence[dict[str, Any]] | None,
        method: str,
    ) -> tuple[list[Message], int]:
        snapshot = [
            Message(
                m.role,
                list(m.content),
                tool_calls=[copy.deepcopy(c) for c in m.tool_calls],
                tool_call_id=m.tool_call_id,
            )
            for m in messages
        ]
        with self._lock:
            self.calls.append(snapshot)
            self.requests.append(
                MockRequest(
                    snapshot,
                    config or GenerationConfig(),
                    [copy.deepcopy(t) for t in tools] if tools is not None else None,
                    method,
                )
            )
            index = len(self.calls) - 1
        return snapshot, index

    def _next(self, snapshot: list[Message], index: int) -> Entry:
        if callable(self._script):
            return self._script(snapshot)
        with self._lock:
            if self._position >= len(self._script):
                last = next((m.plain_text for m in reversed(snapshot) if m.role != "assistant"), "")
                raise ScriptExhaustedError(
                    f"MockBackend script exhausted: {len(self._script)} answer(s) scripted, "
                    f"call #{index + 1} received (last turn: {last[:120]!r})"
                )
            entry = self._script[self._position]
            self._position += 1
        return entry

    def _answer(self, entry: Entry) -> Generation:
        if isinstance(entry, BaseException):
            raise entry
        if isinstance(entry, Generation):
            return copy.deepcopy(entry)
        if isinstance(entry, str):
            return Generation(text=entry, raw={"model": self.model_id})
        if isinstance(entry, ToolCall):
            entry = [entry]
        if isinstance(entry, Sequence) and all(isinstance(c, ToolCall) for c in entry):
            return Generation(
                text="",
                finish_reason="tool_calls",
                tool_calls=[copy.deepcopy(c) for c in entry],
                raw={"model": self.model_id},
            )
        raise TypeError(f"unsupported MockBackend script entry: {entry!r}")

    def generate(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generation:
        """Record the conversation and return the next scripted answer.

        Raises:
            ScriptExhaustedError: No answer left.
        """
        snapshot, index = self._record(messages, config, tools, "generate")
        return self._answer(self._next(snapshot, index))

    def stream(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generator[str, None, Generation]:
        """Record the conversation, yield the next scripted text word by word, return it.

        The returned :class:`Generation` is the scripted one (its finish reason
        and token counts included).
        """
        snapshot, index = self._record(messages, config, tools, "stream")
        gen = self._answer(self._next(snapshot, index))
        text = gen.text
        start = 0
        for i, ch in enumerate(text):
            if ch == " " and i > start:
                yield text[start:i]
                start = i
        if start < len(text):
            yield text[start:]
        return gen

    def generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig | None = None,
    ) -> list[Generation]:
        """Answer each conversation in order (recorded with method ``generate_batch``)."""
        out = []
        for conversation in conversations:
            snapshot, index = self._record(conversation, config, None, "generate_batch")
            out.append(self._answer(self._next(snapshot, index)))
        return out
