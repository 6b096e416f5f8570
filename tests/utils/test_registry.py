"""The generic registry (medm3.registry): listing order of built-ins and plugins."""

from __future__ import annotations

import pytest

from medm3.errors import InputError
from medm3.registry import Registry


def test_listed_names_keep_builtin_order_then_sort_the_rest() -> None:
    reg: Registry[object] = Registry("widget", None, {"zeta": "json:dumps", "alpha": "json:loads"})
    reg.register("mid", object())
    reg.register("beta", "json:JSONDecoder")
    assert reg.names() == ["alpha", "beta", "mid", "zeta"]
    assert reg.listed_names() == ["zeta", "alpha", "beta", "mid"]
    reg.register("zeta", object(), overwrite=True)  # a replaced built-in keeps its place
    assert reg.listed_names() == ["zeta", "alpha", "beta", "mid"]


def test_lookup_imports_lazily_and_suggests() -> None:
    import json

    reg: Registry[object] = Registry("widget", None, {"dumps": "json:dumps"})
    assert reg.get("DUMPS") is json.dumps and "dumps" in reg
    with pytest.raises(InputError, match=r"unknown widget 'dump'\. Did you mean 'dumps'\?"):
        reg.get("dump")
