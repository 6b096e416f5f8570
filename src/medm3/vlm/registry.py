"""Registry of VLM backends (lazy factories) and the ``medm3.backends`` plugin group."""

from __future__ import annotations

from typing import Any

from medm3.errors import InputError
from medm3.registry import Registry
from medm3.vlm.base import VLMBackend

BUILTIN_BACKENDS: dict[str, str] = {
    "vila": "medm3.vlm.vila:VilaBackend",
    "hf": "medm3.vlm.hf:HFBackend",
    "openai": "medm3.vlm.openai:OpenAIBackend",
    "mock": "medm3.vlm.mock:MockBackend",
}

BACKENDS: Registry[type[VLMBackend]] = Registry("backend", "medm3.backends", BUILTIN_BACKENDS)


#: Default VILA-M3 checkpoints: 8B where CUDA is available, 3B otherwise.
VILA_DEFAULT_CUDA = "MONAI/Llama3-VILA-M3-8B"
VILA_DEFAULT_CPU = "MONAI/Llama3-VILA-M3-3B"


def default_model(backend: str) -> str:
    """The model used when none is given.

    Args:
        backend: Backend name.

    Returns:
        For ``vila``: the 8B checkpoint on CUDA machines, the 3B one otherwise.

    Raises:
        InputError: The backend has no default model (``hf``, ``openai`` need ``--model``).
    """
    if backend.lower() == "vila":
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:  # pragma: no cover - the vila extra is missing
            cuda = False
        return VILA_DEFAULT_CUDA if cuda else VILA_DEFAULT_CPU
    raise InputError(f"backend '{backend}' has no default model: pass --model")


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
