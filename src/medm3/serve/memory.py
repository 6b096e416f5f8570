"""Conversation memory: a :class:`~medm3.agent.ChatSession` to JSON and back.

What the model has seen (every message, text and images, tool calls) is
saved after each answer: text in the ``sessions.state`` JSON, images as PNG
files under ``state/<session id>/`` (content-addressed). Expert results that
later experts build on (a label map the measure expert reads) are reloaded
from the folders :func:`medm3.experts.output.save_result` wrote. A restored
session continues exactly where it stopped, after a server restart too.

This module is the only place that sets ``ChatSession`` internals
(``messages``, ``results``, the question counter); see
:func:`seed_history` and :func:`restore`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medm3.agent.session import ChatSession
    from medm3.experts.base import ExpertResult
    from medm3.vlm.base import Message

#: Version of the state layout.
STATE_VERSION = 1


#: id(image) -> (weak reference, digest): a conversation's images are hashed once,
#: not at every turn (PIL images are unhashable, so no WeakKeyDictionary).
_DIGESTS: dict[int, tuple[weakref.ref[Any], str]] = {}


def _digest(image: Any) -> str:
    known = _DIGESTS.get(id(image))
    if known is not None and known[0]() is image:
        return known[1]
    rgb = image.convert("RGB")
    digest = hashlib.sha1(
        f"{rgb.size}".encode() + rgb.tobytes(), usedforsecurity=False
    ).hexdigest()[:20]
    key = id(image)
    with contextlib.suppress(TypeError):  # not weak-referenceable: not remembered
        _DIGESTS[key] = (weakref.ref(image, lambda _r: _DIGESTS.pop(key, None)), digest)
    return digest


def _save_image(image: Any, folder: Path, root: Path) -> str:
    from medm3.utils.atomic import atomic_path

    digest = _digest(image)
    path = folder / f"{digest}.png"
    if not path.exists():
        with atomic_path(path) as tmp:
            image.convert("RGB").save(tmp, format="PNG")
    return path.relative_to(root).as_posix()


def dump_messages(messages: Sequence[Message], folder: Path, root: Path) -> list[dict[str, Any]]:
    """Messages as JSON; their images are written to ``folder`` (paths relative to ``root``)."""
    from medm3.vlm.base import ImagePart, TextPart

    out: list[dict[str, Any]] = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if isinstance(p, TextPart):
                parts.append({"type": "text", "text": p.text})
            elif isinstance(p, ImagePart):
                parts.append({"type": "image", "path": _save_image(p.image, folder, root)})
        entry: dict[str, Any] = {"role": m.role, "content": parts}
        if m.tool_calls:
            entry["tool_calls"] = [
                {"name": c.name, "arguments": c.arguments, "id": c.id} for c in m.tool_calls
            ]
        if m.tool_call_id:
            entry["tool_call_id"] = m.tool_call_id
        out.append(entry)
    return out


def load_messages(data: Sequence[dict[str, Any]], inside: Any) -> list[Message]:
    """Messages from :func:`dump_messages` JSON.

    Args:
        data: The JSON list.
        inside: ``relative path -> checked absolute Path`` (the file store's check).
    """
    from PIL import Image

    from medm3.vlm.base import ImagePart, Message, Part, TextPart, ToolCall

    out: list[Message] = []
    for entry in data:
        parts: list[Part] = []
        for p in entry["content"]:
            if p["type"] == "text":
                parts.append(TextPart(p["text"]))
            else:
                with Image.open(inside(p["path"])) as im:
                    parts.append(ImagePart(im.convert("RGB")))
        calls = [
            ToolCall(c["name"], c.get("arguments", {}), c.get("id", ""))
            for c in entry.get("tool_calls", [])
        ]
        out.append(Message(entry["role"], parts, calls, entry.get("tool_call_id", "")))
    return out


def result_folders(trace: Sequence[dict[str, Any]]) -> list[Path]:
    """Folders of the results saved during a question (from its ``expert`` trace steps)."""
    folders: list[Path] = []
    for step in trace:
        if step.get("step") == "expert" and step.get("files"):
            folder = Path(step["files"][0]).parent
            if folder not in folders:
                folders.append(folder)
    return folders


def load_result(folder: Path) -> ExpertResult:
    """An :class:`ExpertResult` rebuilt from a saved folder (no overlays; label map if saved)."""
    from medm3.experts.base import ExpertResult
    from medm3.experts.output import RESULT_JSON
    from medm3.imaging.io import load_image

    doc = json.loads((folder / RESULT_JSON).read_text())
    label_map = None
    name = doc.get("files", {}).get("label_map")
    if name and (folder / name).is_file():
        label_map = load_image(folder / name, "OT")
    return ExpertResult(
        expert=doc["expert"],
        args=doc.get("args", ""),
        text=doc.get("text", ""),
        label_map=label_map,
        label_names={int(k): v for k, v in doc.get("label_names", {}).items()},
        probabilities=dict(doc.get("probabilities", {})),
        findings=dict(doc.get("findings", {})),
        measurements=list(doc.get("measurements", [])),
        info=dict(doc.get("info", {})),
    )


def dump_state(chat: ChatSession, results: list[str], folder: Path, root: Path) -> dict[str, Any]:
    """The state needed to continue ``chat``.

    Args:
        chat: The session.
        results: Result folders of the session so far, relative to ``root``.
        folder: Where message images are written.
        root: The data folder.
    """
    from medm3.vlm.base import Message

    pending = chat.pending_feedback  # carried by the next question (released protocol)
    return {
        "version": STATE_VERSION,
        "messages": dump_messages(chat.messages, folder, root),
        "results": list(results),
        "questions": chat.questions_asked,
        "pending": dump_messages([Message("user", pending)], folder, root) if pending else [],
    }


def restore(chat: ChatSession, state: dict[str, Any], inside: Any) -> None:
    """Put a saved state into a fresh ``chat`` (same images and settings).

    Args:
        chat: A new session on the study's images.
        state: From :func:`dump_state`.
        inside: ``relative path -> checked absolute Path``.
    """
    from medm3.errors import MedM3Error

    messages = load_messages(state.get("messages", []), inside)
    results = []
    for rel in state.get("results", []):
        try:
            results.append(load_result(inside(rel)))
        except (OSError, ValueError, KeyError, MedM3Error):
            continue  # a result folder removed by hand: later experts recompute
    pending = load_messages(state.get("pending", []), inside)
    chat.restore(
        messages, results, int(state.get("questions", 0)), pending[0].content if pending else ()
    )


def seed_history(chat: ChatSession, history: Sequence[tuple[str, str]]) -> None:
    """Start ``chat`` from earlier turns sent by a stateless client.

    The first user turn is built like a first question (model cards, the
    rendered image, the modality sentence); later turns are added as text.

    Args:
        chat: A new session.
        history: ``(role, text)`` pairs, oldest first, starting with a user turn.
    """
    chat.seed_history(history)
