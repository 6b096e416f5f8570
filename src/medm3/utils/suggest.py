"""The one "did you mean" of medm3 (registries, CLI commands, config keys, structure names)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(
    name: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.6
) -> list[str]:
    """The choices closest to ``name`` (best first; case-insensitive)."""
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=cutoff)
    return [by_lower[f] for f in found]


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.6) -> str:
    """``"Did you mean 'a', 'b'?"`` for the close choices, or ``""`` when none is close.

    Args:
        name: The unknown name.
        choices: The known names.
        n: Most suggestions.
        cutoff: Similarity threshold (``difflib`` ratio).
    """
    close = close_matches(name, choices, n=n, cutoff=cutoff)
    return f"Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
