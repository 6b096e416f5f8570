"""Option parsing shared by several commands (``--weights NAME=DIR`` ...)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medm3.errors import InputError


def parse_weights(values: Iterable[str]) -> dict[str, Path]:
    """``--weights NAME=DIR`` values -> ``{expert registry name: folder}``.

    Args:
        values: Strings such as ``vista3d=/models/vista3d`` (the expert's
            registry or trigger name, any case).

    Returns:
        The mapping (checked: known experts, existing folders).

    Raises:
        InputError: No ``=``, an unknown expert, or a folder that does not exist.
    """
    from medm3.experts.registry import get_expert_class

    out: dict[str, Path] = {}
    for value in values:
        name, sep, folder = str(value).partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise InputError(
                f"--weights takes NAME=DIR (e.g. vista3d=/models/vista3d), not {value!r}"
            )
        expert = get_expert_class(name.strip()).name
        path = Path(folder.strip()).expanduser()
        if not path.is_dir():
            raise InputError(
                "weights folder not found" if not path.exists() else "not a folder", path
            )
        out[expert] = path
    return out
