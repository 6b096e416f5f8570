"""Conversation -> chat-template entries for transformers processors.

One :class:`ChatFormatter` turns medm3 :class:`~medm3.vlm.base.Message` lists
into the ``[{"role", "content": [{"type": "image"} | {"type": "text"}]}]``
entries a processor's chat template renders, plus the images in placeholder
order. The ``hf`` backend uses it at inference and :mod:`medm3.train.hf_sft`
for training text, so the two render identically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medm3.vlm.base import ImagePart, Message, TextPart

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

_ZWSP = "\u200b"
_TOOL_PROBE = "medm3-tool-probe-7f3a"


class ChatFormatter:
    """Builds chat-template entries the way the ``hf`` backend sends them.

    Control tokens typed in message text (``<image>``, ``<|im_start|>``) are
    broken with a zero-width space so they cannot inject turns or image
    placeholders; consecutive same-role turns are merged (strict templates
    alternate); ``tool`` turns use the template's tool role when it has one,
    else become user text ``Tool result: ...``.

    Args:
        processor: The model's processor (with a tokenizer and a chat template).
        tool_role: Force the tool-role decision (``None``: detect it).
    """

    def __init__(self, processor: Any, tool_role: bool | None = None) -> None:
        self.processor = processor
        self._control_re = self._control_token_pattern()
        self.tool_role = self.detect_tool_role() if tool_role is None else tool_role

    @property
    def _template_text(self) -> str:
        template = getattr(self.processor, "chat_template", None) or getattr(
            self.processor.tokenizer, "chat_template", None
        )
        if not template:
            return ""
        return template if isinstance(template, str) else json.dumps(template)

    def _control_token_pattern(self) -> re.Pattern[str] | None:
        tokens: set[str] = set(getattr(self.processor.tokenizer, "all_special_tokens", []) or [])
        decoder = getattr(self.processor.tokenizer, "added_tokens_decoder", {}) or {}
        for added in decoder.values():
            content = getattr(added, "content", str(added))
            if getattr(added, "special", False) or content in self._template_text:
                tokens.add(content)
        for attr in ("image_token", "boi_token", "eoi_token", "video_token", "fake_image_token"):
            value = getattr(self.processor, attr, None)
            if isinstance(value, str):
                tokens.add(value)
        tokens = {t for t in tokens if len(t) > 1 and not t.isspace()}
        if not tokens:
            return None
        return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))

    def detect_tool_role(self) -> bool:
        """True when the chat template visibly renders a ``tool`` turn."""
        if not re.search(r"""['"]tool['"]""", self._template_text):
            return False
        probe = [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
            {
                "role": "tool",
                "content": [{"type": "text", "text": _TOOL_PROBE}],
                "tool_call_id": "0",
            },
        ]
        try:
            rendered = self.processor.apply_chat_template(
                probe, add_generation_prompt=True, tokenize=False
            )
        except Exception:  # any template error means: no usable tool role
            return False
        return _TOOL_PROBE in rendered

    def sanitize(self, text: str) -> str:
        if self._control_re is None:
            return text
        return self._control_re.sub(lambda m: m.group(0)[0] + _ZWSP + m.group(0)[1:], text)

    def content(self, parts: Sequence[Any], prefix: str = "") -> tuple[list[dict], list[Any]]:
        """Processor content list (adjacent text joined) and the images, in order."""
        content: list[dict[str, Any]] = []
        images: list[Any] = []
        pending = prefix
        for part in parts:
            if isinstance(part, TextPart):
                pending += self.sanitize(part.text)
            elif isinstance(part, ImagePart):
                if pending:
                    content.append({"type": "text", "text": pending})
                    pending = ""
                content.append({"type": "image"})
                img = part.image
                images.append(img if img.mode == "RGB" else img.convert("RGB"))
        if pending or not content:
            content.append({"type": "text", "text": pending})
        return content, images

    def to_chat(
        self, messages: Sequence[Message], *, fold_system: bool = False
    ) -> tuple[list[dict[str, Any]], list[Image.Image]]:
        turns: list[dict[str, Any]] = []
        for msg in messages:
            if msg.role == "tool":
                if self.tool_role:
                    text_parts = [p for p in msg.content if isinstance(p, TextPart)]
                    content, _ = self.content(text_parts)
                    turns.append(
                        {"role": "tool", "content": content, "tool_call_id": msg.tool_call_id}
                    )
                    image_parts = [p for p in msg.content if isinstance(p, ImagePart)]
                    if image_parts:
                        content, imgs = self.content(image_parts)
                        turns.append({"role": "user", "content": content, "_images": imgs})
                    continue
                content, imgs = self.content(msg.content, prefix="Tool result: ")
                turns.append({"role": "user", "content": content, "_images": imgs})
                continue
            parts = list(msg.content)
            if msg.role == "assistant" and msg.tool_calls:
                calls = "\n".join(
                    f"Tool call: {c.name} {json.dumps(c.arguments, ensure_ascii=False)}"
                    for c in msg.tool_calls
                )
                sep = "\n" if msg.plain_text else ""
                parts.append(TextPart(sep + calls))
            content, imgs = self.content(parts)
            turns.append({"role": msg.role, "content": content, "_images": imgs})

        if fold_system:
            system = [t for t in turns if t["role"] == "system"]
            turns = [t for t in turns if t["role"] != "system"]
            if system:
                folded: list[dict[str, Any]] = []
                imgs = []
                for t in system:
                    folded += t["content"] + [{"type": "text", "text": "\n\n"}]
                    imgs += t["_images"]
                if turns and turns[0]["role"] == "user":
                    turns[0] = {
                        "role": "user",
                        "content": folded + turns[0]["content"],
                        "_images": imgs + turns[0]["_images"],
                    }
                else:
                    turns.insert(0, {"role": "user", "content": folded, "_images": imgs})

        merged: list[dict[str, Any]] = []
        for t in turns:
            if merged and merged[-1]["role"] == t["role"] and t["role"] != "tool":
                prev = merged[-1]
                prev["content"] = (
                    prev["content"] + [{"type": "text", "text": "\n\n"}] + t["content"]
                )
                prev["_images"] = prev.get("_images", []) + t.get("_images", [])
            else:
                merged.append(dict(t))
        images: list[Any] = []
        chat = []
        for t in merged:
            images += t.pop("_images", [])
            t["content"] = _join_text(t["content"])
            chat.append(t)
        return chat, images


def _join_text(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge adjacent text entries; drop empty ones unless nothing else is left."""
    out: list[dict[str, Any]] = []
    for item in content:
        if item["type"] == "text":
            if out and out[-1]["type"] == "text":
                out[-1] = {"type": "text", "text": out[-1]["text"] + item["text"]}
                continue
            if not item["text"]:
                continue
        out.append(dict(item))
    return out or [{"type": "text", "text": ""}]
