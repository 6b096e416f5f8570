"""`m3 render`: success output, and one-line exit-2 errors that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.cli.helpers import assert_one_line_error as assert_input_error
from tests.cli.helpers import run


def test_render_ct_with_overlay(
    ct_path: Path,
    ct_labels_path: Path,
    ct_label_names_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_png = tmp_path / "sub" / "ct.png"
    code, out, err = run(
        [
            "render",
            str(ct_path),
            "-o",
            str(out_png),
            "--overlay",
            str(ct_labels_path),
            "--labels",
            str(ct_label_names_path),
            "--contours",
        ],
        capsys,
    )
    assert code == 0, err
    assert out.startswith(f"wrote {out_png}")
    assert "axial slice" in out and "soft_tissue (W400 L50)" in out and "labels shown" in out
    with Image.open(out_png) as png:
        assert png.format == "PNG" and png.height == 424 and png.width > 512
    assert [p.name for p in out_png.parent.iterdir()] == ["ct.png"]  # no temp file left


def test_render_coronal_slice_and_window(
    ct_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "cor.png"
    args = ["render", str(ct_path), "-o", str(out_png), "--plane", "coronal", "--slice", "50"]
    code, out, _ = run([*args, "--window", "1500,-600"], capsys)
    assert code == 0
    assert "coronal slice 50 of 0-100" in out and "custom (W1500 L-600)" in out
    assert out_png.is_file()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--window", "400"], "unknown window '400'; valid windows: auto"),
        (["--window", "hard"], "soft_tissue"),
        (["--slice", "30"], "valid slices are 0-29"),
        (["--plane", "oblique"], "valid planes: axial, coronal, sagittal"),
        (["--alpha", "2"], "alpha must be between 0 and 1"),
    ],
)
def test_bad_options_exit_2_without_output(
    ct_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    out_png = tmp_path / "x.png"
    code, _, err = run(["render", str(ct_path), "-o", str(out_png), *extra], capsys)
    assert_input_error(code, err, needle)
    assert list(tmp_path.iterdir()) == []


def test_mismatched_mask(
    ct_path: Path, mr_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "x.png"
    code, _, err = run(
        ["render", str(ct_path), "-o", str(out_png), "--overlay", str(mr_path)], capsys
    )
    assert_input_error(code, err, "mask grid does not match image")
    assert "(122, 101, 30)" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_image_and_bad_labels(
    ct_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "x.png"
    code, _, err = run(["render", str(tmp_path / "nope.nii.gz"), "-o", str(out_png)], capsys)
    assert_input_error(code, err, "nope.nii.gz")
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps(["liver"]))
    code, _, err = run(["render", str(ct_path), "-o", str(out_png), "--labels", str(bad)], capsys)
    assert_input_error(code, err, "label map must be a non-empty JSON object")
    code, _, err = run(["render", str(ct_path), "-o", str(tmp_path / "x.jpg")], capsys)
    assert_input_error(code, err, "output must be a .png file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json"]


def test_two_d_image_rejects_other_planes(
    cxr_png_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = tmp_path / "cxr.png"
    code, _, err = run(
        ["render", str(cxr_png_path), "-o", str(out_png), "--plane", "sagittal"], capsys
    )
    assert_input_error(code, err, "2D image")
    code, out, _ = run(["render", str(cxr_png_path), "-o", str(out_png)], capsys)
    assert code == 0 and "2D image, window full 8-bit range (W255 L128)" in out  # not "stored"
    with Image.open(out_png) as png, Image.open(cxr_png_path) as source:
        assert png.size == source.size  # 512-2048 px already: no resampling
