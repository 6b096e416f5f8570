"""The one rule that tells a local model folder from a Hugging Face Hub id."""

from __future__ import annotations

import pytest

from medm3.utils.paths import looks_like_local_path


@pytest.mark.parametrize(
    "text",
    [
        "gpt2",
        "MONAI/Llama3-VILA-M3-8B",
        "google/medgemma-4b-it",
        "llava-hf/llava-1.5-7b-hf",
        "org.name/model_v1.0",
    ],
)
def test_hub_ids_are_not_paths(text: str) -> None:
    assert looks_like_local_path(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "./model",
        "../models/vila",
        ".cache/model",
        "/abs/model",
        "~/models/vila",
        "\\\\server\\share\\model",
        "C:\\models\\vila",
        "c:/models/vila",
        "models\\vila",
        "models/org/name",
        "org/name/",
        "model/",
    ],
)
def test_paths_are_paths(text: str) -> None:
    assert looks_like_local_path(text) is True
