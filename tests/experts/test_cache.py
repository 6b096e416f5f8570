"""The expert result cache and its integration into ``Expert.run``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from medm3.experts.base import RunContext
from medm3.experts.cache import ResultCache, cache_key, hash_image
from medm3.experts.catalogue import WeightsNotFoundError
from tests.doubles import DerivingFakeExpert, FakeSegExpert, volume


def entries(store: ResultCache) -> list[Path]:
    return sorted(p for p in store.root.iterdir()) if store.root.is_dir() else []


def test_hash_image_is_content_based() -> None:
    base = volume()
    same = volume()
    same.source, same.metadata = "elsewhere.nii", {"series_description": "x"}
    assert hash_image(base) == hash_image(same)
    changed = volume()
    changed.array[0, 0, 0] += 1
    assert hash_image(changed) != hash_image(base)
    assert hash_image(volume(spacing=(1.0, 1.0, 3.0))) != hash_image(base)
    moved = volume()
    moved.affine[0, 3] = 5.0
    assert hash_image(moved) != hash_image(base)
    as_float = volume(base.array.astype(np.float32))
    assert hash_image(as_float) != hash_image(base)
    transposed = volume(np.asfortranarray(base.array))  # same content, other layout
    assert hash_image(transposed) == hash_image(base)


def test_cache_key_depends_on_every_part() -> None:
    parts = ("fakeseg", "bright", "v1", {"image": "h1"}, {"plane": "axial"})
    key = cache_key(*parts)
    assert key == cache_key(*parts) and len(key) == 32
    assert cache_key("other", *parts[1:]) != key
    assert cache_key(parts[0], "dark", *parts[2:]) != key
    assert cache_key(*parts[:2], "v2", *parts[3:]) != key
    assert cache_key(*parts[:3], {"image": "h2"}, parts[4]) != key
    assert cache_key(*parts[:4], {"plane": "coronal"}) != key


def test_second_run_is_a_memory_hit(result_cache: ResultCache) -> None:
    expert = FakeSegExpert()
    first = expert.run(volume(), "bright")
    assert first.info["cache"] == "miss" and expert.run_calls == 1
    second = expert.run(volume(), "BRIGHT")
    assert expert.run_calls == 1 and expert.setup_calls == 1
    assert second.info["cache"] == "hit" and second.info["cache_tier"] == "memory"
    assert second.info["cache_key"] == first.info["cache_key"]
    assert second.text == first.text
    assert set(second.timings) == {"cache", "total"}
    assert "run" in second.info["cached_timings"]
    # Changing the returned result does not change what the cache holds.
    second.info["mine"] = 1
    second.label_names.clear()
    third = expert.run(volume(), "bright")
    assert "mine" not in third.info and third.label_names == {1: "bright"}


def test_disk_hit_in_fresh_cache(result_cache: ResultCache) -> None:
    image = volume()
    context = RunContext(plane="coronal")
    first = FakeSegExpert().run(image, "everything", context=context)
    assert len(entries(result_cache)) == 1
    fresh = ResultCache(result_cache.root)
    expert = FakeSegExpert()
    expert.result_cache = fresh
    again = expert.run(volume(), "everything", context=RunContext(plane="coronal"))
    assert expert.run_calls == 0 and expert.setup_calls == 0
    assert again.info["cache"] == "hit" and again.info["cache_tier"] == "disk"
    assert again.text == first.text and again.label_names == first.label_names
    assert again.measurements == [{"label": 1, "value": 1.5}]
    assert again.info["device"] == "cpu"
    assert first.label_map is not None and again.label_map is not None
    np.testing.assert_array_equal(again.label_map.array, first.label_map.array)
    np.testing.assert_array_equal(again.label_map.affine, first.label_map.affine)
    assert again.label_map.spacing == first.label_map.spacing
    overlay = again.overlays[0]
    assert (overlay.name, overlay.plane, overlay.slice_index) == ("fakeseg_axial_0", "axial", 0)
    assert np.array_equal(np.asarray(overlay.image), np.asarray(first.overlays[0].image))
    assert overlay.image.info["medm3"] == {"plane": "coronal", "index": 0}
    # The second lookup in the same cache instance comes from memory.
    assert expert.run(image, "everything", context=context).info["cache_tier"] == "memory"


@pytest.mark.parametrize("change", ["args", "weights", "image", "context"])
def test_changes_miss(result_cache: ResultCache, change: str) -> None:
    expert = FakeSegExpert()
    expert.run(volume(), "bright")
    image, args, context = volume(), "bright", RunContext()
    if change == "args":
        args = "dark"
    elif change == "weights":
        expert.version = "v2"
    elif change == "image":
        image = volume(seed=1)
    else:
        context = RunContext(slice_index=2)
    result = expert.run(image, args, context=context)
    assert result.info["cache"] == "miss" and expert.run_calls == 2


@pytest.mark.parametrize("damage", ["garbage_json", "missing_npz", "wrong_key", "bad_png"])
def test_corrupt_entry_is_ignored(
    result_cache: ResultCache, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    FakeSegExpert().run(volume(), "bright")
    (entry,) = entries(result_cache)
    if damage == "garbage_json":
        (entry / "result.json").write_text("{not json")
    elif damage == "missing_npz":
        (entry / "label_map.npz").unlink()
    elif damage == "wrong_key":
        doc = json.loads((entry / "result.json").read_text())
        doc["key"] = "0" * 32
        (entry / "result.json").write_text(json.dumps(doc))
    else:
        (entry / "overlay_0.png").write_bytes(b"not a png")
    expert = FakeSegExpert()
    expert.result_cache = ResultCache(result_cache.root)  # empty memory tier
    with caplog.at_level(logging.WARNING, logger="medm3.experts.cache"):
        result = expert.run(volume(), "bright")
    assert result.info["cache"] == "miss" and expert.run_calls == 1
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "damaged cache entry" in caplog.text and str(entry) in caplog.text
    # The damaged entry was replaced by a good one.
    again = FakeSegExpert()
    again.result_cache = ResultCache(result_cache.root)
    assert again.run(volume(), "bright").info["cache"] == "hit"


def test_a_bug_in_the_reader_is_logged_not_hidden(
    result_cache: ResultCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    FakeSegExpert().run(volume(), "bright")
    (entry,) = entries(result_cache)

    def broken(folder: Path, key: str) -> None:
        raise AttributeError("'NoneType' object has no attribute 'array'")

    monkeypatch.setattr("medm3.experts.cache._load_entry", broken)
    expert = FakeSegExpert()
    expert.result_cache = ResultCache(result_cache.root)
    with caplog.at_level(logging.WARNING, logger="medm3.experts.cache"):
        result = expert.run(volume(), "bright")
    assert result.info["cache"] == "miss" and expert.run_calls == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "failed unexpectedly" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is AttributeError
    assert entry.is_dir()  # a reader bug does not destroy good entries


def test_entries_are_written_atomically(result_cache: ResultCache) -> None:
    FakeSegExpert().run(volume(), "bright")
    (entry,) = entries(result_cache)
    assert sorted(p.name for p in entry.iterdir()) == [
        "label_map.npz",
        "overlay_0.png",
        "result.json",
    ]
    assert not [p for p in result_cache.root.iterdir() if p.name.startswith(".")]


def test_derive_from_cache(result_cache: ResultCache) -> None:
    expert = DerivingFakeExpert()
    assert expert.run(volume(), "bright").info["cache"] == "miss"  # nothing to derive from
    expert.run(volume(), "everything")
    assert expert.run_calls == 2
    derived = expert.run(volume(), "dark")
    assert expert.run_calls == 2
    assert derived.info["cache"] == "derived" and derived.args == "dark"
    assert derived.label_names == {2: "dark"}
    assert derived.label_map is not None and set(np.unique(derived.label_map.array)) == {0, 2}
    assert "derive" in derived.timings
    # Derived results are kept in memory, not on disk.
    assert expert.run(volume(), "dark").info["cache"] == "hit"
    assert len(entries(result_cache)) == 2
    # Another image: the lookup finds nothing, so the expert runs.
    assert expert.run(volume(seed=3), "dark").info["cache"] == "miss"


def test_uncacheable_results_are_not_stored(result_cache: ResultCache) -> None:
    expert = FakeSegExpert()
    expert.extra_info = {"cacheable": False}
    expert.run(volume(), "bright")
    assert expert.run(volume(), "bright").info["cache"] == "miss"
    assert expert.run_calls == 2 and entries(result_cache) == []


def test_bypass(result_cache: ResultCache, monkeypatch: pytest.MonkeyPatch) -> None:
    expert = FakeSegExpert()
    assert expert.run(volume(), "bright", use_cache=False).info["cache"] == "off"
    monkeypatch.setenv("MEDM3_NO_RESULT_CACHE", "1")
    assert expert.run(volume(), "bright").info["cache"] == "off"
    assert expert.run_calls == 2 and entries(result_cache) == [] and len(result_cache) == 0


def test_weights_error_runs_uncached(result_cache: ResultCache) -> None:
    class NoWeights(FakeSegExpert):
        def weights_id(self) -> str:
            raise WeightsNotFoundError("weights missing")

    expert = NoWeights()
    assert expert.run(volume(), "bright").info["cache"] == "off"
    assert expert.run_calls == 1


def test_unserialisable_context_runs_uncached(result_cache: ResultCache) -> None:
    context = RunContext(options={"points": np.zeros(3)})
    assert FakeSegExpert().run(volume(), "bright", context=context).info["cache"] == "off"


def test_memory_lru_bound(tmp_path: Path) -> None:
    store = ResultCache(tmp_path / "r", max_items=2, disk=False)
    expert = FakeSegExpert()
    expert.result_cache = store
    for seed in range(3):
        expert.run(volume(seed=seed), "bright")
    assert len(store) == 2
    assert expert.run(volume(seed=2), "bright").info["cache"] == "hit"
    assert expert.run(volume(seed=0), "bright").info["cache"] == "miss"  # evicted
    assert not (tmp_path / "r").exists()


def test_clear(result_cache: ResultCache) -> None:
    FakeSegExpert().run(volume(), "bright")
    result_cache.clear()
    assert len(result_cache) == 0 and entries(result_cache) == []
