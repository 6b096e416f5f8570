"""Registry of VLM backends (lazy factories) and the ``medm3.backends`` plugin group."""

from __future__ import annotations

from typing import Any

from medm3.registry import Registry
from medm3.vlm.base import VLMBackend

BUILTIN_BACKENDS: dict[str, str] = {
    "vila": "medm3.vlm.vila:VilaBackend",
    "hf": "medm3.vlm.hf:HFBackend",
    "openai": "medm3.vlm.openai:OpenAIBackend",
    "mock": "medm3.vlm.mock:MockBackend",
}

BACKENDS: Registry[type[VLMBackend]] = Registry("backend", "medm3.backends", BUILTIN_BACKENDS)


def load_backend(name: str, model: str, **options: Any) -> VLMBackend:
    """Instantiate the backend ``name`` for ``model``.

    Args:
        name: Backend name (``vila``, ``hf``, ``openai``, ``mock`` or a plugin).
        model: Hub id, local folder or served model name.
        **options: Backend-specific options (device, dtype, base_url ...).

    Raises:
        InputError: Unknown backend (with "did you mean").
    """
    return BACKENDS.get(name)(model, **options)
