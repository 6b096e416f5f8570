"""Native VILA-M3 backend (``vila``): released checkpoints loaded with transformers classes.

Imported lazily by the backend registry only (it imports torch and transformers).

Modules: :mod:`~medm3.vlm.vila.config` (root ``config.json``),
:mod:`~medm3.vlm.vila.projector` (``mlp_downsample``),
:mod:`~medm3.vlm.vila.templates` (``llama_3`` / ``vicuna_v1``),
:mod:`~medm3.vlm.vila.tokenize` (``<image>`` chunks and the -200 sentinel),
:mod:`~medm3.vlm.vila.model` (vision tower + projector + LLM, splicing),
:mod:`~medm3.vlm.vila.loader` (folder / Hub id, dtype), and
:mod:`~medm3.vlm.vila.backend` (:class:`VilaBackend`).
"""

from __future__ import annotations

from medm3.errors import MissingDependencyError

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError(
        _exc.name or "torch", "vlm", "The VILA-M3 backend (vila)"
    ) from None

from medm3.vlm.vila.backend import VilaBackend
from medm3.vlm.vila.templates import render_prompt
from medm3.vlm.vila.tokenize import IMAGE_TOKEN_INDEX, tokenize_prompt

__all__ = ["IMAGE_TOKEN_INDEX", "VilaBackend", "render_prompt", "tokenize_prompt"]
