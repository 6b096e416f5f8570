"""Helpers for tests and benchmarks: tiny random-weight models in the real layouts.

Importing this package is cheap; torch/transformers are imported only when a
builder runs. Each builder writes a complete model folder (< 2 MB, < 2 s):

- :func:`build_tiny_vila`: a VILA-M3 checkpoint folder (``llm/``,
  ``vision_tower/``, ``mm_projector/``) for the ``vila`` backend.
- :func:`build_tiny_llava`, :func:`build_tiny_qwen2_vl`,
  :func:`build_tiny_gemma3`: transformers image-text-to-text models for the
  ``hf`` backend.
- :func:`build_tiny_experts`, :func:`write_vista3d_bundle`,
  :func:`write_brats_bundle`, :func:`write_random_xrv_weights`: expert weights
  (MONAI bundles, a torchxrayvision cache folder) with random weights, loadable
  with ``--weights NAME=DIR`` (see :mod:`medm3.testing.experts`).
- :func:`force_replies`: make a real VILA backend emit given texts (the
  ``m3 demo`` conversation; see :mod:`medm3.testing.forced`).

Random weights give meaningless answers: these exist to exercise code paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.utils.lazy import lazy_getattr

__all__ = [
    "build_tiny_experts",
    "build_tiny_gemma3",
    "build_tiny_llava",
    "build_tiny_qwen2_vl",
    "build_tiny_vila",
    "force_replies",
    "write_brats_bundle",
    "write_random_xrv_weights",
    "write_vista3d_bundle",
]

_HOMES = {
    "build_tiny_vila": "medm3.testing.tiny_vila",
    "build_tiny_llava": "medm3.testing.tiny_hf",
    "build_tiny_qwen2_vl": "medm3.testing.tiny_hf",
    "build_tiny_gemma3": "medm3.testing.tiny_hf",
    "build_tiny_experts": "medm3.testing.experts",
    "write_vista3d_bundle": "medm3.testing.experts",
    "write_brats_bundle": "medm3.testing.experts",
    "write_random_xrv_weights": "medm3.testing.experts",
    "force_replies": "medm3.testing.forced",
}

if TYPE_CHECKING:  # pragma: no cover
    from medm3.testing.experts import (
        build_tiny_experts,
        write_brats_bundle,
        write_random_xrv_weights,
        write_vista3d_bundle,
    )
    from medm3.testing.forced import force_replies
    from medm3.testing.tiny_hf import build_tiny_gemma3, build_tiny_llava, build_tiny_qwen2_vl
    from medm3.testing.tiny_vila import build_tiny_vila

__getattr__ = lazy_getattr(__name__, _HOMES)
