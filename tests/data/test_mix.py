"""Mixtures: the shipped presets load; mixing repeats rows and relocates image paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3.data.engine import build_dataset
from medm3.data.llava import read_rows, row_images
from medm3.data.mix import load_mixture, mix
from medm3.errors import InputError
from tests.data.fixtures import write_slake, write_vqa_rad

PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs" / "mixtures").glob("*.yaml"))


def test_presets_exist() -> None:
    assert "vila_m3_released.yaml" in [p.name for p in PRESETS]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads(path: Path) -> None:
    mixture = load_mixture(path)
    assert mixture.entries and all(e.repeat >= 0 for e in mixture.entries)


def test_released_mixture_repeat_counts() -> None:
    released = load_mixture(next(p for p in PRESETS if p.name == "vila_m3_released.yaml"))
    assert {e.name: e.repeat for e in released.entries} == {
        "usmle": 10,
        "radvqa": 4,
        "slake": 4,
        "pathvqa": 4,
        "expert_mimic_vqa": 2,
        "expert_vista3d": 8,
        "expert_brats": 16,
        "mimic_report": 1,
        "mimic_report_expert": 1,
    }


def test_mix_repeats_and_relocates(tmp_path: Path) -> None:
    root = tmp_path / "data"
    build_dataset("vqa-rad", write_vqa_rad(tmp_path / "vqarad"), root / "radvqa")
    build_dataset("slake", write_slake(tmp_path / "slake"), root / "slake")
    text = [{"id": "q1", "conversations": [{"from": "human", "value": "Hi"},
                                           {"from": "gpt", "value": "Hello"}]}]  # fmt: skip
    (root / "usmle").mkdir()
    (root / "usmle" / "train.json").write_text(json.dumps(text))
    config = tmp_path / "mix.yaml"
    config.write_text(
        "name: t\ndatasets:\n"
        "  - {name: radvqa, path: radvqa, repeat: 2}\n"
        "  - {name: slake, path: slake, repeat: 1, split: val}\n"
        "  - {name: usmle, path: usmle/train.json, repeat: 3}\n"
        "  - {name: unused, path: nowhere, repeat: 0}\n"
    )
    out = tmp_path / "mixes" / "mix.json"
    summary = mix(load_mixture(config), out, root=root)
    rows = read_rows(out)
    assert summary["rows"] == len(rows) == 2 * 2 + 1 + 3
    assert len({r["id"] for r in rows}) == len(rows)
    assert rows[0]["id"] == "radvqa/vqa-rad/1" and rows[1]["id"] == "radvqa/vqa-rad/1#r1"
    for row in rows:
        for image in row_images(row):
            assert image.startswith("../data/")
            assert (out.parent / image).is_file()
    assert {r["mixture"] for r in rows} == {"radvqa", "slake", "usmle"}

    with pytest.raises(InputError, match="already exists"):
        mix(load_mixture(config), out, root=root)
    shuffled = tmp_path / "shuffled.json"
    mix(load_mixture(config), shuffled, root=root, shuffle=True, seed=1)
    assert sorted(r["id"] for r in read_rows(shuffled)) == sorted(r["id"] for r in rows)


def test_missing_dataset(tmp_path: Path) -> None:
    config = tmp_path / "mix.yaml"
    config.write_text("datasets:\n  - {name: a, path: a/train.json, repeat: 1}\n")
    with pytest.raises(InputError, match="dataset 'a' not found"):
        mix(load_mixture(config), tmp_path / "o.json", root=tmp_path)
    with pytest.raises(InputError, match="the mixture produced no rows"):
        mix(load_mixture(config), tmp_path / "o.json", root=tmp_path, allow_missing=True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("datasets: []\n", "'datasets' must be a non-empty list"),
        ("datasets:\n  - {name: a, path: b, repeat: -1}\n", "'repeat' must be an integer >= 0"),
        ("datasets:\n  - {name: a, path: b, weight: 2}\n", "unknown key(s) weight"),
        ("colour: red\ndatasets:\n  - {name: a, path: b}\n", "unknown key(s) colour"),
        ("datasets:\n  - {name: a, path: b}\n  - {name: a, path: c}\n", "listed twice: a"),
        ("datasets: [\n", "not a valid YAML file"),
    ],
)
def test_bad_mixture_files(tmp_path: Path, text: str, needle: str) -> None:
    config = tmp_path / "m.yaml"
    config.write_text(text)
    with pytest.raises(InputError) as info:
        load_mixture(config)
    assert needle in str(info.value) and "\n" not in str(info.value)
