"""The VLM backend protocol: one interface for VILA-M3, transformers models and HTTP APIs.

Conversations are lists of :class:`Message`. A message's content is a list of
parts, text or image, in order; each backend renders them its own way (VILA-M3
writes ``<image>\\n`` where an image part stands and splices the image
features there; chat-template models get image entries in the content list;
OpenAI-compatible servers get data URLs).

Backends import torch/transformers/httpx inside their own modules only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

Role = Literal["system", "user", "assistant", "tool"]


@dataclass
class TextPart:
    """A piece of text in a message."""

    text: str
    type: Literal["text"] = "text"


@dataclass
class ImagePart:
    """An image in a message (RGB PIL image, already rendered for the model)."""

    image: Image.Image
    type: Literal["image"] = "image"


Part = TextPart | ImagePart


@dataclass
class ToolCall:
    """A native tool call returned by a backend that supports them.

    Attributes:
        name: Tool (expert trigger) name, e.g. ``VISTA3D``.
        arguments: Parsed JSON arguments.
        id: Call id from the server (``""`` if none).
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass
class Message:
    """One conversation turn.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: Ordered text and image parts.
        tool_calls: Tool calls made by an assistant turn (native tool calling).
        tool_call_id: For ``tool`` turns, the id of the call answered.
    """

    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""

    @classmethod
    def text(cls, role: Role, text: str) -> Message:
        """A message holding one text part."""
        return cls(role, [TextPart(text)])

    @property
    def images(self) -> list[Image.Image]:
        """The images of this message, in order."""
        return [p.image for p in self.content if isinstance(p, ImagePart)]

    @property
    def plain_text(self) -> str:
        """All text parts joined (images omitted)."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass
class GenerationConfig:
    """Decoding settings shared by every backend.

    Defaults follow the VILA-M3 reference inference: greedy, up to 1024 new
    tokens, at least 2.
    """

    max_new_tokens: int = 1024
    min_new_tokens: int = 2
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic (temperature 0)."""
        return self.temperature <= 0.0


@dataclass
class Generation:
    """A backend's answer.

    Attributes:
        text: Generated text (stop strings removed).
        finish_reason: ``stop``, ``length`` or ``tool_calls``.
        tool_calls: Native tool calls, if any.
        prompt_tokens: Tokens in the prompt (0 if unknown).
        completion_tokens: Tokens generated (0 if unknown).
        raw: Backend-specific extras (e.g. the rendered prompt).
    """

    text: str
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


class VLMBackend(ABC):
    """Base class of VLM backends.

    Attributes:
        name: Registry name (``vila``, ``hf``, ``openai``, ``mock``).
        vila_format: True when the model was trained on VILA-M3 conversations
            (model cards + ``<image>`` placeholders + trigger syntax); the agent
            then builds turns in that format instead of a generic chat.
        supports_tools: True when the backend returns native tool calls.
        model_id: The model identifier or local path in use.
    """

    name: ClassVar[str]
    vila_format: ClassVar[bool] = False
    supports_tools: ClassVar[bool] = False

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    @abstractmethod
    def generate(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generation:
        """Generate the next assistant turn for one conversation."""

    def stream(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generator[str, None, Generation]:
        """Yield text deltas of the next assistant turn, then return the final generation.

        The return value (``StopIteration.value``; ``gen = yield from
        backend.stream(...)`` in a generator, or :func:`collect_stream`) is the
        same :class:`Generation` :meth:`generate` would give: its text equals
        the concatenated deltas, with the real finish reason and token counts.
        The default yields the whole generation at once; backends that can
        stream override it.
        """
        gen = self.generate(messages, config, tools=tools)
        yield gen.text
        return gen

    def generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig | None = None,
    ) -> list[Generation]:
        """Generate for several conversations; backends batch where they can."""
        return [self.generate(c, config) for c in conversations]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (GPU memory, HTTP clients)."""


def collect_stream(
    stream: Iterator[str], on_text: Callable[[str], None] | None = None
) -> Generation:
    """Drain a :meth:`VLMBackend.stream` iterator and return its final generation.

    Each delta is passed to ``on_text`` as it arrives. A stream that returns no
    generation (a third-party backend written before streams returned one)
    gives ``Generation(text=<the deltas joined>)`` with unknown token counts.

    Args:
        stream: The iterator returned by ``stream()``.
        on_text: Called with each text delta.

    Returns:
        The final generation.
    """
    pieces: list[str] = []
    try:
        while True:
            try:
                delta = next(stream)
            except StopIteration as done:
                final = done.value
                break
            pieces.append(delta)
            if on_text is not None:
                on_text(delta)
    except BaseException:
        close = getattr(stream, "close", None)
        if close is not None:  # stops the backend's worker
            close()
        raise
    if isinstance(final, Generation):
        return final
    return Generation(text="".join(pieces))
