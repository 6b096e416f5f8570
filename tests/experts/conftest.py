"""Fixtures for the expert tests; the test doubles live in ``tests/doubles.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.doubles import DerivingFakeExpert, FakeSegExpert, PairExpert


@pytest.fixture
def result_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh disk+memory result cache in ``tmp_path``, used as the process default."""
    from medm3.experts import cache as cache_module

    monkeypatch.delenv("MEDM3_NO_RESULT_CACHE", raising=False)
    store = cache_module.ResultCache(tmp_path / "results")
    monkeypatch.setattr(cache_module, "default_cache", lambda: store)
    yield store


@pytest.fixture
def registered_fakes() -> Iterator[None]:
    """Register the doubles in the expert registry for the duration of a test."""
    from medm3.experts.registry import EXPERTS

    doubles = (FakeSegExpert, DerivingFakeExpert, PairExpert)
    for cls in doubles:
        EXPERTS.register(cls.name, cls, overwrite=True)
    yield
    for cls in doubles:
        EXPERTS._loaded.pop(cls.name, None)
        EXPERTS._targets.pop(cls.name, None)
