"""Replay a training row through the real agent loop to prove training and inference agree.

The row's assistant turns become the script of a mock VLM; the agent
(:class:`medm3.agent.session.ChatSession`) asks the row's question about the
same image(s) and calls the same experts. The agent's conversation, rendered
the way the VILA prompt template renders it (an image part is ``<image>\\n``),
must equal the row's conversation exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from medm3 import prompts


def render(messages: list[Any]) -> list[tuple[str, str]]:
    """``(from, value)`` turns of agent messages, images as ``<image>\\n``."""
    from medm3.vlm.base import ImagePart

    turns = []
    for message in messages:
        text, after_image = "", False
        for part in message.content:
            if isinstance(part, ImagePart):
                text += prompts.IMAGE_TOKEN + "\n"
                after_image = True
            else:
                text += part.text.lstrip("\n") if after_image else part.text
                after_image = False
        turns.append(("gpt" if message.role == "assistant" else "human", text))
    return turns


def replay(
    row: Mapping[str, Any],
    images: Any,
    experts: Mapping[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[tuple[str, str]], int]:
    """Run the agent on a row; returns its rendered turns and the number of images sent.

    Args:
        row: A training row (its ``question`` is asked).
        images: What the agent gets (a MedicalImage or the named BraTS images).
        experts: Registry name -> expert instance the agent must use (injected
            as the shared instances ``get_expert`` returns).
        monkeypatch: Undoes the injection.
    """
    from medm3.agent.session import AgentConfig, ChatSession
    from medm3.experts import registry
    from medm3.vlm.mock import MockBackend

    for name, expert in experts.items():
        monkeypatch.setitem(registry._instances, (name, None, None), expert)
    script = [t["value"] for t in row["conversations"] if t["from"] == "gpt"]
    backend = MockBackend(script=script)
    config = AgentConfig(
        use_cache=False, protocol=row.get("protocol", "medm3"), slice_index=row.get("slice")
    )
    session = ChatSession(backend, images, config)
    session.ask(row["question"])
    assert backend.remaining == 0
    n_images = sum(len(m.images) for m in session.messages)
    return render(session.messages), n_images


def row_turns(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(from, value)`` turns of a row."""
    return [(t["from"], t["value"]) for t in row["conversations"]]
