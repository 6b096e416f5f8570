"""force_replies: a real VILA backend emits the given texts, through generate and stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from medm3.errors import MedM3Error
from medm3.testing import build_tiny_vila, force_replies
from medm3.vlm.base import GenerationConfig, Message


@pytest.fixture(scope="module")
def vila(tmp_path_factory: pytest.TempPathFactory):
    from medm3.vlm.vila.backend import VilaBackend

    return VilaBackend(str(build_tiny_vila(tmp_path_factory.mktemp("tv"))), device="cpu")


def test_forced_texts_then_free_generation(vila) -> None:
    messages = [Message.text("user", "Segment the liver")]
    config = GenerationConfig(max_new_tokens=12)
    free = vila.generate(messages, config).text
    with force_replies(vila, ["<VISTA3D(hepatic tumor)>", None, "Größe: 12 mm."]) as state:
        assert vila.generate(messages, GenerationConfig(max_new_tokens=64)).text == (
            "<VISTA3D(hepatic tumor)>"
        )
        assert vila.generate(messages, config).text == free  # None: the model's own output
        streamed = "".join(vila.stream(messages, GenerationConfig(max_new_tokens=64)))
        assert streamed == "Größe: 12 mm."
        assert state.used == 3
        with pytest.raises(MedM3Error, match="all 3 forced replies are used"):
            vila.generate(messages, config)
    assert vila.generate(messages, config).text == free  # the hook is gone


def test_builders_are_public_and_lazy() -> None:
    import medm3.testing as testing

    for name in ("build_tiny_experts", "write_vista3d_bundle", "write_brats_bundle"):
        assert callable(getattr(testing, name))
    with pytest.raises(AttributeError):
        testing.no_such_builder  # noqa: B018


def test_build_tiny_experts_loads_through_the_weights_path(tmp_path: Path) -> None:
    """The folders it returns are what --weights NAME=DIR takes: the real loader accepts them."""
    from medm3.experts.catalogue import resolve_weights
    from medm3.testing import build_tiny_experts

    folders = build_tiny_experts(tmp_path, ["vista3d", "brats"])
    for name, folder in folders.items():
        assert resolve_weights(name, folder) == folder
    with pytest.raises(ValueError, match="no random-weight builder"):
        build_tiny_experts(tmp_path, ["nope"])
