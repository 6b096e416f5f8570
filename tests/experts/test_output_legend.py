"""Saved overlays carry a legend with label ids; the VLM's copy stays as rendered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medm3.experts.base import ExpertResult, Overlay
from medm3.experts.output import save_result
from medm3.imaging.render import render_slice
from tests.doubles import volume


def _result(legend: bool) -> ExpertResult:
    image = volume(np.zeros((16, 16, 4), np.int16), spacing=(1.0, 1.0, 1.0))
    labels = np.zeros(image.array.shape, np.uint8)
    labels[2:6, 2:6, 1] = 1
    labels[8:12, 8:12, 1] = 26
    mask = image.with_array(labels)
    names = {1: "liver", 26: "hepatic tumor"}
    picture = render_slice(image, index=1, mask=mask, label_names=names, legend=legend)
    overlay = Overlay(name="overlay_axial_1", image=picture, plane="axial", slice_index=1)
    return ExpertResult(
        expert="vista3d",
        args="liver",
        text="t",
        overlays=[overlay],
        label_map=mask,
        label_names=names,
    )


def test_overlay_without_legend_is_saved_with_one(tmp_path: Path) -> None:
    result = _result(legend=False)
    shown = result.overlays[0].image
    files = save_result(result, tmp_path)
    saved = Image.open(files["overlay:overlay_axial_1"])
    assert saved.width > shown.width and saved.height >= shown.height
    assert np.array_equal(np.asarray(saved)[: shown.height, : shown.width], np.asarray(shown))
    assert result.overlays[0].image is shown  # what the VLM got is unchanged
    expected = render_slice(
        result.label_map.with_array(np.zeros((16, 16, 4), np.int16)),
        index=1,
        mask=result.label_map,
        label_names={1: "1: liver", 26: "26: hepatic tumor"},
        legend=True,
    )
    assert saved.size == expected.size  # the same legend panel render_slice draws


def test_overlay_with_legend_is_saved_as_is(tmp_path: Path) -> None:
    result = _result(legend=True)
    files = save_result(result, tmp_path)
    assert Image.open(files["overlay:overlay_axial_1"]).size == result.overlays[0].image.size


def test_probability_lines_show_probabilities_beside_yes_no() -> None:
    from medm3.experts.output import probability_lines

    result = ExpertResult(
        expert="cxr",
        args="",
        text="The resulting predictions are: Effusion: yes, Mass: no.",
        probabilities={"Mass": 0.123, "Effusion": 0.734, "Hernia": 0.5},
        findings={"Mass": False, "Effusion": True},
    )
    assert probability_lines(result) == [
        "Effusion: yes (p = 0.73)",
        "Hernia: (p = 0.50)",
        "Mass: no (p = 0.12)",
    ]
    assert probability_lines(_result(legend=False)) == []


def test_legend_uses_the_overlay_palette(tmp_path: Path) -> None:
    """An overlay drawn with its own colours (the released protocol's palette) keeps them."""
    image = volume(np.zeros((16, 16, 4), np.int16), spacing=(1.0, 1.0, 1.0))
    labels = np.zeros(image.array.shape, np.uint8)
    labels[2:6, 2:6, 1] = 1
    mask = image.with_array(labels)
    palette = {1: (0, 0, 255)}
    drawn = render_slice(image, index=1, mask=mask, legend=True, colors=palette)
    assert drawn.info["medm3"]["legend"][0]["color"] == [0, 0, 255]
    plain = render_slice(image, index=1, mask=mask, legend=False, colors=palette)
    result = ExpertResult(
        expert="vista3d",
        args="liver",
        text="t",
        overlays=[Overlay(name="o", image=plain, plane="axial", slice_index=1)],
        label_map=mask,
        label_names={1: "liver"},
    )
    saved = Image.open(save_result(result, tmp_path)["overlay:o"]).convert("RGB")
    legend_part = np.asarray(saved)[:, plain.width :]
    assert ((legend_part == (0, 0, 255)).all(axis=-1)).sum() > 20  # the blue swatch
