"""Lazy package attributes (PEP 562), so importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """Build a module ``__getattr__`` that imports public names on first use.

    Args:
        package: The package's ``__name__`` (used in the error message).
        homes: Public name -> dotted module that defines it.

    Returns:
        A function to assign to the package's ``__getattr__``.

    Example:
        >>> __getattr__ = lazy_getattr(__name__, {"train": "medm3.train.api"})
    """

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(importlib.import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
