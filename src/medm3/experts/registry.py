"""The expert registry: built-in experts plus the ``medm3.experts`` entry-point group.

Third-party packages register an expert class with, in their pyproject::

    [project.entry-points."medm3.experts"]
    myexpert = "mypackage.experts:MyExpert"
"""

from __future__ import annotations

import threading
from pathlib import Path

from medm3 import prompts
from medm3.errors import InputError
from medm3.experts.base import Expert
from medm3.registry import Registry

#: Built-in experts, in model-card order.
BUILTIN_EXPERTS: dict[str, str] = {
    "brats": "medm3.experts.brats:BratsExpert",
    "vista3d": "medm3.experts.vista3d:Vista3DExpert",
    "cxr": "medm3.experts.cxr:CXRExpert",
    "measure": "medm3.experts.measure:MeasureExpert",
}

EXPERTS: Registry[type[Expert]] = Registry("expert", "medm3.experts", BUILTIN_EXPERTS)

_instances: dict[tuple[str, str | None, str | None], Expert] = {}
_instances_lock = threading.Lock()


def expert_names() -> list[str]:
    """Registered expert names: built-ins in model-card order, then plugins sorted."""
    return EXPERTS.listed_names()


def get_expert_class(name: str) -> type[Expert]:
    """The expert class registered as ``name`` (registry name or trigger name).

    Raises:
        InputError: Unknown expert (with "did you mean").
    """
    if name.lower() in EXPERTS:
        return EXPERTS.get(name)
    for candidate in expert_names():
        cls = EXPERTS.get(candidate)
        if cls.trigger.lower() == name.lower():
            return cls
    raise InputError(EXPERTS.unknown_message(name))


def get_expert(
    name: str, *, device: str | None = None, weights: str | Path | None = None
) -> Expert:
    """A process-wide shared instance, so weights are loaded once per process.

    Args:
        name: Registry or trigger name.
        device: Device preference (``None``: automatic).
        weights: Local weights override (see each expert).
    """
    cls = get_expert_class(name)
    key = (cls.name, device, str(weights) if weights is not None else None)
    with _instances_lock:
        if key not in _instances:
            _instances[key] = cls(device=device, weights=weights)
        return _instances[key]


def model_cards(names: list[str] | None = None) -> str:
    """The model-card block for the given experts (default: all shown to the VLM).

    This is the text the agent, the data builders and the evaluation put in
    front of the question; it is generated from the registry.
    """
    classes = [get_expert_class(n) for n in (names or expert_names())]
    return prompts.model_cards_block(c.model_card() for c in classes if c.in_model_cards)
