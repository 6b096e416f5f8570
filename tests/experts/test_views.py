"""The default overlay slice and the saved montage (medm3.experts.views)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medm3.experts.base import ExpertResult, Overlay
from medm3.experts.output import result_files, save_result
from medm3.experts.views import montage, montage_slices, overlay_slice
from medm3.imaging.render import render_slice
from tests.doubles import volume


def test_largest_cross_section_of_the_structures_asked_for() -> None:
    labels = np.zeros((10, 10, 20), np.uint8)
    labels[:, :, 19] = 1  # a big structure on the last (edge) slice
    labels[4:6, 4:6, 8:12] = 26  # a small tumour in the middle
    assert overlay_slice(labels, "axial") == 19  # largest area of anything
    assert overlay_slice(labels, "axial", ids=[26]) in (9, 10)  # the tumour's own slices
    assert overlay_slice(labels, "axial", ids=[99]) == 19  # asked for absent: what was found


def test_ties_go_to_the_middle_of_the_found_region_not_an_edge() -> None:
    labels = np.zeros((6, 6, 20), np.uint8)
    labels[1:4, 1:4, 5:20] = 3  # a prism touching the top edge: every slice ties
    assert overlay_slice(labels, "axial") == 12  # middle of 5..19, not 5 or 19
    assert overlay_slice(np.zeros((6, 6, 20), np.uint8), "axial") == 10  # nothing: middle
    assert overlay_slice(labels, "coronal") == 2  # y 1..3: the middle one


def test_tiebreak_groups_decide_equal_areas() -> None:
    labels = np.zeros((4, 4, 5), np.uint8)
    labels[:2, :2, 0] = 2
    labels[:2, :2, 4] = [[2, 1], [2, 2]]
    assert overlay_slice(labels, "axial") == 0  # equally far from the middle: the lower one
    assert overlay_slice(labels, "axial", tiebreak=[(1,)]) == 4


def test_montage_slices_spread_over_the_found_region() -> None:
    labels = np.zeros((4, 4, 40), np.uint8)
    labels[1:3, 1:3, 10:34] = 5
    picks = montage_slices(labels, "axial", panels=6)
    assert len(picks) == 6 and picks == sorted(picks)
    assert 10 <= picks[0] < picks[-1] <= 33
    assert picks[0] > 10 and picks[-1] < 33  # bin centres: not on the thin tips
    gaps = np.diff(picks)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced
    thin = np.zeros((4, 4, 40), np.uint8)
    thin[1, 1, 7:9] = 2
    assert montage_slices(thin, "axial", panels=6) == [7, 8]
    assert montage_slices(np.zeros((4, 4, 5), np.uint8), "axial") == []


def _ct_and_labels() -> tuple:
    image = volume(shape=(24, 24, 30), spacing=(1.0, 1.0, 2.0))
    labels = np.zeros(image.spatial_shape, np.uint8)
    labels[4:12, 4:12, 3:27] = 1
    labels[14:20, 14:20, 10:14] = 26
    return image, labels


def test_montage_panels_and_legend_with_ids_and_names() -> None:
    image, labels = _ct_and_labels()
    picture = montage(image, labels, label_names={1: "liver", 26: "hepatic tumor"}, panels=6)
    assert picture is not None
    meta = picture.info["medm3"]
    assert meta["kind"] == "montage" and len(meta["slices"]) == 6
    assert [e["name"] for e in meta["legend"]] == ["1: liver", "26: hepatic tumor"]
    panel = render_slice(image, index=meta["slices"][0], mask=labels, legend=False, annotate=True)
    assert picture.width > 3 * panel.width and picture.height == 2 * panel.height  # 3 x 2 + legend
    first = np.asarray(picture)[: panel.height, : panel.width]
    assert np.array_equal(first, np.asarray(panel))  # the first panel is that slice, annotated
    assert montage(image, np.zeros_like(labels)) is None


def _vista_like_result(image, labels) -> ExpertResult:
    mask = image.with_array(labels)
    names = {1: "liver", 26: "hepatic tumor"}
    index = overlay_slice(labels, "axial", ids=[26])
    picture = render_slice(image, index=index, mask=mask, legend=False)
    overlay = Overlay(
        name=f"overlay_axial_{index}", image=picture, plane="axial", slice_index=index
    )
    return ExpertResult(
        expert="vista3d",
        args="liver, hepatic tumor",
        text="t",
        overlays=[overlay],
        label_map=mask,
        label_names=names,
    )


def test_save_result_writes_a_montage_and_keeps_the_vlm_overlay(tmp_path: Path) -> None:
    image, labels = _ct_and_labels()
    result = _vista_like_result(image, labels)
    shown = result.overlays[0].image
    before = np.asarray(shown).copy()
    files = save_result(result, tmp_path, source_image=image, montage=True)
    assert Path(files["montage"]).name == "vista3d_montage.png"
    saved = Image.open(files["montage"])
    assert saved.size == montage(image, labels, label_names=result.label_names).size
    assert result.overlays[0].image is shown and np.array_equal(np.asarray(shown), before)
    assert "montage" in result_files(result, image, montage=True)
    assert "montage" not in result_files(result, None, montage=True)  # nothing to draw on
    assert "montage" not in save_result(result, tmp_path / "no_image", montage=True)
    assert "montage" not in save_result(result, tmp_path / "unasked", source_image=image)


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_montage_follows_the_overlay_plane(tmp_path: Path, plane: str) -> None:
    image, labels = _ct_and_labels()
    result = _vista_like_result(image, labels)
    result.overlays[0].plane = plane
    files = save_result(result, tmp_path, source_image=image, montage=True)
    meta_slices = montage_slices(labels, plane)
    assert len(meta_slices) == 6
    expected = montage(image, labels, label_names=result.label_names, plane=plane)
    assert Image.open(files["montage"]).size == expected.size


def test_cli_run_says_what_was_segmented_and_where_the_files_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], registered_fakes: None, result_cache
) -> None:
    from medm3.imaging.io import save_nifti
    from medm3.imaging.overlay import label_color_name
    from tests.cli.helpers import run

    array = np.full((8, 8, 6), -100, np.int16)
    array[2:6, 2:6, 1:5] = 300  # 64 bright voxels of 2 mm^3
    path = tmp_path / "ct.nii.gz"
    save_nifti(volume(array, spacing=(1.0, 1.0, 2.0)), path)
    code, out, err = run(
        ["experts", "run", "fakeseg", str(path), "--modality", "CT", "--arg", "bright"], capsys
    )
    assert code == 0, err
    lines = out.splitlines()
    assert "The results are" not in out
    assert lines[:2] == [
        "FAKESEG (bright): 1 structure found",
        f"  1: bright, {label_color_name(1)}, 0.1 mL",
    ]
    assert lines[-1] == "no files written: -o DIR saves the overlay, a montage and the label map"

    out_dir = tmp_path / "out"
    code, out, err = run(
        ["experts", "run", "fakeseg", str(path), "--modality", "CT", "-o", str(out_dir)], capsys
    )
    assert code == 0, err
    assert out.splitlines()[0] == "FAKESEG (everything): 2 structures found"
    wrote = [line for line in out.splitlines() if line.startswith("wrote ")]
    assert (
        f"wrote {out_dir / 'fakeseg_axial_0.png'} (overlay, axial slice 0, legend with ids)"
        in wrote
    )
    note = "montage of slices through what was found, legend with ids"
    montage_line = f"wrote {out_dir / 'fakeseg_montage.png'} ({note})"
    assert montage_line in wrote and (out_dir / "fakeseg_montage.png").is_file()
