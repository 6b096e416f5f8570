"""Request building of the ``openai`` backend: messages, decoding fields, PHI scrub.

:class:`ChatRequestWriter` turns medm3 :class:`~medm3.vlm.base.Message` lists
into the keyword arguments of ``chat.completions.create`` (the rendering rules
are in the :mod:`medm3.vlm.openai` module docstring) and passes every free-text
field through one :class:`~medm3.imaging.deid.scrub.SensitiveValueScrubber`,
counting the replacements of the request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from medm3.imaging.deid.scrub import SensitiveValueScrubber
from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart, ToolCall
from medm3.vlm.images import to_data_url

__all__ = ["ChatRequestWriter"]


class ChatRequestWriter:
    """Writes one scrubbed chat-completions request.

    Use one writer per request: :attr:`redactions` counts the replacements it made.

    Args:
        scrubber: The sensitive values never to send.
        max_image_side: Images are downscaled so their longest side is at most this.
    """

    def __init__(self, scrubber: SensitiveValueScrubber, max_image_side: int | None) -> None:
        self.scrubber = scrubber
        self.max_image_side = max_image_side
        self.redactions = 0

    # ---------------------------------------------------------------- scrubbing

    def scrub(self, text: str) -> str:
        """``text`` with the sensitive values replaced (the count is kept)."""
        clean, n = self.scrubber.scrub(text)
        self.redactions += n
        return clean

    def scrub_json(self, value: Any) -> Any:
        """Scrub every string of a JSON value, keys included."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_json(v) for v in value]
        return value

    def scrub_descriptions(self, value: Any) -> Any:
        """Scrub the ``description`` and ``title`` strings of tool definitions."""
        if isinstance(value, dict):
            return {
                k: (
                    self.scrub(v)
                    if k in ("description", "title") and isinstance(v, str)
                    else self.scrub_descriptions(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.scrub_descriptions(v) for v in value]
        return value

    # ---------------------------------------------------------------- request

    def request(
        self,
        model: str,
        messages: Sequence[Message],
        config: GenerationConfig,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        stream: bool = False,
        max_tokens_field: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create``.

        Args:
            model: Served model name.
            messages: The conversation (not empty).
            config: Decoding settings.
            tools: OpenAI tool definitions (their descriptions are scrubbed).
            stream: Ask for an SSE stream with usage in the last chunk.
            max_tokens_field: ``max_tokens`` or ``max_completion_tokens``.
            extra_body: Extra JSON fields.
        """
        request: dict[str, Any] = {
            "model": model,
            "messages": self.messages(messages),
            max_tokens_field: max(1, config.max_new_tokens),
            "temperature": max(0.0, config.temperature),
        }
        if config.top_p < 1.0:
            request["top_p"] = config.top_p
        if config.seed is not None:
            request["seed"] = config.seed
        if config.stop:
            request["stop"] = [self.scrub(s) for s in config.stop]
        if tools:
            request["tools"] = self.scrub_descriptions(list(tools))
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        if extra_body:
            request["extra_body"] = dict(extra_body)
        return request

    def messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """The API messages of a conversation (see the module docstring of ``openai``)."""
        out: list[dict[str, Any]] = []
        tool_images: list[ImagePart] = []
        for msg in messages:
            images = [p for p in msg.content if isinstance(p, ImagePart)]
            if msg.role == "tool" and msg.tool_call_id:
                text = self.scrub(msg.plain_text)
                out.append({"role": "tool", "tool_call_id": msg.tool_call_id, "content": text})
                tool_images.extend(images)
                continue
            out.extend(self._tool_images(tool_images))
            if msg.role == "tool":
                content = self.parts(msg.content, prefix="Tool result: ")
                out.append({"role": "user", "content": _simplify(content)})
                continue
            if msg.role == "user":
                out.append({"role": "user", "content": _simplify(self.parts(msg.content))})
                continue
            if msg.role == "assistant":
                out.append(self._assistant(msg))
            else:  # system
                out.append({"role": msg.role, "content": self.scrub(msg.plain_text)})
            if images:  # not allowed in system/assistant turns: a user turn follows
                out.append({"role": "user", "content": self.parts(images)})
        out.extend(self._tool_images(tool_images))
        return out

    def parts(self, parts: Sequence[Any], prefix: str = "") -> list[dict[str, Any]]:
        """A content list: adjacent text joined (after ``prefix``), images as PNG data URLs."""
        out: list[dict[str, Any]] = []
        pending = prefix
        for part in parts:
            if isinstance(part, TextPart):
                pending += part.text
            elif isinstance(part, ImagePart):
                if pending:
                    out.append({"type": "text", "text": self.scrub(pending)})
                    pending = ""
                url = to_data_url(part.image, max_side=self.max_image_side)
                out.append({"type": "image_url", "image_url": {"url": url}})
        if pending:
            out.append({"type": "text", "text": self.scrub(pending)})
        return out

    def _tool_images(self, images: list[ImagePart]) -> list[dict[str, Any]]:
        """The user turn carrying the images of a run of tool turns (emptied), if any."""
        if not images:
            return []
        content = self.parts([TextPart("Images returned by the tool:"), *images])
        images.clear()
        return [{"role": "user", "content": content}]

    def _assistant(self, msg: Message) -> dict[str, Any]:
        text = msg.plain_text
        if msg.tool_calls and all(c.id for c in msg.tool_calls):
            return {
                "role": "assistant",
                "content": self.scrub(text) if text else None,
                "tool_calls": [self._tool_call(c) for c in msg.tool_calls],
            }
        calls = "\n".join(
            f"Tool call: {c.name} {json.dumps(c.arguments, ensure_ascii=False)}"
            for c in msg.tool_calls
        )
        joined = "\n".join(t for t in (text, calls) if t)
        return {"role": "assistant", "content": self.scrub(joined)}

    def _tool_call(self, call: ToolCall) -> dict[str, Any]:
        arguments = json.dumps(self.scrub_json(call.arguments), ensure_ascii=False)
        return {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }


def _simplify(content: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A content list with text only becomes a plain string (widest server support)."""
    if all(p["type"] == "text" for p in content):
        return "".join(p["text"] for p in content)
    return content
