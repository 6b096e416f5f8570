"""Fixtures for the agent tests: test-double experts registered, a fresh result cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles import FakeSegExpert


@pytest.fixture
def fake_experts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register the FAKESEG double, isolate shared expert instances and the result cache."""
    from medm3.experts import cache as cache_module
    from medm3.experts import registry

    monkeypatch.delenv("MEDM3_NO_RESULT_CACHE", raising=False)
    store = cache_module.ResultCache(tmp_path / "results")
    monkeypatch.setattr(cache_module, "default_cache", lambda: store)
    monkeypatch.setattr(registry, "_instances", {})
    registry.EXPERTS.register(FakeSegExpert.name, FakeSegExpert, overwrite=True)
    yield
    registry.EXPERTS._loaded.pop(FakeSegExpert.name, None)
    registry.EXPERTS._targets.pop(FakeSegExpert.name, None)
