"""Strict detection of expert triggers (``<VISTA3D(hepatic tumor)>``) in model output.

The model asks for an expert by writing ``<NAME(args)>``. Only well-formed
triggers naming a registered expert, with arguments that expert accepts, are
executed; anything that looks like an attempt but is not (an unknown name, a
malformed trigger, invalid arguments, several different calls in one turn)
yields an error message for the model instead. Parsing never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from medm3 import prompts
from medm3.utils.names import normalize_name

#: A well-formed trigger: ``<NAME(args)>``; args may not contain ``<``, ``>`` or ``)``.
TRIGGER_RE = re.compile(r"<([A-Za-z][A-Za-z0-9_]{0,31})\(([^<>()]{0,200})\)>")
#: Something that starts like a trigger: ``<NAME(``.
ATTEMPT_RE = re.compile(r"<([A-Za-z][A-Za-z0-9_]{0,31})\(")


@dataclass(frozen=True)
class Trigger:
    """A validated expert call.

    Attributes:
        expert: Registry name of the expert (``vista3d``).
        trigger: Trigger name as the expert declares it (``VISTA3D``).
        args: Normalised argument string.
        text: The exact trigger text found in the output.
    """

    expert: str
    trigger: str
    args: str
    text: str


@dataclass(frozen=True)
class TriggerParse:
    """Outcome of scanning one model output.

    Attributes:
        trigger: The call to execute, or ``None``.
        error: A message for the model when an attempted call is invalid.
    """

    trigger: Trigger | None = None
    error: str | None = None


def parse_trigger(text: str, experts: Iterable[str] | None = None) -> TriggerParse:
    """Find the expert call in a model output.

    Args:
        text: The model's output.
        experts: Registry names of the experts on offer (default: all registered).

    Returns:
        A :class:`TriggerParse`: a trigger, an error, or neither (a plain answer).
    """
    try:
        return _parse(text if isinstance(text, str) else str(text), experts)
    except Exception as exc:  # parsing must never crash the conversation
        return TriggerParse(error=f"the expert call could not be understood ({type(exc).__name__})")


def _offered(experts: Iterable[str] | None) -> dict[str, type]:
    from medm3.experts.registry import expert_names, get_expert_class

    names = list(experts) if experts is not None else expert_names()
    classes = [get_expert_class(n) for n in names]
    return {c.trigger.upper(): c for c in classes}


def _parse(text: str, experts: Iterable[str] | None) -> TriggerParse:
    found = [(m.group(0), m.group(1), m.group(2)) for m in TRIGGER_RE.finditer(text)]
    # "<NAME(args)>" in the model-card footer is the syntax itself, not a call.
    found = [f for f in found if f[1] != "NAME"]
    attempts = [m.group(1) for m in ATTEMPT_RE.finditer(text) if m.group(1) != "NAME"]
    if not found and not attempts:
        return TriggerParse()
    offered = _offered(experts)
    available = ", ".join(prompts.format_trigger(t, "args") for t in offered) or "none"
    if not found:
        name = attempts[0]
        return TriggerParse(
            error=f"the expert call starting '<{name}(' is malformed; "
            f"write it as <NAME(args)>, e.g. {prompts.format_trigger(name.upper(), '')}"
        )
    distinct = {(n.upper(), normalize_name(a)) for _, n, a in found}
    if len(distinct) > 1:
        calls = ", ".join(f[0] for f in found)
        return TriggerParse(error=f"call one expert at a time (found {calls})")
    raw, name, args = found[0]
    cls = offered.get(name.upper())
    if cls is None:
        return TriggerParse(error=f"there is no expert named {name}; available: {available}")
    from medm3.experts.base import ExpertError

    try:
        # A fresh instance: parse_args never needs loaded weights.
        norm = cls().parse_args(args)
    except ExpertError as exc:
        return TriggerParse(error=exc.message)
    return TriggerParse(trigger=Trigger(expert=cls.name, trigger=cls.trigger, args=norm, text=raw))
