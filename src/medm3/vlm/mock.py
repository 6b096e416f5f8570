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

From the command line (``m3 chat --backend mock --mock-script FILE``) the script
is a file (:func:`load_script`): plain text with the replies separated by lines
holding only ``---``, or a JSON list (strings, ``{"text": ...}``,
``{"tool_calls": [{"name": ..., "arguments": {...}}]}``, ``{"error": ...}``).
For example, a file with ``<VISTA3D(liver)>``, a ``---`` line and
``The liver looks normal.`` makes the agent run VISTA3D and then answer: the
whole loop without a model. Once the file's replies are used, the backend
echoes the question (``then="echo"``, the default) or fails (``then="error"``).
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medm3.errors import InputError, MedM3Error
from medm3.vlm.base import Generation, GenerationConfig, Message, ToolCall, VLMBackend

__all__ = [
    "MockBackend",
    "MockRequest",
    "ScriptExhaustedError",
    "ScriptFile",
    "echo_reply",
    "load_script",
]

Entry = str | ToolCall | Sequence[ToolCall] | Generation | BaseException
Script = Sequence[Entry] | Callable[[list[Message]], Entry]


class ScriptExhaustedError(MedM3Error):
    """The mock backend was called more often than its script has answers."""


#: Line that separates replies in a plain-text script file.
SEPARATOR = "---"


def echo_reply(messages: Sequence[Message]) -> str:
    """The echo answer: repeat the question, the last line of the last user turn.

    A first turn also carries the model cards and the image sentence; the
    question is its last line. No model: smoke tests, demos, ``--backend mock``.
    """
    last = next((m.plain_text for m in reversed(messages) if m.role == "user"), "")
    lines = last.strip().splitlines()
    return f"(mock model) You asked: {lines[-1] if lines else ''}"


def _entry_from_json(item: Any, where: str) -> Entry:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"]
    if isinstance(item, dict) and isinstance(item.get("error"), str):
        return MedM3Error(item["error"])
    if isinstance(item, dict) and isinstance(item.get("tool_calls"), list):
        calls = []
        for i, call in enumerate(item["tool_calls"]):
            if not (isinstance(call, dict) and isinstance(call.get("name"), str)):
                raise InputError(f'{where}: tool call {i + 1} needs a "name"')
            args = call.get("arguments", {})
            if not isinstance(args, dict):
                raise InputError(f'{where}: tool call {i + 1}: "arguments" must be an object')
            calls.append(ToolCall(name=call["name"], arguments=args, id=f"call_{i}"))
        return calls
    raise InputError(
        f'{where}: expected a string, {{"text": ...}}, {{"tool_calls": [...]}} or {{"error": ...}}'
    )


def load_script(path: str | os.PathLike[str]) -> list[Entry]:
    """Read a mock script file (see the module docstring for the two formats).

    Args:
        path: A ``.json`` file (a list of replies) or a text file (replies
            separated by ``---`` lines).

    Returns:
        The replies, in order.

    Raises:
        InputError: Missing, unreadable, malformed or empty file.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError("mock script not found" if not file.exists() else "not a file", path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the mock script: {exc}", path) from None
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"mock script is not valid JSON ({exc.msg})", path) from None
        if not isinstance(data, list):
            raise InputError("a JSON mock script must be a list of replies", path)
        try:
            entries = [_entry_from_json(item, f"reply {i + 1}") for i, item in enumerate(data)]
        except InputError as exc:
            raise InputError(exc.message, path) from None
    else:
        blocks: list[list[str]] = [[]]
        for line in text.splitlines():
            if line.strip() == SEPARATOR:
                blocks.append([])
            else:
                blocks[-1].append(line)
        entries = [t for t in ("\n".join(b).strip() for b in blocks) if t]
    if not entries:
        raise InputError("the mock script has no replies", path)
    return entries


class ScriptFile:
    """A callable script: the replies of a file, then echo (or an error).

    Args:
        path: The script file (:func:`load_script`).
        then: ``echo`` (repeat the question once the replies are used) or ``error``.
    """

    def __init__(self, path: str | os.PathLike[str], then: str = "echo") -> None:
        if then not in ("echo", "error"):
            raise ValueError("then must be 'echo' or 'error'")
        self.path = os.fspath(path)
        self.entries = load_script(path)
        self.then = then
        self.position = 0
        self._lock = threading.Lock()

    def __call__(self, messages: list[Message]) -> Entry:
        with self._lock:
            if self.position < len(self.entries):
                self.position += 1
                return self.entries[self.position - 1]
            self.position += 1
            used = self.position
        if self.then == "echo":
            return echo_reply(messages)
        raise ScriptExhaustedError(
            f"all {len(self.entries)} replies of the mock script are used (call #{used}); "
            "add replies separated by '---' lines",
            self.path,
        )


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
        script_file: A script file (:func:`load_script`) instead of ``script``;
            once its replies are used the backend echoes the question.

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
        script_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(model_id)
        if script_file is not None:
            if script is not None:
                raise ValueError("give script or script_file, not both")
            script = ScriptFile(script_file)
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
