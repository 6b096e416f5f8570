"""The expert registry: built-ins, entry-point plugins, did-you-mean, shared instances."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from typing import Any

import pytest

from medm3 import prompts
from medm3.errors import InputError
from medm3.experts import registry
from medm3.experts.measure import MeasureExpert
from medm3.registry import Registry
from tests.doubles import FakeSegExpert


def test_builtin_names_in_model_card_order() -> None:
    names = registry.expert_names()
    assert names[: len(registry.BUILTIN_EXPERTS)] == list(registry.BUILTIN_EXPERTS)


def test_lookup_by_name_or_trigger_case_insensitive() -> None:
    assert registry.get_expert_class("measure") is MeasureExpert
    assert registry.get_expert_class("MEASURE") is MeasureExpert
    assert registry.get_expert_class("Measure") is MeasureExpert


def test_unknown_expert_did_you_mean() -> None:
    with pytest.raises(InputError) as info:
        registry.get_expert_class("measur")
    message = str(info.value)
    assert "unknown expert 'measur'" in message
    assert "Did you mean 'measure'?" in message
    assert "Available:" in message and "vista3d" in message


@pytest.fixture
def plugin_registry(monkeypatch: pytest.MonkeyPatch) -> Registry[Any]:
    """A fresh registry that sees one entry-point plugin (a module made on the fly)."""
    module = types.ModuleType("medm3_fake_plugin")

    class PluginExpert(FakeSegExpert):
        name = "plugfake"
        trigger = "PLUGSEG"
        overview = "an expert from a third-party package"

    module.PluginExpert = PluginExpert  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medm3_fake_plugin", module)
    point = importlib.metadata.EntryPoint(
        name="plugfake", value="medm3_fake_plugin:PluginExpert", group="medm3.experts"
    )
    calls: list[str | None] = []

    def fake_entry_points(*, group: str | None = None, **_: Any) -> list[Any]:
        calls.append(group)
        return [point] if group == "medm3.experts" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    fresh: Registry[Any] = Registry("expert", "medm3.experts", registry.BUILTIN_EXPERTS)
    monkeypatch.setattr(registry, "EXPERTS", fresh)
    return fresh


def test_entry_point_plugin_registration(plugin_registry: Registry[Any]) -> None:
    names = registry.expert_names()
    assert names == [*registry.BUILTIN_EXPERTS, "plugfake"]
    cls = registry.get_expert_class("plugfake")
    assert cls.name == "plugfake" and issubclass(cls, FakeSegExpert)
    assert registry.get_expert_class("plugseg") is cls  # by trigger name
    block = registry.model_cards()
    assert cls.model_card() + "\n" in block
    assert block.startswith(prompts.MODEL_CARDS_HEADER)
    assert block.endswith(prompts.MODEL_CARDS_FOOTER)
    with pytest.raises(InputError, match="Did you mean 'plugfake'"):
        registry.get_expert_class("plugfak")


def test_model_cards_subset_and_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    block = registry.model_cards(["measure"])
    assert block == prompts.model_cards_block([MeasureExpert.model_card()])
    monkeypatch.setattr(MeasureExpert, "in_model_cards", False)
    assert "MEASURE" not in registry.model_cards(["measure"])


def test_get_expert_shares_instances() -> None:
    first = registry.get_expert("measure")
    assert registry.get_expert("MEASURE") is first
    assert registry.get_expert("measure", device="cpu") is not first
    assert isinstance(first, MeasureExpert)


def test_registry_listing_keeps_the_builtin_order_then_sorts_the_rest() -> None:
    listing: Registry[Any] = Registry("thing", None, {"zeta": "m:z", "alpha": "m:a"})
    listing.register("omega", object())
    listing.register("beta", "m:b")
    assert listing.names() == ["alpha", "beta", "omega", "zeta"]
    assert listing.listed_names() == ["zeta", "alpha", "beta", "omega"]
