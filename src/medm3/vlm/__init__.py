"""Vision-language model backends behind one protocol (see :mod:`medm3.vlm.base`)."""

from __future__ import annotations

from medm3.vlm.base import (
    Generation,
    GenerationConfig,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    VLMBackend,
)
from medm3.vlm.registry import BACKENDS, load_backend

__all__ = [
    "BACKENDS",
    "Generation",
    "GenerationConfig",
    "ImagePart",
    "Message",
    "TextPart",
    "ToolCall",
    "VLMBackend",
    "load_backend",
]
