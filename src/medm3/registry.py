"""A generic registry of lazily imported factories.

Experts, VLM backends and evaluation tasks are all looked up by name. Each
entry is a ``"module:attribute"`` string, imported only when the entry is
used, so listing names (or running ``m3 --help``) never imports torch.
Third-party packages add entries through a Python entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from medm3.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> lazily imported object, with entry-point plugins and "did you mean".

    Args:
        kind: What the registry holds, for error messages ("expert", "backend").
        entry_point_group: Entry-point group scanned for third-party entries.
        builtins: Built-in entries, name -> ``"module:attribute"``.
    """

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        builtins: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._targets: dict[str, str] = dict(builtins or {})
        self._builtin_order = list(builtins or {})
        self._loaded: dict[str, T] = {}
        self._plugins_scanned = False

    def register(self, name: str, target: str | T, *, overwrite: bool = False) -> None:
        """Add an entry.

        Args:
            name: Registry name (case-insensitive lookups use the lower-cased form).
            target: ``"module:attribute"`` or the object itself.
            overwrite: Replace an existing entry of the same name.

        Raises:
            ValueError: If the name exists and ``overwrite`` is false.
        """
        key = name.lower()
        if not overwrite and (key in self._targets or key in self._loaded):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._loaded.pop(key, None)
        if isinstance(target, str):
            self._targets[key] = target
        else:
            self._targets.pop(key, None)
            self._loaded[key] = target

    def _scan_plugins(self) -> None:
        if self._plugins_scanned or not self.entry_point_group:
            return
        self._plugins_scanned = True
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            self._targets.setdefault(ep.name.lower(), ep.value)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._scan_plugins()
        return sorted(set(self._targets) | set(self._loaded))

    def listed(self) -> list[str]:
        """Names for listings: the built-ins in the order given, then the others sorted."""
        names = self.names()
        first = [n for n in self._builtin_order if n in names]
        return first + [n for n in names if n not in first]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """Import (once) and return the entry called ``name``.

        Raises:
            InputError: Unknown name; the message suggests the closest names.
        """
        key = name.lower()
        if key in self._loaded:
            return self._loaded[key]
        self._scan_plugins()
        if key not in self._targets:
            raise InputError(self.unknown_message(name))
        module_name, _, attr = self._targets[key].partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        self._loaded[key] = obj
        return obj

    def unknown_message(self, name: str) -> str:
        """The "unknown X 'name'. Did you mean ...? Available: ..." message."""
        names = self.names()
        from medm3.utils.suggest import did_you_mean

        hint = did_you_mean(name, names)
        hint = f" {hint}" if hint else ""
        return f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(names) or 'none'}"
