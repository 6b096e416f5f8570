"""CLI tests never write into the real user data folder (chat's default run folders)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("m3-data")
    monkeypatch.setenv("MEDM3_DATA_DIR", str(folder))
    return folder
