"""The build engine: determinism, resume after a kill, bad-row threshold, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3.data.engine import TooManyBadRowsError, build_dataset, staging_path
from medm3.data.vqa_rad import VqaRadBuilder
from medm3.errors import InputError
from tests.data.fixtures import VQA_RAD_RECORDS, read_tree, write_vqa_rad


def many_records(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        base = dict(VQA_RAD_RECORDS[i % len(VQA_RAD_RECORDS)])
        base["qid"] = i + 1
        rows.append(base)
    return rows


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    source = write_vqa_rad(tmp_path / "src", many_records(12))
    a = build_dataset("vqa-rad", source, tmp_path / "a", shard_size=5)
    b = build_dataset("vqa-rad", source, tmp_path / "b", shard_size=5)
    assert read_tree(tmp_path / "a") == read_tree(tmp_path / "b")
    assert a.manifest == b.manifest
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["builder"] == "vqa-rad" and manifest["seed"] == 0
    assert manifest["counts"]["test"]["rows"] == 6 and manifest["counts"]["train"]["rows"] == 6
    assert set(manifest["source_checksums"]) == {"VQA_RAD Dataset Public.json"}
    assert not staging_path(tmp_path / "a").exists()


def test_resume_after_kill_gives_the_same_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_vqa_rad(tmp_path / "src", many_records(10))
    clean = build_dataset("vqa-rad", source, tmp_path / "clean", shard_size=3)

    original = VqaRadBuilder.convert
    calls = {"n": 0}

    def dying(self: VqaRadBuilder, item, ctx):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt  # a kill after 7 items (2 full shards)
        return original(self, item, ctx)

    out = tmp_path / "out"
    monkeypatch.setattr(VqaRadBuilder, "convert", dying)
    with pytest.raises(KeyboardInterrupt):
        build_dataset("vqa-rad", source, out, shard_size=3)
    assert not out.exists()  # nothing under the final name
    assert len(list((staging_path(out) / ".shards").iterdir())) == 2
    monkeypatch.setattr(VqaRadBuilder, "convert", original)
    resumed = build_dataset("vqa-rad", source, out, shard_size=3)
    assert resumed.reused_items == 6
    assert read_tree(out) == read_tree(tmp_path / "clean")
    assert resumed.manifest == clean.manifest


def test_changed_arguments_start_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_vqa_rad(tmp_path / "src", many_records(6))
    out = tmp_path / "out"
    original = VqaRadBuilder.convert
    calls = {"n": 0}

    def dying(self: VqaRadBuilder, item, ctx):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("bug")
        return original(self, item, ctx)

    monkeypatch.setattr(VqaRadBuilder, "convert", dying)
    with pytest.raises(RuntimeError):
        build_dataset("vqa-rad", source, out, shard_size=2)
    monkeypatch.setattr(VqaRadBuilder, "convert", original)
    summary = build_dataset("vqa-rad", source, out, shard_size=2, seed=1)
    assert summary.reused_items == 0 and summary.manifest["seed"] == 1


def test_bad_rows_over_the_threshold_fail_and_write_nothing(tmp_path: Path) -> None:
    records = many_records(10)
    del records[2]["answer"]
    records[5]["answer_type"] = "MAYBE"
    source = write_vqa_rad(tmp_path / "src", records)
    out = tmp_path / "out"
    with pytest.raises(TooManyBadRowsError) as info:
        build_dataset("vqa-rad", source, out)
    message = str(info.value)
    assert (
        "2 of 10 source rows are malformed" in message and "vqa-rad/3: missing 'answer'" in message
    )
    assert "\n" not in message
    assert not out.exists() and not staging_path(out).exists()

    summary = build_dataset("vqa-rad", source, out, max_bad_fraction=0.2)
    bad = summary.manifest["bad"]
    assert bad["count"] == 2
    assert [b["id"] for b in bad["rows"]] == ["vqa-rad/3", "vqa-rad/6"]
    assert summary.manifest["total_rows"] == 8


def test_missing_images_are_skipped_not_bad(tmp_path: Path) -> None:
    source = write_vqa_rad(tmp_path / "src", many_records(4))
    (source / "VQA_RAD Image Folder" / "synpic29265.jpg").unlink()
    summary = build_dataset("vqa-rad", source, tmp_path / "out")
    assert summary.manifest["skipped"]["reasons"] == {"image file missing": 2}
    assert summary.manifest["bad"]["count"] == 0


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    source = write_vqa_rad(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(InputError, match="already exists"):
        build_dataset("vqa-rad", source, out)
    assert (out / "keep.txt").read_text() == "old"
    build_dataset("vqa-rad", source, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_image_modes(tmp_path: Path, mode: str) -> None:
    source = write_vqa_rad(tmp_path / "src")
    build_dataset("vqa-rad", source, tmp_path / "out", image_mode=mode)
    image = tmp_path / "out" / "images" / "synpic54610.jpg"
    original = source / "VQA_RAD Image Folder" / "synpic54610.jpg"
    assert image.read_bytes() == original.read_bytes()
    if mode == "symlink":
        assert image.is_symlink()
    else:
        assert image.stat().st_ino == original.stat().st_ino


def test_argument_errors(tmp_path: Path) -> None:
    source = write_vqa_rad(tmp_path / "src")
    with pytest.raises(InputError, match="source not found"):
        build_dataset("vqa-rad", tmp_path / "nope", tmp_path / "out")
    with pytest.raises(InputError, match="Did you mean 'vqa-rad'"):
        build_dataset("vqa-rd", source, tmp_path / "out")
    with pytest.raises(InputError, match="max-bad-fraction"):
        build_dataset("vqa-rad", source, tmp_path / "out", max_bad_fraction=2)
    with pytest.raises(InputError, match="has no option"):
        build_dataset("vqa-rad", source, tmp_path / "out", options={"colour": 1})
    assert not (tmp_path / "out").exists()


def test_limit(tmp_path: Path) -> None:
    source = write_vqa_rad(tmp_path / "src", many_records(8))
    summary = build_dataset("vqa-rad", source, tmp_path / "out", limit=3)
    assert summary.manifest["source_items"] == 3 and summary.manifest["limit"] == 3
