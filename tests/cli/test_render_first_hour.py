"""`m3 render`: annotations and PNG metadata by default, built-in / detected label names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.cli.helpers import run
from tests.conftest import shared_ct as sample_ct
from tests.conftest import shared_ct_labels as sample_ct_labels


def test_render_annotates_and_records_metadata(tmp_path: Path, capsys) -> None:
    out = tmp_path / "a.png"
    code, _, err = run(["render", str(sample_ct()), "-o", str(out)], capsys)
    assert code == 0, err
    plain = tmp_path / "p.png"
    code, _, err = run(["render", str(sample_ct()), "-o", str(plain), "--no-annotations"], capsys)
    assert code == 0, err
    with Image.open(out) as a, Image.open(plain) as p:
        text = a.text
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(p, dtype=int)).sum(axis=-1)
    assert diff.any() and (diff > 0).mean() < 0.1  # letters, bar, text: a small part
    assert text["medm3:source"] == str(sample_ct())
    assert (text["medm3:plane"], text["medm3:index"], text["medm3:num_slices"]) == (
        "axial",
        "15",
        "30",
    )
    assert text["medm3:window"].startswith("soft_tissue (W400")
    assert text["medm3:pixel_spacing_mm"]


def test_render_overlay_names_from_table_or_header(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.png"
    args = ["render", str(sample_ct()), "-o", str(out), "--overlay", str(sample_ct_labels())]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "labels: label names read from the file's header" in stdout
    with Image.open(out) as png:
        assert "5=liver" in png.text["medm3:labels"]
    code, stdout, err = run([*args, "--labels", "vista3d"], capsys)
    assert code == 0, err
    with Image.open(out) as png:
        assert "1=liver" in png.text["medm3:labels"]  # VISTA3D's names for the same ids


def test_render_2d_says_what_is_unknown(
    tmp_path: Path, capsys, cxr_png_path: Path, cxr_mono1_path: Path
) -> None:
    out = tmp_path / "x.png"
    code, stdout, err = run(["render", str(cxr_png_path), "-o", str(out)], capsys)
    assert code == 0, err
    assert "note: orientation unknown" in stdout
    assert "note: spacing unknown (assumed 1 mm)" in stdout
    with Image.open(out) as png:
        assert png.text["medm3:notes"] == "orientation unknown; spacing unknown (assumed 1 mm)"
        assert "medm3:orientation" not in png.text
    code, stdout, err = run(["render", str(cxr_mono1_path), "-o", str(out)], capsys)
    assert code == 0, err
    assert "note: orientation unknown" in stdout and "spacing unknown" not in stdout
