"""Helpers for tests and benchmarks: tiny random-weight models in the real layouts.

Importing this package is cheap; torch/transformers are imported only when a
builder runs. Each builder writes a complete model folder (< 2 MB, < 2 s):

- :func:`build_tiny_vila`: a VILA-M3 checkpoint folder (``llm/``,
  ``vision_tower/``, ``mm_projector/``) for the ``vila`` backend.
- :func:`build_tiny_llava`, :func:`build_tiny_qwen2_vl`,
  :func:`build_tiny_gemma3`: transformers image-text-to-text models for the
  ``hf`` backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["build_tiny_gemma3", "build_tiny_llava", "build_tiny_qwen2_vl", "build_tiny_vila"]

_HOMES = {
    "build_tiny_vila": "medm3.testing.tiny_vila",
    "build_tiny_llava": "medm3.testing.tiny_hf",
    "build_tiny_qwen2_vl": "medm3.testing.tiny_hf",
    "build_tiny_gemma3": "medm3.testing.tiny_hf",
}

if TYPE_CHECKING:  # pragma: no cover
    from medm3.testing.tiny_hf import build_tiny_gemma3, build_tiny_llava, build_tiny_qwen2_vl
    from medm3.testing.tiny_vila import build_tiny_vila


def __getattr__(name: str) -> Any:
    """Resolve the builders lazily so ``import medm3.testing`` does not import torch."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'medm3.testing' has no attribute {name!r}")
