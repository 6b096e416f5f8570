"""Expert models as tools: VISTA3D, BraTS, TorchXRayVision, measurement.

Use :func:`get_expert` to get a shared instance and :func:`model_cards` for the
text shown to the VLM.
"""

from __future__ import annotations

from medm3.experts.base import Expert, ExpertError, ExpertResult, Overlay, RunContext
from medm3.experts.registry import (
    EXPERTS,
    expert_names,
    get_expert,
    get_expert_class,
    model_cards,
)

__all__ = [
    "EXPERTS",
    "Expert",
    "ExpertError",
    "ExpertResult",
    "Overlay",
    "RunContext",
    "expert_names",
    "get_expert",
    "get_expert_class",
    "model_cards",
]
